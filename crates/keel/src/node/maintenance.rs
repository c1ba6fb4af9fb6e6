//! Maintenance calls: per-member hash of the keyspace, leader transfer, state export.

use super::Node;
use crate::error::NodeError;
use crate::response::Response;
use keel_storage::mvcc::HashKv;
use keel_types::{MemberId, Revision};

/// A stream of the checksummed chunks of a member's replicated state (keyspace, leases,
/// member records) at one point in time: keel-storage's snapshot export. A blocking
/// iterator: read it from a blocking thread (e.g. `tokio::task::spawn_blocking`).
pub struct SnapshotExport {
    inner: keel_storage::snapshot::Export,
}

impl std::fmt::Debug for SnapshotExport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotExport").finish_non_exhaustive()
    }
}

impl Iterator for SnapshotExport {
    type Item = Result<Vec<u8>, NodeError>;
    fn next(&mut self) -> Option<Self::Item> {
        self.inner.next().map(|r| r.map_err(NodeError::from))
    }
}

impl Node {
    /// etcd HashKV on this member: a hash of every kept version at or below `revision`
    /// (`None`: the current revision). Members that applied the same entries agree on it.
    ///
    /// # Errors
    /// [`NodeError::Rejected`] for a compacted or future revision, storage failure,
    /// [`NodeError::Stopped`].
    pub async fn hash_kv(&self, revision: Option<Revision>) -> Result<Response<HashKv>, NodeError> {
        let running = self.inner.running()?;
        self.check_admin()?;
        let hash = running.store.hash_kv(revision).map_err(NodeError::from)?;
        let term = running.consensus.status().term;
        Ok(Response {
            header: self.header(running.store.current_revision()?, term),
            body: hash,
        })
    }

    /// etcd MoveLeader: hand leadership to voter `target` and wait until it leads. Must be
    /// called on the leader (etcd answers "etcdserver: not leader" elsewhere).
    ///
    /// # Errors
    /// [`NodeError::NotLeader`] on a non-leader; [`NodeError::Reconfig`] when `target` is not
    /// a voter of the cluster; [`NodeError::Timeout`] when it did not take over in time.
    pub async fn move_leader(&self, target: MemberId) -> Result<(), NodeError> {
        let running = self.inner.running()?;
        self.check_admin()?;
        let status = running.consensus.status();
        if status.leader != Some(self.id()) {
            return Err(NodeError::NotLeader {
                leader: status.leader,
            });
        }
        if target == self.id() {
            return Ok(());
        }
        let is_voter = status
            .members
            .iter()
            .any(|m| m.id == target && !m.is_learner);
        if !is_voter {
            return Err(NodeError::Reconfig(
                keel_membership::MembershipError::MemberNotFound { id: target },
            ));
        }
        running.consensus.transfer_leader(target).await?;
        running
            .consensus
            .wait_until(self.inner.request_timeout, |s| s.leader == Some(target))
            .await
            .map(|_| ())
    }

    /// Export this member's replicated state (etcd's Maintenance Snapshot): the chunks of
    /// keel-storage's snapshot format at the current applied point.
    ///
    /// # Errors
    /// Storage failure, [`NodeError::Stopped`].
    pub fn snapshot(&self) -> Result<SnapshotExport, NodeError> {
        let running = self.inner.running()?;
        self.check_admin()?;
        let inner = keel_storage::snapshot::export(
            running.store.engine(),
            &crate::raft::STATE_COLUMN_FAMILIES,
            crate::limits::SNAPSHOT_CHUNK_BYTES_MAX,
        )?;
        Ok(SnapshotExport { inner })
    }
}
