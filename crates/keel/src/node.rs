//! [`Node`]: one member of a keel cluster, linked into the application.

use crate::builder::{self, NodeBuilder};
use crate::error::NodeError;
use crate::limits::{SHUTDOWN_POLL_INTERVAL, SHUTDOWN_RELEASE_MAX};
use crate::raft::{
    member_list, Consensus, PeerHandler, PeerMessage, RaftStatus, RemoteChange, SendFuture,
};
use crate::request::{Applied, Request};
use crate::response::{
    MemberChange, MemberStatus, ReadConsistency, Response, ResponseHeader, Status,
};
use crate::watch::{WatchRegistry, WatchStream};
use bytes::Bytes;
use keel_membership::{runtime_member_id, ClusterToken, MemberName, MemberUrl};
use keel_storage::mvcc::{
    DeleteRequest, DeleteResponse, KeyValue, PutRequest, PutResponse, RangeRequest, RangeResponse,
    TxnRequest, TxnResponse,
};
use keel_storage::watch::WatchSpec;
use keel_storage::MvccStore;
use keel_types::{ClusterId, KeyRange, MemberId, Revision};
use parking_lot::Mutex;
use std::collections::BTreeSet;
use std::sync::{Arc, Weak};
use std::time::Duration;

mod auth;
mod lease;
mod maintenance;
mod quota;
mod renew_batch;
mod restore;
pub use auth::AuthStatus;
pub use lease::{LeaseGrant, LeaseKeepAlive};
pub use maintenance::SnapshotExport;
pub use quota::Alarm;
pub(crate) use restore::{force_reset, recorded_cluster_id};
pub use restore::{snapshot_summary, SnapshotSummary};

/// A member of a keel cluster: etcd's KV API on a replicated, linearizable MVCC store.
///
/// Writes go through Raft (forwarded to the leader when this member is a follower) and are
/// acknowledged once applied here; reads are linearizable by default (read index from the
/// leader, then a local read once applied) or serializable on request. Every response
/// carries etcd's header. Cloning is cheap and shares the node.
///
/// Invariants:
/// 1. After [`Node::shutdown`] returns, every call fails with [`NodeError::Stopped`] and the
///    node holds no storage: a new node can open the same directory.
/// 2. A call returns within its deadline ([`crate::Timings::request_timeout`]); no quorum
///    means [`NodeError::Timeout`], never a hang.
///
/// # Examples
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use keel::{NodeBuilder, ReadConsistency};
/// use keel_storage::mvcc::RangeRequest;
/// use keel_types::{KeyRange, MemberId};
/// let node = NodeBuilder::new(MemberId::new(1)).start().await?;
/// let put = node.put(&b"a/1"[..], &b"x"[..]).await?;
/// node.put(&b"a/2"[..], &b"y"[..]).await?;
/// let all = node
///     .range(&RangeRequest::new(KeyRange::prefix(&b"a/"[..])), ReadConsistency::Serializable)
///     .await?;
/// assert_eq!(all.body.count, 2);
/// assert!(all.header.revision > put.header.revision);
/// node.shutdown().await;
/// assert!(node.get(&b"a/1"[..]).await.is_err());
/// # Ok::<(), keel::NodeError>(())
/// # }).unwrap();
/// ```
#[derive(Clone)]
pub struct Node {
    inner: Arc<NodeInner>,
    /// Who this handle acts for: the host process (trusted) unless made by
    /// [`Node::with_token`].
    principal: crate::auth::Principal,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("id", &self.inner.id)
            .field("cluster_id", &self.inner.cluster_id)
            .finish_non_exhaustive()
    }
}

