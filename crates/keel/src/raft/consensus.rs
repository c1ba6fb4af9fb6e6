//! The node's handle on openraft: start/recover, propose (locally or forwarded to the
//! leader), linearize reads (read index, locally or from the leader), serve peer messages,
//! report metrics, shut down.

use super::forward_batch::ForwardBatcher;
use super::log_store::LogStore;
use super::network::{Message, Network, NetworkFactory, PeerMessage, PeerReply, Reply};
use super::read_batch::{self, ReadIndexBatcher};
use super::state_machine::{CurrentSnapshot, SnapshotData, StateMachine};
use super::{rt, term_of, LogId, MemberNode, Raft, TypeConfig};
use crate::error::NodeError;
use crate::limits::{FORWARD_RETRY_PAUSE, START_LOCAL_WAIT_MAX};
use crate::request::{Applied, Request};
use crate::response::MemberStatus;
use keel_storage::engine::Engine;
use keel_storage::snapshot_store::SnapshotStore;
use keel_storage::{DurableLog, MvccStore};
use keel_types::MemberId;
use openraft::async_runtime::watch::WatchReceiver;
use openraft::async_runtime::WatchSender as _;
use openraft::errors::{Fatal, InitializeError, RaftError};
use openraft::storage::RaftLogStorage;
use openraft::{ServerState, Snapshot};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// What the consensus engine needs from the builder.
#[derive(Clone, Debug)]
pub(crate) struct ConsensusConfig {
    pub(crate) id: MemberId,
    /// The members of the first configuration (used only on the very first start).
    pub(crate) initial_members: BTreeMap<MemberId, MemberNode>,
    /// This member joins a running cluster: never initialize, wait to be replicated to.
    pub(crate) join: bool,
    /// The cluster's id (recorded with the member records).
    pub(crate) cluster_id: keel_types::ClusterId,
    pub(crate) heartbeat_interval: Duration,
    pub(crate) election_timeout: Duration,
    /// How long start waits for the state machine to recover its pre-restart state.
    pub(crate) recovery_timeout: Duration,
    /// Applied entries between snapshots.
    pub(crate) snapshot_entries_between: u64,
    /// Entries kept in the log behind a snapshot.
    pub(crate) snapshot_catch_up_entries: u64,
    /// The lessor the state machine applies lease requests with.
    pub(crate) lease: Arc<crate::lease::LeaseState>,
    /// The node's metrics.
    pub(crate) metrics: Arc<crate::metrics::Metrics>,
    /// The auth state the state machine applies auth requests with.
    pub(crate) auth: Arc<crate::auth::AuthGate>,
}

/// A snapshot of the engine's metrics in keel terms.
#[derive(Clone, Debug)]
pub(crate) struct RaftStatus {
    pub(crate) leader: Option<MemberId>,
    pub(crate) term: u64,
    pub(crate) last_log_index: u64,
    pub(crate) applied_index: u64,
    pub(crate) committed_index: u64,
    pub(crate) snapshot_index: Option<u64>,
    pub(crate) purged_index: Option<u64>,
    pub(crate) is_learner: bool,
    pub(crate) members: Vec<MemberStatus>,
}

