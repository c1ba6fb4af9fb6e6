//! openraft's state machine on keel-storage's [`MvccStore`].
//!
//! Invariants:
//! 1. Applied entries commit in [`WriteTxn`]s: the requests' changes and the applied-state
//!    marker (applied log id + last membership) commit in one engine batch, so the store and
//!    the marker never disagree, whatever crashes. A run of consecutive KV entries that
//!    [`Request::joins_apply_group`] (as many as openraft has ready, up to
//!    [`APPLY_GROUP_ENTRIES_MAX`] entries and [`APPLY_GROUP_BYTES_MAX`]) shares one
//!    transaction, each entry in its own revision ([`WriteTxn::seal_revision`]), with the
//!    marker of the last: one engine write for the run, and their callers are answered
//!    only after it. Every other entry is one transaction of its own.
//! 2. Apply commits [`Durability::Buffered`]: the entry is already synced in the log (same
//!    engine, same WAL). After a crash the marker tells openraft where to resume, and it
//!    replays the log from there. The node's engine keeps buffered writes in the process
//!    until the next fsync, so a crash of the process may take back applied entries too;
//!    they apply again from the log (the committed log id reaches the OS when it is saved:
//!    `super::log_store`, invariant 3).
//! 3. A refused request (compacted revision, key too large, ...) changes nothing but the
//!    marker, identically on every member, and answers with the refusal.
//! 4. A snapshot's point-in-time view is taken while the store's writer is held (no apply
//!    in between), so its meta (read from the marker) matches its data exactly; the writer
//!    is released once the view is taken, and the engine is synced before the snapshot is
//!    reported built.
//! 5. A storage failure during apply is an I/O error for openraft, which stops the node:
//!    nothing is half-applied (the batch is atomic) and nothing is acknowledged.
//! 6. A membership entry rewrites the member records (keel-membership's `MEMBERS_CF`, derived
//!    from the entry: see `super::membership`) in the same batch as its marker, and snapshots
//!    carry that column family, so the records always match the applied membership.
//! 7. Lease requests, and the attachments of keys written by KV requests, apply through the
//!    lessor (`crate::lease::LeaseState`) inside the entry's transaction; its changes are
//!    staged into the same batch, snapshots carry keel-lease's `LEASE_CF`, and the lessor is
//!    reloaded from it after a snapshot install.
//! 8. Auth requests apply through the node's `AuthGate` (users, roles, permissions; staged
//!    into the same batch; snapshots carry keel-auth's `AUTH_CF`; reloaded after an install).
//!    A `Request::Checked` is decided against the auth state at its own log position, so
//!    every member admits or denies it alike; a denial is a refusal (invariant 3).
//! 9. Snapshots are never whole in memory: a built snapshot is exported chunk by chunk into
//!    keel-storage's snapshot store (same engine, its own column family), sent one chunk per
//!    message, kept chunk by chunk by the receiver, and installed by reading one chunk at a
//!    time. The store keeps the current snapshot's stream; the previous one goes when a new
//!    one is built or installed, and a restart clears the store. What the receiver keeps of
//!    other transfers is its own business (`Consensus::receive_snapshot_chunk`).

use super::membership::{derive_cluster, load_cluster};
use super::{io_err, Entry, LogId, MemberNode, SnapshotMeta, StoredMembership, TypeConfig};
use crate::auth::AuthGate;
use crate::codec::{decode_io, encode_io};
use crate::lease::{LeaseApplied, LeaseState};
use crate::limits::{
    APPLY_GROUP_BYTES_MAX, APPLY_GROUP_ENTRIES_MAX, COMPACTION_STEP_KEYS_MAX,
    SNAPSHOT_CHUNK_BYTES_MAX,
};
use crate::request::{Applied, Rejection, Request};
use futures::{FutureExt, Stream, StreamExt};
use keel_membership::schema::MEMBERS_CF;
use keel_membership::{persist, Cluster};
use keel_storage::engine::Durability;
use keel_storage::mvcc::{Committed, WriteTxn};
use keel_storage::snapshot_store::{SnapshotStore, StoredStream};
use keel_storage::{DurableLog, MvccStore, StorageError};
use keel_types::ClusterId;
use openraft::storage::{EntryResponder, RaftSnapshotBuilder, RaftStateMachine, Snapshot};
use openraft::EntryPayload;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use std::io;
use std::sync::Arc;