struct NodeInner {
    id: MemberId,
    /// This member's name (published in the member records).
    name: String,
    cluster_id: ClusterId,
    request_timeout: Duration,
    /// The running parts; `None` once shut down. Guards only the option (cloned out, never
    /// held across an await).
    running: Mutex<Option<Arc<Running>>>,
    /// Serializes shutdowns (held across the engine's shutdown).
    stopping: tokio::sync::Mutex<()>,
    /// Live watch streams (woken on snapshot install, closed at shutdown).
    watches: Arc<WatchRegistry>,
    /// The metrics registry (outlives shutdown: a last scrape still renders).
    metrics: Arc<crate::metrics::Metrics>,
    /// The space quota and the NOSPACE alarm.
    quota: quota::Quota,
    /// Users, roles, permissions and tokens (shared with the state machine).
    auth: Arc<crate::auth::AuthGate>,
}

struct Running {
    consensus: Consensus,
    store: Arc<MvccStore>,
    /// The lessor (shared with the state machine and the lease driver).
    lease: Arc<crate::lease::LeaseState>,
    /// Keep-alives waiting to share a renew entry.
    renews: renew_batch::RenewBatcher,
}

impl NodeInner {
    fn running(&self) -> Result<Arc<Running>, NodeError> {
        self.running.lock().clone().ok_or(NodeError::Stopped)
    }
}

impl crate::raft::PeerService for NodeInner {
    fn handle(&self, message: PeerMessage) -> SendFuture<'_> {
        Box::pin(async move {
            // Shut down before the message was served: not delivered, safe to resend.
            let running = self
                .running()
                .map_err(|_| NodeError::Unreachable { member: self.id })?;
            running.consensus.handle(message).await
        })
    }
}

impl Node {
    /// Start configuring member `id` (see [`NodeBuilder`]).
    pub fn builder(id: MemberId) -> NodeBuilder {
        NodeBuilder::new(id)
    }