/// The running consensus engine of one node.
pub(crate) struct Consensus {
    /// Linearizable reads waiting for a read index, sharing one request (`read_batch`).
    reads: ReadIndexBatcher,
    /// Writes forwarded to the leader, sharing peer calls (`forward_batch`).
    forwards: Arc<ForwardBatcher>,
    pub(super) raft: Raft,
    pub(super) id: MemberId,
    network: Arc<dyn Network>,
    pub(super) store: Arc<MvccStore>,
    /// Where snapshot streams are kept, received ones included.
    snapshots: Arc<SnapshotStore>,
    /// The state machine's current snapshot: a transfer of it is not written again, and its
    /// stream is never removed by the receiver.
    current_snapshot: CurrentSnapshot,
    /// The id of the snapshot transfer being received whose last chunk has not arrived:
    /// its chunks are removed when another transfer starts (it broke off).
    partial_transfer: parking_lot::Mutex<Option<u64>>,
    pub(super) rules: keel_membership::ReconfigRules,
    pub(super) cluster_id: keel_types::ClusterId,
    /// A member whose heartbeat ack is older than this is unreachable for the rules.
    pub(super) reachable_window: Duration,
    /// Serializes membership changes on this member.
    pub(super) reconfig_lock: tokio::sync::Mutex<()>,
    /// How long a change forwarded by another member may take here.
    pub(super) request_timeout: Duration,
    /// Set when shutdown begins: calls in flight end with `Stopped` at once (see
    /// [`Consensus::bounded`]) instead of holding the storage until their deadline.
    /// A receiver is kept here so that the flag is stored even while no call waits on it.
    stopping: (rt::WatchSender<bool>, rt::WatchReceiver<bool>),
}

pub(super) fn fatal(e: &Fatal<TypeConfig>) -> NodeError {
    match e {
        Fatal::Stopped => NodeError::Stopped,
        other => NodeError::Raft {
            detail: other.to_string(),
        },
    }
}

pub(super) fn raft_error<E: std::error::Error>(e: &RaftError<TypeConfig, E>) -> NodeError {
    match e.fatal() {
        Some(f) => fatal(f),
        None => NodeError::Raft {
            detail: e.to_string(),
        },
    }
}

/// The log meta recording that the state machine holds state the log does not (a restored
/// snapshot, a forced new cluster): `[1]` until a snapshot covers it, then `[0]`.
pub(crate) const META_ADOPTED_STATE: &str = "adopted_state";

/// Whether the state machine holds state the log does not explain.
fn adopted_state(log: &DurableLog) -> Result<bool, NodeError> {
    Ok(log.meta(META_ADOPTED_STATE)?.is_some_and(|v| v == [1]))
}

/// Wait until the engine's metrics satisfy `done`; `false` once the engine stopped.
async fn metrics_reach(
    raft: &Raft,
    done: impl Fn(&openraft::RaftMetrics<TypeConfig>) -> bool,
) -> bool {
    let mut rx = raft.metrics();
    loop {
        if done(&rx.borrow_watched()) {
            return true;
        }
        if rx.changed().await.is_err() {
            return false;
        }
    }
}

/// openraft's configuration from keel's timings and snapshot policy.
fn raft_config(config: &ConsensusConfig) -> Result<Arc<openraft::Config>, NodeError> {
    let raft_config = openraft::Config {
        cluster_name: "keel".into(),
        heartbeat_interval: millis(config.heartbeat_interval),
        election_timeout_min: millis(config.election_timeout),
        election_timeout_max: millis(config.election_timeout) * 2,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(config.snapshot_entries_between),
        max_in_snapshot_log_to_keep: config.snapshot_catch_up_entries,
        // A restarted leader stands for election like any member (standard Raft). openraft's
        // default lets it resume leadership at once, which its docs call unsafe when the state
        // machine applies without flushing and the committed index is not synced — both true
        // here (apply is buffered, the log is the durable record). keel-sim's battery found
        // the consequence: a leader killed and restarted quickly served a linearizable read
        // from a state that missed an acknowledged write (seed 22 of `cluster_sim`).
        enable_leader_restore: Some(false),
        // Pre-vote (etcd's `--pre-vote`, on by default since etcd 3.5): a member campaigns only
        // after a quorum says it could win, so one that cannot (a restarted member with an
        // empty or stale log, one cut off by a partition) does not raise the term and depose a
        // healthy leader.
        enable_pre_vote: Some(true),
        ..Default::default()
    }
    .validate()
    .map_err(|e| NodeError::Config {
        detail: e.to_string(),
    })?;
    Ok(Arc::new(raft_config))
}