/// The marker committed with every applied entry.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct AppliedState {
    last_applied: Option<LogId>,
    membership: StoredMembership,
}

/// A snapshot's data: the checksummed chunks of keel-storage's export, kept in the engine's
/// snapshot store (never whole in memory) and read one chunk at a time to send or install.
/// The stream's id is the index of the last entry the snapshot covers: every member's
/// snapshot at one index holds the same state, so one id always names the same content.
#[derive(Clone, Debug)]
pub(crate) struct SnapshotData {
    pub(crate) store: Arc<SnapshotStore>,
    pub(crate) stream: StoredStream,
}

impl SnapshotData {
    /// The stream id of a snapshot whose last entry is `last`.
    pub(crate) fn id_of(last: Option<&LogId>) -> u64 {
        last.map_or(0, |l| l.index)
    }

    /// The chunks, read one at a time.
    pub(crate) fn chunks(&self) -> impl Iterator<Item = Result<Vec<u8>, StorageError>> + '_ {
        self.store.chunks(self.stream)
    }
}

pub(super) type SnapshotOf =
    Snapshot<openraft::alias::CommittedLeaderIdOf<TypeConfig>, u64, MemberNode, SnapshotData>;

/// The current snapshot, shared by the state machine (which replaces it) and the snapshot
/// receiver (which must not write over or remove its stream).
#[derive(Clone, Default)]
pub(super) struct CurrentSnapshot(Arc<Mutex<Option<SnapshotOf>>>);

impl CurrentSnapshot {
    /// The current snapshot's stream, if there is one.
    pub(super) fn stream(&self) -> Option<StoredStream> {
        self.0.lock().as_ref().map(|c| c.snapshot.stream)
    }
}

/// The state machine; clones share the store (the clone is the snapshot builder).
#[derive(Clone)]
pub(crate) struct StateMachine {
    store: Arc<MvccStore>,
    /// The cluster id recorded with the member records.
    cluster_id: ClusterId,
    /// The last snapshot built or installed (its data in `snapshots`; a restart forgets it
    /// and openraft builds a new one).
    current: CurrentSnapshot,
    /// Where snapshot streams are kept.
    snapshots: Arc<SnapshotStore>,
    /// Called after a snapshot replaced the store (wakes the node's watch streams).
    on_install: Arc<dyn Fn() + Send + Sync>,
    /// The lessor: lease requests and key attachments apply through it (invariant 7).
    lease: Arc<LeaseState>,
    /// Apply counts and commit latencies.
    metrics: Arc<crate::metrics::Metrics>,
    /// Users, roles, tokens: auth requests apply through it, checked requests are decided
    /// by it (invariant 8).
    auth: Arc<AuthGate>,
}

impl std::fmt::Debug for StateMachine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateMachine").finish_non_exhaustive()
    }
}

/// Entries read from the log at a time when applying it offline (see
/// `StateMachine::apply_committed_offline`).
const OFFLINE_APPLY_RUN: u64 = 1024;

/// The column families a snapshot carries: all replicated state (the MVCC keyspace, the
/// member records and the lease records), never the log.
pub(crate) const STATE_COLUMN_FAMILIES: [&str; 6] = {
    let kv = MvccStore::COLUMN_FAMILIES;
    [
        kv[0],
        kv[1],
        kv[2],
        MEMBERS_CF,
        keel_lease::LEASE_CF,
        keel_auth::AUTH_CF,
    ]
};

