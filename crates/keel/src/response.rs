//! What node calls return: every response carries etcd's header.

use keel_types::{ClusterId, MemberId, Revision};

/// etcd's response header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResponseHeader {
    /// The cluster.
    pub cluster_id: ClusterId,
    /// The member that served the call.
    pub member_id: MemberId,
    /// The store revision the response reflects.
    pub revision: Revision,
    /// The Raft term the serving member knew when answering.
    pub raft_term: u64,
}

/// A response body with its header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response<T> {
    /// etcd's header.
    pub header: ResponseHeader,
    /// The call's result.
    pub body: T,
}

/// How a read is ordered relative to writes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ReadConsistency {
    /// Sees every write acknowledged before the read began (read index from the leader, wait
    /// for local apply, read locally). etcd's default.
    #[default]
    Linearizable,
    /// Reads local state immediately; may be stale on a lagging member.
    Serializable,
}

/// A member's view of the cluster and its own progress.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    /// etcd's header (revision = current store revision).
    pub header: ResponseHeader,
    /// The leader this member knows, if any.
    pub leader: Option<MemberId>,
    /// Index of the last entry in this member's log.
    pub raft_index: u64,
    /// Index of the last entry applied to this member's store.
    pub applied_index: u64,
    /// Index of the last entry this member knows is committed.
    pub committed_index: u64,
    /// Index of the last entry covered by this member's latest snapshot.
    pub snapshot_index: Option<u64>,
    /// Index of the last entry purged from this member's log.
    pub purged_index: Option<u64>,
    /// Bytes used by the storage engine.
    pub db_size_bytes: u64,
    /// Bytes of live data: what the engine would shrink to after a full compaction.
    pub db_in_use_bytes: u64,
    /// True when this member is a learner (non-voting).
    pub is_learner: bool,
    /// True while this member's lessor is primary: it leads, has applied its term's first
    /// entry, and its lease driver tracks lease deadlines (expires leases, checkpoints).
    pub lease_primary: bool,
}

/// One member of the cluster, as recorded in the replicated member records.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MemberStatus {
    /// Its id.
    pub id: MemberId,
    /// Its name.
    pub name: String,
    /// Its peer URLs (how other members reach it).
    pub peer_urls: Vec<String>,
    /// Its client URLs (empty for an embedded member).
    pub client_urls: Vec<String>,
    /// True for a learner (non-voting).
    pub is_learner: bool,
}

/// The answer to a membership call: the member it concerned and the members after the change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberChange {
    /// The member added, promoted, removed or updated.
    pub member_id: MemberId,
    /// The cluster's members once the change committed, by id.
    pub members: Vec<MemberStatus>,
}