impl Consensus {
    /// Open the log on `engine`, start openraft with the state machine on `store`, and on the
    /// very first start initialize the configured members.
    pub(crate) async fn start(
        config: ConsensusConfig,
        engine: Arc<dyn Engine>,
        store: Arc<MvccStore>,
        log: Arc<DurableLog>,
        network: Arc<dyn Network>,
        on_install: Arc<dyn Fn() + Send + Sync>,
    ) -> Result<Self, NodeError> {
        let raft_config = raft_config(&config)?;
        // A restart forgets the last snapshot (openraft builds a new one when it needs one),
        // so the streams of the previous run go.
        let snapshots = SnapshotStore::open(Arc::clone(&engine))
            .and_then(|s| s.clear().map(|()| Arc::new(s)))
            .map_err(NodeError::from)?;
        let adopted = adopted_state(&log)?.then(|| Arc::clone(&log));
        // The committed log id persisted before a restart: start returns once the state
        // machine has applied at least that far, so no read sees a reverted state.
        let mut log_store =
            LogStore::new(log, engine, Arc::clone(&config.metrics)).map_err(|e| {
                NodeError::Raft {
                    detail: format!("start the log syncer: {e}"),
                }
            })?;
        let committed = log_store
            .read_committed()
            .await
            .map_err(|e| NodeError::Raft {
                detail: format!("read committed log id: {e}"),
            })?;
        let factory = NetworkFactory {
            network: Arc::clone(&network),
        };
        let state_machine = StateMachine::new(
            Arc::clone(&store),
            config.cluster_id,
            on_install,
            Arc::clone(&config.lease),
            Arc::clone(&config.metrics),
            Arc::clone(&config.auth),
            Arc::clone(&snapshots),
        );
        let current_snapshot = state_machine.current_handle();
        let raft = Raft::new(
            config.id.get(),
            raft_config,
            factory,
            log_store,
            state_machine,
        )
        .await
        .map_err(|e| fatal(&e))?;
        let reads = ReadIndexBatcher::start(raft.clone(), Arc::clone(&network), &config);
        let this = Consensus {
            reads,
            forwards: ForwardBatcher::new(Arc::clone(&network), config.recovery_timeout),
            raft,
            id: config.id,
            network,
            store,
            snapshots,
            current_snapshot,
            partial_transfer: parking_lot::Mutex::new(None),
            rules: keel_membership::ReconfigRules::default(),
            cluster_id: config.cluster_id,
            reachable_window: config.election_timeout,
            reconfig_lock: tokio::sync::Mutex::new(()),
            request_timeout: config.recovery_timeout,
            stopping: rt::watch(false),
        };
        this.spawn_leader_watch(Arc::clone(&config.metrics));
        if let Some(log) = adopted {
            this.spawn_adopted_state_snapshot(log);
        }
        match this.recover(&config, committed).await {
            Ok(()) => Ok(this),
            Err(e) => {
                // The engine's tasks hold the storage: stop them before reporting.
                this.shutdown().await;
                Err(e)
            }
        }
    }

    /// Initialize a fresh member, then wait until the engine has re-applied the `committed`
    /// entries. The waits are local (no other member is needed: `committed` is saved after
    /// the entries it covers, on the same engine), so they are bounded by
    /// [`START_LOCAL_WAIT_MAX`], not the request timeout.
    ///
    /// A restarted member does not wait for its configuration: its durable state may hold a
    /// vote and no configuration at all (it crashed after voting, before any entry of its
    /// own was durable, e.g. when the leader's first append had just replaced its
    /// initialization entry). Only the leader can send it the configuration, and a member
    /// that is still starting is not reachable yet: waiting here never ended.
    async fn recover(
        &self,
        config: &ConsensusConfig,
        committed: Option<LogId>,
    ) -> Result<(), NodeError> {
        if !config.join && self.initialize_once(config).await? {
            // Initialized now: the configuration is in the log (and metrics) of this member.
            self.wait_until(START_LOCAL_WAIT_MAX, |s| !s.members.is_empty())
                .await
                .map_err(|e| self.start_failed("no member configuration loaded", &e))?;
        }
        self.raft
            .wait(Some(START_LOCAL_WAIT_MAX))
            .applied_index_at_least(committed.map(|c| c.index), "recover committed state")
            .await
            .map_err(|e| self.start_failed("committed entries not re-applied", &e))?;
        Ok(())
    }