impl StateMachine {
    pub(crate) fn new(
        store: Arc<MvccStore>,
        cluster_id: ClusterId,
        on_install: Arc<dyn Fn() + Send + Sync>,
        lease: Arc<LeaseState>,
        metrics: Arc<crate::metrics::Metrics>,
        auth: Arc<AuthGate>,
        snapshots: Arc<SnapshotStore>,
    ) -> Self {
        StateMachine {
            store,
            cluster_id,
            current: CurrentSnapshot::default(),
            snapshots,
            on_install,
            lease,
            metrics,
            auth,
        }
    }

    /// Make `snapshot` the current one unless the current one is newer, and remove the
    /// stream of the one that is not kept. A build runs beside the state machine and lets
    /// entries apply once its view is taken, so an install can finish while an older build
    /// is still being stored: that build must not become current afterwards. Only the
    /// loser's stream goes: a stream being received is another id (or the same content), so
    /// it is never pulled from under an install. A transfer of a removed snapshot fails at
    /// its next chunk, and openraft sends the current one instead.
    pub(super) fn replace_current(&self, snapshot: SnapshotOf) -> io::Result<()> {
        let mut current = self.current.0.lock();
        let newer = current
            .as_ref()
            .is_none_or(|c| snapshot.meta.last_log_id >= c.meta.last_log_id);
        let loser = if newer {
            current.replace(snapshot).map(|p| p.snapshot.stream.id)
        } else {
            Some(snapshot.snapshot.stream.id)
        };
        let kept = current.as_ref().map(|c| c.snapshot.stream.id);
        drop(current);
        match loser {
            Some(id) if Some(id) != kept => self.snapshots.remove(id).map_err(io_err),
            _ => Ok(()),
        }
    }

    /// The handle on the current snapshot (for the snapshot receiver).
    pub(super) fn current_handle(&self) -> CurrentSnapshot {
        self.current.clone()
    }

    /// The current snapshot's last index and stream (tests).
    #[cfg(test)]
    pub(super) fn current_snapshot(&self) -> Option<(Option<u64>, StoredStream)> {
        (self.current.0.lock().as_ref())
            .map(|c| (c.meta.last_log_id.map(|l| l.index), c.snapshot.stream))
    }

    /// The snapshot store (tests).
    #[cfg(test)]
    pub(super) fn snapshot_store(&self) -> &Arc<SnapshotStore> {
        &self.snapshots
    }

    fn load_state(&self) -> io::Result<AppliedState> {
        match self.store.applied().map_err(io_err)? {
            Some(bytes) => decode_io("applied state", &bytes),
            None => Ok(AppliedState::default()),
        }
    }

    /// Apply, with the engine not running, every entry of `log` that its persisted commit
    /// index covers and this state machine has not applied yet; returns how many. etcd's
    /// `--force-new-cluster` applies its WAL up to the hard state's commit index before it
    /// rewrites the membership, so the entries committed elsewhere that this member knew
    /// committed survive the log being dropped.
    pub(crate) fn apply_committed_offline(&self, log: &DurableLog) -> io::Result<u64> {
        let Some(committed) = super::log_store::persisted_committed(log)? else {
            return Ok(0);
        };
        let mut state = self.load_state()?;
        let from = state.last_applied.map_or(0, |l| l.index + 1);
        if from > committed.index {
            return Ok(0);
        }
        let mut applied = 0;
        // in bounded runs, so a member far behind does not hold its whole backlog in memory
        let mut next = from;
        while next <= committed.index {
            let until = committed
                .index
                .min(next.saturating_add(OFFLINE_APPLY_RUN - 1));
            let run = log.entries(next, until + 1).map_err(io_err)?;
            if run.is_empty() {
                break;
            }
            for (index, bytes) in run {
                let entry: Entry = decode_io("log entry", &bytes)?;
                if entry.log_id.index != index || index != next {
                    return Err(io::Error::other(format!(
                        "log entry {index} holds log id {} where {next} was expected",
                        entry.log_id
                    )));
                }
                self.apply_one(&entry, &mut state)?;
                applied += 1;
                next += 1;
            }
        }
        if applied != committed.index + 1 - from {
            return Err(io::Error::other(format!(
                "the log lacks committed entries: {applied} of {from}..={}",
                committed.index
            )));
        }
        Ok(applied)
    }

