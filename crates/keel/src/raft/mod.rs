//! Everything that touches openraft: the type configuration, the log store and state machine
//! adapters onto keel-storage, the network adapter and the consensus handle the node uses.
//! Nothing outside this module names an openraft type, so an openraft upgrade touches only
//! this folder.

mod consensus;
#[cfg(all(test, feature = "rocksdb"))]
mod force_tests;
mod forward;
mod forward_batch;
mod lease_driver;
mod log_store;
mod log_sync;
mod membership;
mod memory_network;
mod network;
mod read_batch;
#[cfg(test)]
mod receive_tests;
mod recent_entries;
pub(crate) mod rt;
mod state_machine;
#[cfg(test)]
mod storage_suite;

pub(crate) use consensus::META_ADOPTED_STATE;
pub(crate) use consensus::{Consensus, ConsensusConfig, RaftStatus};
pub(crate) use forward::RemoteChange;
pub use membership::cluster_members;
pub(crate) use membership::{fetch_members, member_list, verify_added};
pub use memory_network::InMemoryNetwork;
pub use network::{Network, PeerHandler, PeerMessage, PeerReply, SendFuture};
pub(crate) use network::{NoNetwork, PeerService};
pub use rt::RuntimeClock;
pub(crate) use state_machine::STATE_COLUMN_FAMILIES;

/// For `--force-new-cluster`, before the log is dropped: apply the entries the log holds up
/// to its persisted commit index that the state machine has not applied yet (see
/// `StateMachine::apply_committed_offline`); returns how many.
///
/// # Errors
/// [`crate::NodeError::Raft`] for an undecodable or missing committed entry, a storage
/// failure while applying.
pub(crate) fn apply_committed_offline(
    store: &std::sync::Arc<keel_storage::MvccStore>,
    log: &keel_storage::DurableLog,
    cluster_id: keel_types::ClusterId,
    lease: &std::sync::Arc<crate::lease::LeaseState>,
    metrics: &std::sync::Arc<crate::metrics::Metrics>,
    auth: &std::sync::Arc<crate::auth::AuthGate>,
) -> Result<u64, crate::NodeError> {
    use std::sync::Arc;
    let snapshots = Arc::new(keel_storage::snapshot_store::SnapshotStore::open(
        Arc::clone(store.engine()),
    )?);
    let machine = state_machine::StateMachine::new(
        Arc::clone(store),
        cluster_id,
        Arc::new(|| {}),
        Arc::clone(lease),
        Arc::clone(metrics),
        Arc::clone(auth),
        snapshots,
    );
    machine
        .apply_committed_offline(log)
        .map_err(|e| crate::NodeError::Raft {
            detail: format!("apply the committed log before forcing a new cluster: {e}"),
        })
}

use crate::request::{Applied, Request};

/// The async runtime: tokio, or openraft's deterministic simulation runtime with the `sim`
/// feature. Everything the node spawns or times goes through it (see [`rt`]).
#[cfg(not(feature = "sim"))]
type Runtime = openraft::TokioRuntime;
#[cfg(feature = "sim")]
type Runtime = openraft_rt_sim::SimRuntime;

openraft::declare_raft_types!(
    /// keel's openraft type configuration: node ids are member ids, a node's data is its
    /// [`MemberNode`] record, entries carry a [`Request`] and applying one yields an [`Applied`].
    /// Leader ids are standard Raft's, as etcd's: at most one leader per term, and a log id is
    /// (term, index). openraft's default ("advanced") ids order two candidates of one term by
    /// node id, so a member that had voted for a higher-id candidate rejects the elected leader
    /// of that term and makes it step down: keel-sim seed 956 (a restarted member holding a
    /// stale vote) lost its leader that way several times in a row.
    pub(crate) TypeConfig:
        D = Request,
        R = Applied,
        NodeId = u64,
        Node = MemberNode,
        AsyncRuntime = Runtime,
        LeaderId = openraft::impls::leader_id_std::LeaderId<u64, u64>,
);

/// What openraft's membership carries for each member: its name, peer URLs and client URLs
/// (empty until the member publishes them). Member records in keel-membership's `MEMBERS_CF`
/// are derived from these (see `state_machine`), so the two never disagree.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct MemberNode {
    pub(crate) name: String,
    pub(crate) peer_urls: Vec<String>,
    pub(crate) client_urls: Vec<String>,
}

impl std::fmt::Display for MemberNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}={}", self.name, self.peer_urls.join(","))
    }
}

type LogId = openraft::alias::LogIdOf<TypeConfig>;
type StoredMembership = openraft::alias::StoredMembershipOf<TypeConfig>;
type Entry = openraft::alias::EntryOf<TypeConfig>;
type Vote = openraft::alias::VoteOf<TypeConfig>;
type SnapshotMeta = openraft::alias::SnapshotMetaOf<TypeConfig>;
type Raft = openraft::Raft<TypeConfig, state_machine::StateMachine>;

/// The term of the leader that proposed `log_id`.
fn term_of(log_id: &LogId) -> u64 {
    log_id.leader_id.term
}

/// An I/O error for openraft from a storage error.
fn io_err(e: impl std::error::Error + Send + Sync + 'static) -> std::io::Error {
    std::io::Error::other(e)
}