    /// The error of a start whose local recovery step `what` failed with `error`, with the
    /// engine's state, to tell a stuck engine from a slow one.
    fn start_failed(&self, what: &str, error: &dyn std::fmt::Display) -> NodeError {
        NodeError::Raft {
            detail: format!("start: {what}: {error}; engine state: {:?}", self.status()),
        }
    }

    /// Initialize the first configuration on a fresh member; `true` if this call did.
    async fn initialize_once(&self, config: &ConsensusConfig) -> Result<bool, NodeError> {
        let initialized = self.raft.is_initialized().await.map_err(|e| fatal(&e))?;
        if initialized {
            return Ok(false);
        }
        let members: BTreeMap<u64, MemberNode> = config
            .initial_members
            .iter()
            .map(|(id, node)| (id.get(), node.clone()))
            .collect();
        match self.raft.initialize(members).await {
            Ok(()) => Ok(true),
            // Another member's vote or log reached us first: the cluster is forming.
            Err(RaftError::APIError(InitializeError::NotAllowed(_))) => Ok(false),
            Err(e) => Err(raft_error(&e)),
        }
    }

    /// Count leader changes and keep `has_leader` current from the engine's metrics; stops
    /// when consensus shuts down.
    pub(crate) fn spawn_leader_watch(&self, metrics: Arc<crate::metrics::Metrics>) {
        let mut rx = self.raft.metrics();
        rt::spawn(async move {
            let mut seen: Option<u64> = None;
            loop {
                let leader = rx.borrow_watched().current_leader;
                metrics.has_leader.set(i64::from(leader.is_some()));
                if leader.is_some() && leader != seen {
                    metrics.leader_changes.inc();
                    let term = rx.borrow_watched().current_term;
                    tracing::info!(leader = %keel_types::MemberId::new(leader.unwrap_or(0)), term, "leader changed");
                    seen = leader;
                } else if leader.is_none() && seen.is_some() {
                    tracing::warn!("no leader");
                    seen = None;
                }
                if rx.changed().await.is_err() {
                    return;
                }
            }
        });
    }

    /// After a restore or a forced new cluster the state machine holds a keyspace the log does
    /// not: snapshot it and purge the log up to the snapshot, so that a member added later
    /// receives the state as a snapshot instead of replaying a log that lacks it. Runs in the
    /// background (a restored member may wait for its peers before it applies anything); the
    /// marker is cleared once done, and the work is redone after a crash before that.
    fn spawn_adopted_state_snapshot(&self, log: Arc<DurableLog>) {
        let raft = self.raft.clone();
        rt::spawn(async move {
            if !metrics_reach(&raft, |m| m.last_applied.is_some()).await {
                return;
            }
            let applied = (raft.metrics().borrow_watched().last_applied).map_or(0, |l| l.index);
            if raft.trigger().snapshot().await.is_err()
                || !metrics_reach(&raft, |m| m.snapshot.is_some_and(|s| s.index >= applied)).await
                || raft.trigger().purge_log(applied).await.is_err()
                || !metrics_reach(&raft, |m| m.purged.is_some_and(|p| p.index >= applied)).await
            {
                return;
            }
            match log.save_meta(
                META_ADOPTED_STATE,
                &[0],
                keel_storage::engine::Durability::Synced,
            ) {
                Ok(()) => tracing::info!(index = applied, "adopted state snapshotted, log purged"),
                Err(e) => tracing::warn!(error = %e, "adopted state: clearing the marker failed"),
            }
        });
    }