    /// Apply `first` and the entries after it that `entries` has ready and that each
    /// [`Request::joins_apply_group`], in one write transaction, one revision each
    /// (invariant 1), up to [`APPLY_GROUP_ENTRIES_MAX`] entries or
    /// [`APPLY_GROUP_BYTES_MAX`] bytes of batch. Returns the run's answers, in order, once
    /// it is committed, and what ended the run.
    fn apply_run<Strm>(
        &self,
        first: EntryResponder<TypeConfig>,
        entries: &mut Strm,
        state: &mut AppliedState,
    ) -> io::Result<(Vec<Answer>, RunEnd)>
    where
        Strm: Stream<Item = io::Result<EntryResponder<TypeConfig>>> + Unpin + Send,
    {
        let started = self.metrics.now();
        let mut txn = self.store.begin().map_err(io_err)?;
        let mut answers = Vec::new();
        let (mut entry, mut responder) = first;
        let end = loop {
            let applied = self.apply_in_run(&mut txn, &entry, state)?;
            answers.push((responder, applied));
            if answers.len() >= APPLY_GROUP_ENTRIES_MAX
                || txn.batch().size_bytes() >= APPLY_GROUP_BYTES_MAX
            {
                break RunEnd::Pending;
            }
            match entries.next().now_or_never() {
                Some(Some(Ok((next, next_responder)))) if joins_apply_group(&next) => {
                    (entry, responder) = (next, next_responder);
                }
                Some(Some(item)) => break RunEnd::Ready(Box::new(item)),
                Some(None) => break RunEnd::Ended,
                None => break RunEnd::Pending,
            }
        };
        self.commit_applied(txn, &encode_io("applied state", state)?)?;
        if self.metrics.now().saturating_sub(started) > crate::metrics::SLOW_APPLY {
            self.metrics.slow_apply.inc();
        }
        Ok((answers, end))
    }

    /// Stage the lessor's and the auth state's changes and the applied `marker` into `txn`
    /// and commit it, buffered (invariants 1, 2, 7 and 8).
    fn commit_applied(&self, mut txn: WriteTxn<'_>, marker: &[u8]) -> io::Result<Committed> {
        self.lease.stage(&mut txn);
        self.auth.stage(&mut txn).map_err(io_err)?;
        txn.set_applied(marker);
        let commit_started = self.metrics.now();
        let committed = txn.commit(Durability::Buffered).map_err(io_err)?;
        self.metrics
            .observe_since(&self.metrics.backend_commit, commit_started);
        Ok(committed)
    }

    /// Apply one entry of a run in the run's transaction, in a revision of its own.
    fn apply_in_run(
        &self,
        txn: &mut WriteTxn<'_>,
        entry: &Entry,
        state: &mut AppliedState,
    ) -> io::Result<Applied> {
        state.last_applied = Some(entry.log_id);
        let EntryPayload::Normal(req) = &entry.payload else {
            return Err(io::Error::other("a non-request entry in an apply run"));
        };
        let before = txn.current_revision();
        let applied = match self.apply_request(txn, req) {
            Ok(applied) => applied,
            Err(e) if e.is_fatal() => return Err(io_err(e)),
            Err(e) => {
                // Invariant 3: keel-storage refuses a request before it changes anything,
                // so the run's earlier changes stay and this request leaves none.
                if txn.current_revision() != before {
                    return Err(io::Error::other(format!(
                        "a refused request left changes behind: {e}"
                    )));
                }
                Applied::Rejected(Rejection::from(&e))
            }
        };
        let revision = txn.current_revision();
        txn.seal_revision();
        count_applied(&self.metrics, &applied);
        Ok(with_revision(applied, revision))
    }