    /// The column families an engine passed to [`NodeBuilder::engine`] must register.
    pub fn column_families() -> Vec<&'static str> {
        builder::column_families()
    }

    #[expect(
        clippy::too_many_arguments,
        reason = "crate-internal constructor, called once by the builder with its parts"
    )]
    pub(crate) fn new(
        id: MemberId,
        name: String,
        cluster_id: ClusterId,
        request_timeout: Duration,
        consensus: Consensus,
        store: Arc<MvccStore>,
        lease: Arc<crate::lease::LeaseState>,
        auth: Arc<crate::auth::AuthGate>,
        watches: Arc<WatchRegistry>,
        metrics: Arc<crate::metrics::Metrics>,
        quota_bytes: u64,
    ) -> Self {
        Node {
            inner: Arc::new(NodeInner {
                id,
                name,
                cluster_id,
                request_timeout,
                running: Mutex::new(Some(Arc::new(Running {
                    consensus,
                    store,
                    lease,
                    renews: renew_batch::RenewBatcher::default(),
                }))),
                stopping: tokio::sync::Mutex::new(()),
                watches,
                metrics,
                quota: quota::Quota::new(quota_bytes),
                auth,
            }),
            principal: crate::auth::Principal::Trusted,
        }
    }

    /// This member's id.
    pub fn id(&self) -> MemberId {
        self.inner.id
    }

    /// The cluster's id.
    pub fn cluster_id(&self) -> ClusterId {
        self.inner.cluster_id
    }

    /// True while this member is a learner (non-voting) in the cluster's configuration.
    /// etcd refuses most client calls on a learner; keel-server does the same.
    pub fn is_learner(&self) -> bool {
        self.inner.running().is_ok_and(|r| r.consensus.is_learner())
    }

    /// The receiving end for messages from other members (register it with the network).
    pub fn peer_handler(&self) -> PeerHandler {
        let weak: Weak<NodeInner> = Arc::downgrade(&self.inner);
        PeerHandler::new(self.inner.id, weak)
    }

    fn header(&self, revision: Revision, raft_term: u64) -> ResponseHeader {
        ResponseHeader {
            cluster_id: self.inner.cluster_id,
            member_id: self.inner.id,
            revision,
            raft_term,
        }
    }

    async fn propose(&self, request: Request) -> Result<(Applied, u64), NodeError> {
        let running = self.inner.running()?;
        // Before anything is encoded: every member must be able to decode the entry.
        if let Request::Txn(txn) = &request {
            keel_storage::mvcc::check_txn_depth(txn).map_err(NodeError::Rejected)?;
        }
        let request = match &self.principal {
            crate::auth::Principal::Trusted => request,
            principal => Request::Checked {
                caller: principal.caller().cloned(),
                request: Box::new(request),
            },
        };
        let max_bytes = (running.store.limits().request_bytes_max)
            .saturating_add(crate::limits::REQUEST_ENVELOPE_BYTES);
        let len_bytes = request.check_size(max_bytes)?;
        running
            .consensus
            .check_backlog(crate::limits::APPLY_BACKLOG_ENTRIES_MAX)?;
        if request.grows_state() {
            self.check_quota(&running, quota::growth_bound(len_bytes))?;
        }
        let pending = crate::metrics::PendingProposal::new(&self.inner.metrics);
        let started = self.inner.metrics.now();
        let kind = request.kind();
        let result = running
            .consensus
            .propose(request, len_bytes, self.inner.request_timeout)
            .await;
        drop(pending);
        self.inner.metrics.log_if_slow(kind, started);
        match result {
            Ok((Applied::Rejected(r), _)) => Err(r.into()),
            Ok(other) => Ok(other),
            Err(e) => {
                // Not decided by the store: lost leadership, timeout, shutdown.
                self.inner.metrics.proposals_failed.inc();
                Err(e)
            }
        }
    }

    /// Put `value` at `key`.
    ///
    /// # Errors
    /// As [`Node::put_request`].
    pub async fn put(
        &self,
        key: impl Into<Bytes>,
        value: impl Into<Bytes>,
    ) -> Result<Response<PutResponse>, NodeError> {
        self.put_request(PutRequest::new(key, value)).await
    }

    /// etcd Put with every option.
    ///
    /// # Errors
    /// [`NodeError::Rejected`] (empty or oversized key, ...), [`NodeError::LeaseNotFound`]
    /// (`request.lease` names no lease), [`NodeError::RequestTooLarge`],
    /// [`NodeError::Timeout`], [`NodeError::Stopped`], fatal errors.
    pub async fn put_request(
        &self,
        request: PutRequest,
    ) -> Result<Response<PutResponse>, NodeError> {
        match self.propose(Request::Put(request)).await? {
            (Applied::Put(body), term) => Ok(Response {
                header: self.header(body.revision, term),
                body,
            }),
            (other, _) => Err(unexpected(&other)),
        }
    }

    /// Delete one key.
    ///
    /// # Errors
    /// As [`Node::delete_range`].
    pub async fn delete(
        &self,
        key: impl Into<Bytes>,
    ) -> Result<Response<DeleteResponse>, NodeError> {
        self.delete_range(DeleteRequest {
            range: KeyRange::key(key),
            prev_kv: false,
        })
        .await
    }

    /// etcd DeleteRange.
    ///
    /// # Errors
    /// As [`Node::put_request`].
    pub async fn delete_range(
        &self,
        request: DeleteRequest,
    ) -> Result<Response<DeleteResponse>, NodeError> {
        match self.propose(Request::DeleteRange(request)).await? {
            (Applied::Delete(body), term) => Ok(Response {
                header: self.header(body.revision, term),
                body,
            }),
            (other, _) => Err(unexpected(&other)),
        }
    }

    /// etcd Txn: compares, then the success or failure ops, in one revision.
    ///
    /// # Errors
    /// As [`Node::put_request`]; [`NodeError::Rejected`] for too many ops or a duplicate key.
    pub async fn txn(&self, request: TxnRequest) -> Result<Response<TxnResponse>, NodeError> {
        match self.propose(Request::Txn(request)).await? {
            (Applied::Txn(body), term) => Ok(Response {
                header: self.header(body.revision, term),
                body,
            }),
            (other, _) => Err(unexpected(&other)),
        }
    }

    /// etcd Compact: history at or below `revision` is dropped; reads below it then fail
    /// with "required revision has been compacted".
    ///
    /// # Errors
    /// [`NodeError::Rejected`] (already compacted, future revision), as [`Node::put_request`].
    pub async fn compact(&self, revision: Revision) -> Result<Response<()>, NodeError> {
        match self.propose(Request::Compact { revision }).await? {
            (Applied::Compact { revision }, term) => {
                self.reclaim_if_alarmed().await?;
                Ok(Response {
                    header: self.header(revision, term),
                    body: (),
                })
            }
            (other, _) => Err(unexpected(&other)),
        }
    }

    /// etcd Range.
    ///
    /// # Errors
    /// [`NodeError::Rejected`] (compacted or future revision, bad key), [`NodeError::Timeout`]
    /// (linearizable read without a reachable quorum), [`NodeError::Stopped`].
    pub async fn range(
        &self,
        request: &RangeRequest,
        consistency: ReadConsistency,
    ) -> Result<Response<RangeResponse>, NodeError> {
        let running = self.inner.running()?;
        let started = self.inner.metrics.now();
        if consistency == ReadConsistency::Linearizable {
            running
                .consensus
                .linearize(self.inner.request_timeout)
                .await?;
        }
        self.check_access(&request.range, keel_auth::Access::Read)?;
        let body = running.store.range(request)?;
        self.inner.metrics.mvcc_range.inc();
        self.inner.metrics.log_if_slow("range", started);
        let term = running.consensus.term();
        Ok(Response {
            header: self.header(body.revision, term),
            body,
        })
    }

    /// Linearizable read of one key.
    ///
    /// # Errors
    /// As [`Node::range`].
    pub async fn get(
        &self,
        key: impl Into<Bytes>,
    ) -> Result<Response<Option<KeyValue>>, NodeError> {
        let resp = self
            .range(
                &RangeRequest::new(KeyRange::key(key)),
                ReadConsistency::Linearizable,
            )
            .await?;
        Ok(Response {
            header: resp.header,
            body: resp.body.kvs.into_iter().next(),
        })
    }

    /// Watch changes on this member's store, from `spec.start_revision` (or the next
    /// revision) on. Events arrive as this member applies them; on any member they are the
    /// same events in the same order.
    ///
    /// # Errors
    /// [`NodeError::Rejected`] (empty key, compacted start revision, too many watchers),
    /// [`NodeError::Stopped`].
    pub async fn watch(&self, spec: WatchSpec) -> Result<WatchStream, NodeError> {
        let running = self.inner.running()?;
        self.check_access(&spec.range, keel_auth::Access::Read)?;
        let watcher = running.store.watch(spec)?;
        let weak = Arc::downgrade(&self.inner);
        let term = Box::new(move || {
            weak.upgrade()
                .and_then(|n| n.running().ok())
                .map_or(0, |r| r.consensus.term())
        });
        Ok(WatchStream::new(
            watcher,
            &self.inner.watches,
            self.inner.cluster_id,
            self.inner.id,
            term,
        ))
    }

    /// This member's view: leader, term, revision, raft and applied index.
    ///
    /// # Errors
    /// [`NodeError::Stopped`], storage failure.
    pub async fn status(&self) -> Result<Status, NodeError> {
        let running = self.inner.running()?;
        self.make_status(&running, running.consensus.status())
    }

    /// The header of this member's current state (cluster, member, current revision, term),
    /// for answers that carry no write or read of their own. Cheap: no member list, no
    /// database size, unlike [`Node::status`].
    ///
    /// # Errors
    /// [`NodeError::Stopped`], storage failure.
    ///
    /// # Example
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// use keel::NodeBuilder;
    /// use keel_types::MemberId;
    /// let node = NodeBuilder::new(MemberId::new(1)).start().await?;
    /// let put = node.put(&b"k"[..], &b"v"[..]).await?;
    /// let header = node.current_header()?;
    /// assert_eq!(header.revision, put.header.revision);
    /// assert_eq!(header.member_id, MemberId::new(1));
    /// node.shutdown().await;
    /// # Ok::<(), keel::NodeError>(())
    /// # }).unwrap();
    /// ```
    pub fn current_header(&self) -> Result<ResponseHeader, NodeError> {
        let running = self.inner.running()?;
        let revision = running.store.current_revision()?;
        Ok(self.header(revision, running.consensus.term()))
    }

    /// The node's metrics registry: the host program adds its own metrics to it and renders
    /// it with [`Node::metrics_text`] (see [`crate::Metrics`]).
    pub fn metrics(&self) -> Arc<crate::metrics::Metrics> {
        Arc::clone(&self.inner.metrics)
    }

    /// The metrics in the OpenMetrics text format, with the scrape-time gauges (leader, raft
    /// indexes, database size) refreshed first. After shutdown the last values render.
    ///
    /// # Errors
    /// Storage failure reading the database size; a host metric failed to render
    /// ([`NodeError::Codec`]).
    pub fn metrics_text(&self) -> Result<String, NodeError> {
        use crate::metrics::gauge_value;
        let m = &self.inner.metrics;
        if let Ok(running) = self.inner.running() {
            let raft = running.consensus.status();
            m.has_leader.set(i64::from(raft.leader.is_some()));
            m.proposals_committed.set(gauge_value(raft.committed_index));
            m.proposals_applied.set(gauge_value(raft.applied_index));
            let engine = running.store.engine();
            m.db_total_size.set(gauge_value(engine.size_bytes()?));
            m.db_in_use_size.set(gauge_value(engine.live_bytes()?));
            m.watchers
                .set(gauge_value(self.inner.watches.live_count() as u64));
        }
        m.render().map_err(|e| NodeError::Codec {
            what: "metrics",
            detail: e.to_string(),
        })
    }

    fn make_status(&self, running: &Running, raft: RaftStatus) -> Result<Status, NodeError> {
        let revision = running.store.current_revision()?;
        Ok(Status {
            header: self.header(revision, raft.term),
            leader: raft.leader,
            raft_index: raft.last_log_index,
            applied_index: raft.applied_index,
            committed_index: raft.committed_index,
            snapshot_index: raft.snapshot_index,
            purged_index: raft.purged_index,
            db_size_bytes: running.store.engine().size_bytes()?,
            db_in_use_bytes: running.store.engine().live_bytes()?,
            is_learner: raft.is_learner,
            lease_primary: running.lease.with_lessor(|lessor| lessor.is_primary()),
        })
    }

    /// Wait until `condition` holds on this member's [`Status`], re-checking whenever the
    /// consensus metrics change, up to `deadline`; returns the status that satisfied it.
    ///
    /// # Errors
    /// [`NodeError::Timeout`], [`NodeError::Stopped`], storage failure.
    pub async fn wait_for_status(
        &self,
        deadline: Duration,
        condition: impl Fn(&Status) -> bool,
    ) -> Result<Status, NodeError> {
        let running = self.inner.running()?;
        let raft = running
            .consensus
            .wait_until(deadline, |raft| {
                self.make_status(&running, raft.clone())
                    .is_ok_and(|s| condition(&s))
            })
            .await?;
        self.make_status(&running, raft)
    }

    /// The cluster's members as this member has applied them (the replicated member records),
    /// by id.
    ///
    /// # Errors
    /// [`NodeError::Stopped`], storage failure or corrupted records.
    pub async fn members(&self) -> Result<Vec<MemberStatus>, NodeError> {
        let cluster = self.inner.running()?.consensus.cluster()?;
        Ok(member_list(&cluster))
    }

    /// etcd MemberAdd, keel's default form: add a **learner** named `name` reachable at
    /// `peer_urls`, with an id derived from the URLs (etcd's runtime member id). Returns once
    /// the addition is committed; then start the new member with
    /// [`NodeBuilder::join_existing`] under the returned id, name and URLs, and promote it with
    /// [`Node::member_promote`] once it caught up. Served by the leader (forwarded there from any member).
    ///
    /// # Errors
    /// [`NodeError::Reconfig`] with etcd's texts ("etcdserver: Peer URLs already exists",
    /// "etcdserver: too many learner members in cluster", invalid URLs, ...),
    /// [`NodeError::NotLeader`], [`NodeError::ReconfigRefused`], [`NodeError::Timeout`],
    /// [`NodeError::Stopped`].
    pub async fn member_add(
        &self,
        name: &str,
        peer_urls: &[&str],
    ) -> Result<MemberChange, NodeError> {
        self.member_add_learner(name, peer_urls).await
    }

    /// Add a learner (non-voting member that receives the log); see [`Node::member_add`].
    ///
    /// # Errors
    /// As [`Node::member_add`].
    pub async fn member_add_learner(
        &self,
        name: &str,
        peer_urls: &[&str],
    ) -> Result<MemberChange, NodeError> {
        let urls = parse_urls(peer_urls)?;
        let id = self.runtime_id(&urls)?;
        self.add(id, name, urls, true).await
    }

    /// Add a member directly as a voter. The rules refuse it unless a quorum of both the old
    /// and the new voter sets is reachable (the new member counts as unreachable until it
    /// starts); prefer [`Node::member_add`] and [`Node::member_promote`].
    ///
    /// # Errors
    /// As [`Node::member_add`]; "etcdserver: re-configuration failed due to not enough started
    /// members".
    pub async fn member_add_voter(
        &self,
        name: &str,
        peer_urls: &[&str],
    ) -> Result<MemberChange, NodeError> {
        let urls = parse_urls(peer_urls)?;
        let id = self.runtime_id(&urls)?;
        self.add(id, name, urls, false).await
    }

    /// Add a member under an id the caller chose (deterministic ids for tests and tools).
    ///
    /// # Errors
    /// As [`Node::member_add`]; "etcdserver: member ID already exist", "etcdserver: ID
    /// removed".
    pub async fn member_add_with_id(
        &self,
        id: MemberId,
        name: &str,
        peer_urls: &[&str],
        is_learner: bool,
    ) -> Result<MemberChange, NodeError> {
        self.add(id, name, parse_urls(peer_urls)?, is_learner).await
    }

    fn runtime_id(&self, urls: &[MemberUrl]) -> Result<MemberId, NodeError> {
        let running = self.inner.running()?;
        let token = ClusterToken::new(format!("keel-{}", self.inner.cluster_id))
            .map_err(NodeError::Reconfig)?;
        // Deviation from etcd: the time component is the leader's last log index, not the
        // wall clock: deterministic, and distinct for every add (each appends an entry).
        let now = Duration::from_nanos(running.consensus.last_log_index());
        runtime_member_id(urls, &token, now).map_err(NodeError::Reconfig)
    }

    async fn add(
        &self,
        id: MemberId,
        name: &str,
        peer_urls: Vec<MemberUrl>,
        is_learner: bool,
    ) -> Result<MemberChange, NodeError> {
        // etcd's MemberAdd names no one: an unnamed member takes its name when it starts.
        if !name.is_empty() {
            MemberName::new(name).map_err(NodeError::Reconfig)?;
        }
        let change = RemoteChange::Add {
            id,
            name: name.to_owned(),
            peer_urls: peer_urls.iter().map(|u| u.as_str().to_owned()).collect(),
            is_learner,
        };
        self.reconfigure(id, change).await
    }

    /// etcd MemberPromote: make learner `id` a voter (joint consensus). Refused unless the
    /// learner is in sync: its match index, as the leader tracks it, is at least 90% of the
    /// leader's last index. Served by the leader (forwarded there from any member).
    ///
    /// # Errors
    /// [`NodeError::Reconfig`]: "etcdserver: can only promote a learner member which is in
    /// sync with leader", "etcdserver: can only promote a learner member", "etcdserver: member
    /// not found", not enough started members; as [`Node::member_add`].
    pub async fn member_promote(&self, id: MemberId) -> Result<MemberChange, NodeError> {
        self.reconfigure(id, RemoteChange::Promote { id }).await
    }

    /// etcd MemberRemove: remove member `id` (voter or learner; the leader may remove itself,
    /// stepping down once the new configuration committed). The id is remembered as removed
    /// and can never be added again. Served by the leader (forwarded there from any member).
    ///
    /// # Errors
    /// [`NodeError::Reconfig`]: "etcdserver: re-configuration failed due to not enough started
    /// members" (the remaining voters would have no reachable quorum), "etcdserver: member not
    /// found"; as [`Node::member_add`].
    pub async fn member_remove(&self, id: MemberId) -> Result<MemberChange, NodeError> {
        self.reconfigure(id, RemoteChange::Remove { id }).await
    }

    /// etcd MemberUpdate: change member `id`'s peer URLs. Served by the leader (forwarded there from any member).
    ///
    /// # Errors
    /// [`NodeError::Reconfig`] (unknown member, URLs in use or invalid); as
    /// [`Node::member_add`].
    pub async fn member_update(
        &self,
        id: MemberId,
        peer_urls: &[&str],
    ) -> Result<MemberChange, NodeError> {
        let peer_urls = parse_urls(peer_urls)?
            .iter()
            .map(|u| u.as_str().to_owned())
            .collect();
        self.reconfigure(id, RemoteChange::Update { id, peer_urls })
            .await
    }

    /// Members this leader heard from within the election timeout (itself included); what
    /// the reconfiguration rules count as started. Empty on a non-leader.
    ///
    /// # Errors
    /// [`NodeError::Stopped`].
    pub async fn reachable_members(&self) -> Result<BTreeSet<MemberId>, NodeError> {
        Ok(self.inner.running()?.consensus.reachable())
    }

    /// Publish this member's name and the client URLs it serves on (etcd's attribute update
    /// after start): they appear in every member's records ([`Node::members`], etcd's
    /// MemberList), naming a member that was added unnamed. Forwarded to the leader like the
    /// other membership calls. Idempotent. The node does this by itself at start.
    ///
    /// # Errors
    /// Invalid URLs ([`NodeError::Reconfig`]), [`NodeError::Timeout`], [`NodeError::Stopped`].
    pub async fn publish_client_urls(&self, urls: &[&str]) -> Result<MemberChange, NodeError> {
        let id = self.inner.id;
        let client_urls = parse_urls(urls)?
            .iter()
            .map(|u| u.as_str().to_owned())
            .collect();
        let name = self.inner.name.clone();
        self.reconfigure(
            id,
            RemoteChange::Publish {
                id,
                name,
                client_urls,
            },
        )
        .await
    }

    /// Publish this member's name and `urls` as its client URLs in the background until the
    /// records show them (the leader may not be known yet at start) or the node stops.
    pub(crate) fn spawn_publish(&self, urls: Vec<String>) {
        let node = self.clone();
        let mut urls = urls;
        urls.sort();
        urls.dedup();
        crate::raft::rt::spawn(async move {
            let refs: Vec<&str> = urls.iter().map(String::as_str).collect();
            // Always asked of the leader (it leaves equal records alone): this member's own
            // view may still show its own first configuration, not the one that won.
            loop {
                match node.publish_client_urls(&refs).await {
                    Ok(_) => return,
                    Err(e) if e.is_fatal() => return,
                    Err(e) => {
                        tracing::debug!(error = %e, "publishing name and client URLs; will retry");
                        crate::raft::rt::sleep(crate::limits::FORWARD_RETRY_PAUSE * 10).await;
                    }
                }
            }
        });
    }

    /// While this member leads, try every `interval` to promote each learner (see
    /// [`NodeBuilder::auto_promote_learners`]). Ends when the node stops.
    pub(crate) fn spawn_auto_promote(&self, interval: Duration) {
        let node = self.clone();
        crate::raft::rt::spawn(async move {
            let mut ticks = crate::raft::rt::Ticker::new(interval);
            loop {
                ticks.tick().await;
                let Ok(running) = node.inner.running() else {
                    return;
                };
                let consensus = &running.consensus;
                let status = consensus.status();
                if status.leader != Some(node.inner.id) {
                    continue;
                }
                for learner in status.members.iter().filter(|m| m.is_learner) {
                    let promote = RemoteChange::Promote { id: learner.id };
                    match consensus
                        .change_local(promote, node.inner.request_timeout)
                        .await
                    {
                        Ok(_) => {
                            tracing::info!(member = %learner.id, "learner promoted automatically")
                        }
                        Err(e) if e.is_fatal() => return,
                        Err(e) => {
                            tracing::debug!(member = %learner.id, error = %e, "learner not promoted yet");
                        }
                    }
                }
            }
        });
    }

    async fn reconfigure(
        &self,
        id: MemberId,
        change: RemoteChange,
    ) -> Result<MemberChange, NodeError> {
        let running = self.inner.running()?;
        self.check_admin()?;
        let members = running
            .consensus
            .change(change, self.inner.request_timeout)
            .await?;
        Ok(MemberChange {
            member_id: id,
            members,
        })
    }

    /// Wait until this member knows a leader, up to `deadline`, and return it.
    ///
    /// # Errors
    /// [`NodeError::Timeout`], [`NodeError::Stopped`].
    pub async fn wait_for_leader(&self, deadline: Duration) -> Result<MemberId, NodeError> {
        let running = self.inner.running()?;
        let status = running
            .consensus
            .wait_until(deadline, |s| s.leader.is_some())
            .await?;
        status.leader.ok_or(NodeError::Timeout)
    }

    /// Wait until this member has applied at least `index`, up to `deadline`.
    ///
    /// # Errors
    /// [`NodeError::Timeout`], [`NodeError::Stopped`].
    pub async fn wait_for_applied(&self, index: u64, deadline: Duration) -> Result<(), NodeError> {
        let running = self.inner.running()?;
        running
            .consensus
            .wait_until(deadline, |s| s.applied_index >= index)
            .await
            .map(|_| ())
    }

    /// Stop the node: consensus stops, storage is released. Idempotent; always returns.
    pub async fn shutdown(&self) {
        let _serial = self.inner.stopping.lock().await;
        let running = self.inner.running.lock().take();
        let Some(running) = running else {
            return;
        };
        running.consensus.shutdown().await;
        self.inner.watches.close_all();
        // Keep one handle on the engine, wait until it is the last one (openraft's workers
        // drop theirs shortly after the core task stops), then drop it here, so the storage
        // is closed (its directory lock released) before shutdown returns.
        let engine = Arc::clone(running.store.engine());
        drop(running);
        let released = crate::raft::rt::timeout(SHUTDOWN_RELEASE_MAX, async {
            while Arc::strong_count(&engine) > 1 {
                crate::raft::rt::sleep(SHUTDOWN_POLL_INTERVAL).await;
            }
        })
        .await;
        if released.is_none() {
            tracing::warn!(
                holders = Arc::strong_count(&engine) - 1,
                "storage still in use after shutdown (an in-flight call holds it)"
            );
        }
        // A graceful stop leaves nothing buffered (the engine may hold writes in the process).
        if let Err(e) = engine.sync() {
            tracing::warn!(error = %e, "sync the storage at shutdown");
        }
        drop(engine);
    }
}

fn parse_urls(urls: &[&str]) -> Result<Vec<MemberUrl>, NodeError> {
    urls.iter()
        .map(|u| MemberUrl::parse(u))
        .collect::<Result<Vec<_>, _>>()
        .map_err(NodeError::Reconfig)
}

fn unexpected(applied: &Applied) -> NodeError {
    NodeError::Network {
        detail: format!("unexpected apply result {applied:?}"),
    }
}