    /// Ask openraft to hand leadership to `to` (leader only; completes asynchronously).
    pub(crate) async fn transfer_leader(&self, to: MemberId) -> Result<(), NodeError> {
        self.raft
            .trigger()
            .transfer_leader(to.get())
            .await
            .map_err(|e| fatal(&e))
    }

    /// Refuse a new proposal while more than `max` committed entries wait to be applied here.
    ///
    /// # Errors
    /// [`NodeError::TooManyRequests`].
    pub(crate) fn check_backlog(&self, max: u64) -> Result<(), NodeError> {
        let metrics = self.raft.metrics();
        let m = metrics.borrow_watched();
        let committed = m.local_committed.map_or(0, |l| l.index);
        let applied = m.last_applied.map_or(0, |l| l.index);
        let backlog_entries = committed.saturating_sub(applied);
        if backlog_entries > max {
            return Err(NodeError::TooManyRequests { backlog_entries });
        }
        Ok(())
    }

    /// True when this member is a learner in its effective membership (a member that has not
    /// received any configuration yet is not counted as one).
    pub(crate) fn is_learner(&self) -> bool {
        let metrics = self.raft.metrics();
        let m = metrics.borrow_watched();
        let me = self.id.get();
        let is_learner = m
            .membership_config
            .membership()
            .learner_ids()
            .any(|id| id == me);
        is_learner
    }

    /// The network to the other members.
    pub(super) fn network(&self) -> &dyn Network {
        &*self.network
    }

    /// Propose on this member; `NotLeader` when it is not the leader (nothing was appended:
    /// the caller may send it elsewhere). Once appended, the outcome of a write that does not
    /// complete here is unknown — another member may commit it — so that is
    /// [`NodeError::Timeout`] ("may still be applied"), never `NotLeader`: resending it would
    /// apply it twice (keel-sim seed 2 saw a compare-and-swap applied twice that way).
    async fn write_local(&self, request: Request) -> Result<Reply, NodeError> {
        match self.raft.client_write(request).await {
            Ok(resp) => Ok(Reply::Applied {
                applied: resp.data,
                term: term_of(&resp.log_id),
            }),
            // Truncated by a new leader or purged under a snapshot after it was appended.
            Err(RaftError::APIError(openraft::errors::ClientWriteError::LogEntryDiscarded(_))) => {
                Err(NodeError::Timeout)
            }
            // The engine stopped with the write in flight.
            Err(RaftError::Fatal(Fatal::Stopped)) => Err(NodeError::Timeout),
            Err(e) => match e.forward_to_leader() {
                Some(f) => Ok(Reply::NotLeader {
                    leader: f.leader_id,
                }),
                None => Err(raft_error(&e)),
            },
        }
    }

    /// Ask the leader to apply `request`, starting with the leader this member knows of (this
    /// member itself when it knows none or itself) and following "not leader" hints, until a
    /// reply other than `NotLeader` arrives; the caller bounds the whole call with a deadline.
    /// The write is resent only when the network reports it was not delivered
    /// ([`NodeError::Unreachable`]): a write whose exchange failed after it left (reply lost,
    /// connection reset, the leader stopping while serving it) may have been applied, and a
    /// second copy would apply it twice (see [`resendable`]).
    ///
    /// Writes forwarded from this member to one leader share peer calls (`forward_batch`);
    /// `len_bytes` is the request's encoded size.
    async fn ask_leader(&self, request: &Request, len_bytes: usize) -> Result<Reply, NodeError> {
        let mut target = first_target(&self.raft, self.id);
        loop {
            let reply = match target {
                None => self.write_local(request.clone()).await?,
                Some(leader) => {
                    let forward = self.forwards.forward(leader, request.clone(), len_bytes);
                    match forward.await {
                        Ok(reply) => reply,
                        Err(e) => {
                            resendable(leader, e)?;
                            Reply::NotLeader { leader: None }
                        }
                    }
                }
            };
            match reply {
                Reply::NotLeader { leader } => target = follow_hint(leader, target, self.id).await,
                other => return Ok(other),
            }
        }
    }