    /// Apply one entry in one write transaction (invariant 1).
    fn apply_one(&self, entry: &Entry, state: &mut AppliedState) -> io::Result<Applied> {
        let started = self.metrics.now();
        let applied = self.apply_entry(entry, state)?;
        count_applied(&self.metrics, &applied);
        if self.metrics.now().saturating_sub(started) > crate::metrics::SLOW_APPLY {
            self.metrics.slow_apply.inc();
        }
        Ok(applied)
    }

    fn apply_entry(&self, entry: &Entry, state: &mut AppliedState) -> io::Result<Applied> {
        state.last_applied = Some(entry.log_id);
        let mut members = None;
        let request = match &entry.payload {
            EntryPayload::Blank => None,
            EntryPayload::Normal(req) => Some(req),
            EntryPayload::Membership(m) => {
                tracing::info!(index = entry.log_id.index, membership = %m, "membership applied");
                state.membership = StoredMembership::new(Some(entry.log_id), m.clone());
                members = Some(self.derive_members(m)?);
                None
            }
        };
        let marker = encode_io("applied state", state)?;
        #[cfg(feature = "planted-bugs")]
        if crate::planted::on(&crate::planted::APPLIED_BEFORE_CHANGES) {
            let mut early = self.store.begin().map_err(io_err)?;
            early.set_applied(&marker);
            early.commit(Durability::Synced).map_err(io_err)?;
        }
        let mut txn = self.store.begin().map_err(io_err)?;
        if let Some(cluster) = &members {
            // Invariant 6: the records commit with the membership entry's marker.
            let cf = self
                .store
                .engine()
                .column_family(MEMBERS_CF)
                .map_err(io_err)?;
            persist::write_cluster(txn.batch(), cf, cluster);
        }
        let mut compact = false;
        let applied = match request {
            None => Applied::Internal,
            Some(req) => match self.apply_request(&mut txn, req) {
                Ok(applied) => {
                    // The result, not the request: a compaction may arrive inside
                    // `Request::Checked`.
                    compact = matches!(applied, Applied::Compact { .. });
                    applied
                }
                Err(e) if e.is_fatal() => return Err(io_err(e)),
                Err(e) => {
                    // Invariant 3: drop every change, keep only the marker.
                    drop(txn);
                    txn = self.store.begin().map_err(io_err)?;
                    Applied::Rejected(Rejection::from(&e))
                }
            },
        };
        let committed = self.commit_applied(txn, &marker)?;
        if compact {
            tracing::info!(revision = %committed.revision, "compaction applied");
            while !self
                .store
                .compact_step(COMPACTION_STEP_KEYS_MAX)
                .map_err(io_err)?
            {}
        }
        Ok(with_revision(applied, committed.revision))
    }
}

impl StateMachine {
    /// Apply one request: a checked one is decided first (invariant 8), auth requests go to
    /// the auth state, the rest through the lessor to the store.
    fn apply_request(
        &self,
        txn: &mut WriteTxn<'_>,
        req: &Request,
    ) -> Result<Applied, StorageError> {
        let req = match req {
            Request::Checked { caller, request } => {
                if let Err(e) = self.auth.authorize(caller.as_ref(), request, &self.lease) {
                    return Ok(Applied::Rejected(Rejection::Auth(e)));
                }
                &**request
            }
            other => other,
        };
        match req {
            Request::Auth(auth) => match self.auth.apply(auth) {
                Ok(applied) => Ok(applied),
                Err(keel_auth::AuthError::Storage(e)) => Err(e),
                Err(e) => Ok(Applied::Rejected(Rejection::Auth(e))),
            },
            _ => self.lease.apply(txn, req, |txn| execute(txn, req)),
        }
    }

    /// The member records after membership entry `m` (see `super::membership`).
    fn derive_members(&self, m: &openraft::Membership<u64, MemberNode>) -> io::Result<Cluster> {
        let previous = load_cluster(self.store.engine().as_ref()).map_err(io_err)?;
        let cluster_id = previous.as_ref().map_or(self.cluster_id, Cluster::id);
        derive_cluster(cluster_id, previous.as_ref(), m).map_err(io_err)
    }
}

/// A caller to answer once its entry's run is committed, and the answer.
type Answer = (
    Option<openraft::storage::ApplyResponder<TypeConfig>>,
    Applied,
);

/// Send `applied` to the caller waiting on the entry, if one waits on this member.
fn answer(responder: Option<openraft::storage::ApplyResponder<TypeConfig>>, applied: Applied) {
    if let Some(responder) = responder {
        responder.send(applied);
    }
}

/// What ended a run of entries applied together (see `StateMachine::apply_run`).
enum RunEnd {
    /// The next entry, ready but not joining the run (or an error reading it).
    Ready(Box<io::Result<EntryResponder<TypeConfig>>>),
    /// The stream has no more entries.
    Ended,
    /// The run is full, or the stream has no entry ready.
    Pending,
}

/// Whether `entry` may share a write transaction with the entries before it (invariant 1).
fn joins_apply_group(entry: &Entry) -> bool {
    // The planted bug commits each entry's marker early, one entry at a time.
    #[cfg(feature = "planted-bugs")]
    if crate::planted::on(&crate::planted::APPLIED_BEFORE_CHANGES) {
        return false;
    }
    matches!(&entry.payload, EntryPayload::Normal(req) if req.joins_apply_group())
}

/// Count an applied request in etcd's mvcc and lease counters (refusals are not counted).
fn count_applied(metrics: &crate::metrics::Metrics, applied: &Applied) {
    let (counter, by) = match applied {
        Applied::Put(_) => (&metrics.mvcc_put, 1),
        Applied::Delete(_) => (&metrics.mvcc_delete, 1),
        Applied::Txn(_) => (&metrics.mvcc_txn, 1),
        Applied::Lease(LeaseApplied::Granted { .. }) => (&metrics.lease_granted, 1),
        Applied::Lease(LeaseApplied::Revoked { .. }) => (&metrics.lease_revoked, 1),
        Applied::Lease(LeaseApplied::Renewed { ttls }) => (
            &metrics.lease_renewed,
            ttls.iter().filter(|t| t.is_some()).count() as u64,
        ),
        Applied::Lease(LeaseApplied::Internal)
        | Applied::Auth { .. }
        | Applied::Internal
        | Applied::Compact { .. }
        | Applied::Rejected(_) => return,
    };
    counter.inc_by(by);
}

fn execute(txn: &mut WriteTxn<'_>, req: &Request) -> Result<Applied, StorageError> {
    Ok(match req {
        Request::Put(p) => Applied::Put(txn.put(p.clone())?),
        Request::DeleteRange(d) => Applied::Delete(txn.delete_range(d)?),
        Request::Txn(t) => Applied::Txn(txn.txn(t)?),
        Request::Compact { revision } => {
            txn.compact(*revision)?;
            Applied::Compact {
                revision: txn.current_revision(),
            }
        }
        // Applied by `LeaseState::apply` and `AuthGate::apply` before this function is
        // reached (a checked request is unwrapped first); they never write KV here.
        Request::Lease(_) | Request::Auth(_) | Request::Checked { .. } => Applied::Internal,
    })
}