    /// Replicate `request` (`len_bytes` encoded) through the leader (forwarding if needed)
    /// and return its result and the term of the entry, within `deadline`.
    pub(crate) async fn propose(
        &self,
        request: Request,
        len_bytes: usize,
        deadline: Duration,
    ) -> Result<(Applied, u64), NodeError> {
        let ask = self.ask_leader(&request, len_bytes);
        match self.bounded(deadline, ask).await? {
            Reply::Applied { applied, term } => Ok((applied, term)),
            other => Err(NodeError::Network {
                detail: format!("unexpected reply to a write: {other:?}"),
            }),
        }
    }

    /// Run `work` until it ends, `deadline` passes ([`NodeError::Timeout`]) or this member
    /// starts shutting down ([`NodeError::Stopped`]): a call in flight must not keep the
    /// node's storage open after shutdown, which waits for the last user of it.
    pub(super) async fn bounded<T>(
        &self,
        deadline: Duration,
        work: impl std::future::Future<Output = Result<T, NodeError>>,
    ) -> Result<T, NodeError> {
        let mut stopping = self.stopping.1.clone();
        tokio::select! {
            biased;
            done = work => done,
            () = rt::sleep(deadline) => Err(NodeError::Timeout),
            _ = stopping.wait_until(|stopping| *stopping) => Err(NodeError::Stopped),
        }
    }

    /// Wait until this member's store reflects every write acknowledged before the call: get
    /// the read index from the leader, then wait for local apply to reach it.
    pub(crate) async fn linearize(&self, deadline: Duration) -> Result<(), NodeError> {
        let work = async {
            // shared with the reads waiting with this one (see `read_batch`)
            let index = self.reads.read_index().await?;
            self.raft
                .wait(None)
                .applied_index_at_least(Some(index), "linearizable read")
                .await
                .map_err(|_| NodeError::Stopped)?;
            Ok(())
        };
        self.bounded(deadline, work).await
    }

    /// Serve one message from another member.
    pub(crate) async fn handle(&self, message: PeerMessage) -> Result<PeerReply, NodeError> {
        let reply = match message.0 {
            Message::Append(rpc) => Reply::Append(
                self.raft
                    .append_entries(rpc)
                    .await
                    .map_err(|e| raft_error(&e))?,
            ),
            Message::Vote(rpc) => {
                Reply::Vote(self.raft.vote(rpc).await.map_err(|e| raft_error(&e))?)
            }
            Message::PreVote(rpc) => {
                Reply::Vote(self.raft.pre_vote(rpc).await.map_err(|e| raft_error(&e))?)
            }
            Message::SnapshotChunk {
                vote,
                meta,
                index,
                count,
                chunk,
            } => {
                self.receive_snapshot_chunk(vote, meta, index, count, &chunk)
                    .await?
            }
            // A forwarded request is served here or refused: never forwarded again.
            Message::Forward(request) => self.write_local(request).await?,
            Message::ForwardBatch(requests) => self.write_many(requests).await?,
            Message::ReadIndex => read_batch::local_read_index(&self.raft).await?,
            Message::TransferLeader(req) => Reply::TransferLeader(
                self.raft
                    .handle_transfer_leader(req)
                    .await
                    .map_err(|e| fatal(&e))?,
            ),
            Message::Reconfigure(change) => self.serve_change(change, self.request_timeout).await,
            Message::Members => {
                let cluster = self.cluster()?;
                Reply::Members {
                    cluster_id: cluster.id(),
                    members: super::membership::member_list(&cluster),
                }
            }
        };
        Ok(PeerReply(reply))
    }