/// Responses report the revision the store is at after the entry.
fn with_revision(applied: Applied, revision: keel_types::Revision) -> Applied {
    match applied {
        Applied::Put(mut p) => {
            p.revision = revision;
            Applied::Put(p)
        }
        Applied::Delete(mut d) => {
            d.revision = revision;
            Applied::Delete(d)
        }
        Applied::Compact { .. } => Applied::Compact { revision },
        Applied::Lease(LeaseApplied::Revoked { .. }) => {
            Applied::Lease(LeaseApplied::Revoked { revision })
        }
        other => other,
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    type SnapshotData = SnapshotData;

    async fn build_snapshot(&mut self) -> io::Result<SnapshotOf> {
        // Invariant 4: hold the writer so no entry applies between the marker and the view.
        // The export's view is taken before its first chunk arrives; entries apply again
        // while the rest of it is read and stored.
        let (state, first, export) = {
            let _writer = self.store.begin().map_err(io_err)?;
            let state = self.load_state()?;
            let mut export = keel_storage::snapshot::export(
                self.store.engine(),
                &STATE_COLUMN_FAMILIES,
                SNAPSHOT_CHUNK_BYTES_MAX,
            )
            .map_err(io_err)?;
            let first = export
                .next()
                .ok_or_else(|| io::Error::other("the snapshot export ended before its header"))?;
            (state, first, export)
        };
        let id = SnapshotData::id_of(state.last_applied.as_ref());
        let stream = self
            .snapshots
            .store(id, std::iter::once(first).chain(export))
            .map_err(io_err)?;
        self.store.engine().sync().map_err(io_err)?;
        let snapshot = Snapshot {
            meta: SnapshotMeta {
                last_log_id: state.last_applied,
                last_membership: state.membership,
            },
            snapshot: SnapshotData {
                store: Arc::clone(&self.snapshots),
                stream,
            },
        };
        tracing::info!(
            index = snapshot.meta.last_log_id.map_or(0, |l| l.index),
            chunks = stream.count,
            "snapshot built"
        );
        self.replace_current(snapshot.clone())?;
        Ok(snapshot)
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotData = SnapshotData;
    type SnapshotBuilder = StateMachine;

    async fn applied_state(&mut self) -> io::Result<(Option<LogId>, StoredMembership)> {
        let state = self.load_state()?;
        Ok((state.last_applied, state.membership))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> io::Result<()>
    where
        Strm: Stream<Item = io::Result<EntryResponder<TypeConfig>>> + Unpin + Send,
    {
        let mut state = self.load_state()?;
        let mut next = entries.next().await;
        while let Some(item) = next.take() {
            let (entry, responder) = item?;
            if !joins_apply_group(&entry) {
                answer(responder, self.apply_one(&entry, &mut state)?);
                next = entries.next().await;
                continue;
            }
            let (answers, end) = self.apply_run((entry, responder), &mut entries, &mut state)?;
            for (responder, applied) in answers {
                answer(responder, applied);
            }
            next = match end {
                RunEnd::Ready(item) => Some(*item),
                RunEnd::Ended => None,
                RunEnd::Pending => entries.next().await,
            };
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Self::SnapshotData,
    ) -> io::Result<()> {
        // The receiver verified the stream before handing it to openraft
        // (`Consensus::receive_snapshot_chunk`); the install refuses a malformed one anyway.
        self.store
            .install_snapshot(snapshot.chunks())
            .map_err(io_err)?;
        // Invariant 7: the lessor follows the installed lease records.
        self.lease
            .reload(self.store.engine().as_ref())
            .map_err(io_err)?;
        // Invariant 8: so does the auth state.
        self.auth
            .reload(self.store.engine().as_ref())
            .map_err(io_err)?;
        let state = self.load_state()?;
        if state.last_applied != meta.last_log_id {
            return Err(io::Error::other(format!(
                "snapshot data is at {:?} but its meta says {:?}",
                state.last_applied, meta.last_log_id
            )));
        }
        tracing::info!(
            index = meta.last_log_id.map_or(0, |l| l.index),
            chunks = snapshot.stream.count,
            "snapshot installed"
        );
        self.replace_current(Snapshot {
            meta: meta.clone(),
            snapshot,
        })?;
        (self.on_install)();
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> io::Result<Option<SnapshotOf>> {
        Ok(self.current.0.lock().clone())
    }
}