    /// Keep chunk `index` of a snapshot being sent here; with the last one (`count` in all),
    /// hand the whole snapshot to openraft, which installs it if `vote` is still current.
    /// The chunks go to the snapshot store as they arrive: a snapshot is never whole in
    /// memory. The stream id is the snapshot's last index, so chunks of one id from two
    /// senders (a deposed leader and its successor) are the same chunks, and a transfer of
    /// this member's current snapshot is not written again (its stream is served instead).
    ///
    /// Nothing received outlives its use: the chunks of a transfer that broke off go when
    /// the next transfer starts, a refused stream goes at once, and so does one openraft did
    /// not install (a stale vote). Only the current snapshot's stream is never removed here.
    async fn receive_snapshot_chunk(
        &self,
        vote: super::Vote,
        meta: super::SnapshotMeta,
        index: u64,
        count: u64,
        chunk: &[u8],
    ) -> Result<Reply, NodeError> {
        let id = SnapshotData::id_of(meta.last_log_id.as_ref());
        let last = index.saturating_add(1) >= count;
        let current = self.current_snapshot.stream().map(|s| s.id);
        let broken_off = {
            let mut partial = self.partial_transfer.lock();
            let previous = if last {
                partial.take_if(|p| *p == id);
                None
            } else if index == 0 {
                partial.replace(id)
            } else {
                None
            };
            previous.filter(|p| *p != id && Some(*p) != current)
        };
        if let Some(previous) = broken_off {
            tracing::info!(previous, id, "snapshot transfer broke off: its chunks go");
            self.snapshots.remove(previous)?;
        }
        if Some(id) != current {
            self.snapshots.put_chunk(id, index, chunk)?;
        }
        if !last {
            return Ok(Reply::ChunkStored);
        }
        let stream = match self.sealed_transfer(id, count, current) {
            Ok(stream) => stream,
            Err(e) => {
                if Some(id) != current {
                    self.snapshots.remove(id)?;
                }
                return Err(e);
            }
        };
        let snapshot = Snapshot {
            meta,
            snapshot: SnapshotData {
                store: Arc::clone(&self.snapshots),
                stream,
            },
        };
        let resp = self
            .raft
            .install_full_snapshot(vote, snapshot)
            .await
            .map_err(|e| fatal(&e))?;
        // Not installed (a stale vote, or this member is already past it): the stream goes,
        // unless it is (still or now) the current snapshot's.
        if self.current_snapshot.stream().map(|s| s.id) != Some(id) {
            self.snapshots.remove(id)?;
        }
        Ok(Reply::Snapshot(resp))
    }

    /// The stream of transfer `id` once its last chunk arrived: sealed and verified, or the
    /// current snapshot's own stream when the transfer is of it.
    fn sealed_transfer(
        &self,
        id: u64,
        count: u64,
        current: Option<u64>,
    ) -> Result<keel_storage::snapshot_store::StoredStream, NodeError> {
        let stream = if Some(id) == current {
            // Not fatal: the sender starts over, as for any refused stream.
            self.snapshots.sealed(id)?.ok_or_else(|| {
                NodeError::from(keel_storage::StorageError::InvalidSnapshot {
                    detail: format!("the current snapshot {id} was replaced during its transfer"),
                })
            })?
        } else {
            self.snapshots.seal(id, count)?
        };
        // A damaged or incomplete stream is refused here, and the sender starts over: handed
        // to openraft, it would fail the install, a storage error that stops this member.
        keel_storage::snapshot::verify(self.snapshots.chunks(stream))?;
        Ok(stream)
    }

    /// The engine's current metrics.
    /// The current term, without building a full [`RaftStatus`] (hot paths: every read and
    /// response header).
    pub(crate) fn term(&self) -> u64 {
        self.raft.metrics().borrow_watched().current_term
    }

    pub(crate) fn status(&self) -> RaftStatus {
        let metrics = self.raft.metrics();
        let m = metrics.borrow_watched();
        let membership = m.membership_config.membership();
        let learners: Vec<u64> = membership.learner_ids().collect();
        let members = membership
            .nodes()
            .map(|(id, node)| MemberStatus {
                id: MemberId::new(*id),
                name: node.name.clone(),
                peer_urls: node.peer_urls.clone(),
                client_urls: node.client_urls.clone(),
                is_learner: learners.contains(id),
            })
            .collect();
        RaftStatus {
            leader: m.current_leader.map(MemberId::new),
            term: m.current_term,
            last_log_index: m.last_log_index.unwrap_or(0),
            applied_index: m.last_applied.map_or(0, |l| l.index),
            committed_index: m.local_committed.map_or(0, |l| l.index),
            snapshot_index: m.snapshot.map(|l| l.index),
            purged_index: m.purged.map(|l| l.index),
            is_learner: m.state == ServerState::Learner,
            members,
        }
    }

    /// Wait until `condition` holds on this member's status, up to `deadline`.
    pub(crate) async fn wait_until(
        &self,
        deadline: Duration,
        condition: impl Fn(&RaftStatus) -> bool,
    ) -> Result<RaftStatus, NodeError> {
        let mut rx = self.raft.metrics();
        let work = async {
            loop {
                let status = self.status();
                if condition(&status) {
                    return Ok(status);
                }
                if rx.changed().await.is_err() {
                    return Err(NodeError::Stopped);
                }
            }
        };
        self.bounded(deadline, work).await
    }

    /// Stop the engine and wait for its tasks (which own the log store and state machine).
    pub(crate) async fn shutdown(&self) {
        let _ = self.stopping.0.send(true);
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(error = %e, "raft task ended abnormally during shutdown");
        }
    }
}

/// The member to ask first: the leader `me` last heard of when that is another member (it
/// may have lost leadership since), else `None`, `me`'s own engine. Asking the own engine
/// of a member that knows another leader would only return that hint, one round trip
/// through the engine later.
pub(super) fn first_target(raft: &Raft, me: MemberId) -> Option<MemberId> {
    let leader = raft.metrics().borrow_watched().current_leader;
    leader.map(MemberId::new).filter(|l| *l != me)
}

/// The member to ask next after a "not leader" reply naming `hint` (while asking `target`;
/// `None` = this member's own engine): the named leader if it is another member, else this
/// member's engine again. Pauses first when that is no progress (no hint, or the same member
/// again), so a cluster without a leader is not asked in a busy loop.
pub(super) async fn follow_hint(
    hint: Option<u64>,
    target: Option<MemberId>,
    me: MemberId,
) -> Option<MemberId> {
    let next = hint.map(MemberId::new).filter(|l| *l != me);
    if next.is_none() || next == target {
        rt::sleep(FORWARD_RETRY_PAUSE).await;
    }
    next
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// Whether a write or member change whose send to `leader` failed with `error` may be sent
/// again (to the next leader): only when it was certainly not delivered
/// ([`NodeError::Unreachable`]). Delivered with an unknown outcome (the exchange failed, or
/// the leader stopped while serving it), it may have been applied, and a second copy could
/// apply it twice: that is a [`NodeError::Network`] error for the caller, as is anything else
/// the send returned.
pub(super) fn resendable(leader: MemberId, error: NodeError) -> Result<(), NodeError> {
    let unknown = |what: &str| NodeError::Network {
        detail: format!(
            "the request reached member {leader} but {what}; it may or may not have been applied"
        ),
    };
    match error {
        NodeError::Unreachable { .. } => Ok(()),
        NodeError::Stopped => Err(unknown("it stopped")),
        NodeError::Network { detail } => Err(unknown(&detail)),
        other => Err(other),
    }
}
