//! The node's error type: API errors a caller handles, fatal errors that stop the node.

use keel_storage::StorageError;
use keel_types::{ClusterId, LeaseId, MemberId};

/// Everything a [`crate::Node`] call can fail with.
///
/// API errors (the request was refused or did not finish in time; the node keeps serving):
/// [`NodeError::Timeout`], [`NodeError::Rejected`], [`NodeError::Refused`],
/// [`NodeError::RequestTooLarge`], [`NodeError::TooManyRequests`], [`NodeError::Unreachable`], [`NodeError::Network`],
/// [`NodeError::Config`], [`NodeError::ClusterMismatch`], [`NodeError::Codec`],
/// [`NodeError::Reconfig`] (unless its error is fatal), [`NodeError::ReconfigRefused`],
/// [`NodeError::NotLeader`].
/// Fatal errors (the node stopped or its storage failed; see [`NodeError::is_fatal`]):
/// [`NodeError::Stopped`], [`NodeError::Storage`], [`NodeError::Raft`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// The call did not finish within its deadline (no quorum, no leader, slow apply). A
    /// timed-out write may still be applied later, as in etcd.
    #[error("etcdserver: request timed out")]
    Timeout,
    /// The store refused the request (compacted or future revision, key too large, ...),
    /// identically on every member.
    #[error(transparent)]
    Rejected(StorageError),
    /// The store refused the request for a reason without a typed form.
    #[error("etcdserver: request refused: {message}")]
    Refused {
        /// The store's message.
        message: String,
    },
    /// The request names a lease this cluster does not have (put with a lease, revoke,
    /// keep-alive, time-to-live).
    #[error("etcdserver: requested lease not found")]
    LeaseNotFound {
        /// The lease named.
        lease: LeaseId,
    },
    /// The lessor refused a grant (lease already exists, TTL too large or not positive, too
    /// many leases), with etcd's text.
    #[error(transparent)]
    Lease(keel_lease::LeaseError),
    /// This member has more committed entries waiting to be applied than
    /// [`crate::limits::APPLY_BACKLOG_ENTRIES_MAX`]: the write was not proposed; retry later.
    #[error("etcdserver: too many requests")]
    TooManyRequests {
        /// Committed entries not yet applied.
        backlog_entries: u64,
    },
    /// Authentication or authorization failed, or the auth store refused a change (etcd's
    /// texts: permission denied, invalid auth token, user name not found, ...).
    #[error(transparent)]
    Auth(keel_auth::AuthError),
    /// The NOSPACE alarm is raised: the replicated state exceeds the space quota and this
    /// write could grow it (see [`crate::NodeBuilder::quota_backend_bytes`]).
    #[error("etcdserver: mvcc: database space exceeded")]
    NoSpace,
    /// The encoded request exceeds [`crate::limits::REQUEST_BYTES_MAX`].
    #[error("etcdserver: request is too large")]
    RequestTooLarge {
        /// Encoded size.
        len_bytes: usize,
        /// The limit.
        max_bytes: usize,
    },
    /// The network could not deliver a message to the member: it was certainly not served
    /// (not sent, connection refused, receiver not started), so it is safe to resend.
    #[error("member {member} is unreachable")]
    Unreachable {
        /// The destination.
        member: MemberId,
    },
    /// A message was sent but the exchange failed (reply lost, connection reset, the
    /// receiver stopped while serving it). A write that fails so may or may not have been
    /// applied, like a [`NodeError::Timeout`]; it is not resent, since a second copy could
    /// apply it twice. A [`Network`](crate::Network) must answer
    /// [`NodeError::Unreachable`] only when the message was certainly not delivered.
    #[error("network: {detail}")]
    Network {
        /// What failed.
        detail: String,
    },
    /// The builder's configuration is invalid.
    #[error("invalid configuration: {detail}")]
    Config {
        /// What is wrong.
        detail: String,
    },
    /// The data directory belongs to another cluster.
    #[error("data belongs to cluster {found}, this node is configured for cluster {expected}")]
    ClusterMismatch {
        /// The cluster the builder's members describe.
        expected: ClusterId,
        /// The cluster recorded in the data.
        found: ClusterId,
    },
    /// A request, peer message or persisted record could not be encoded or decoded.
    #[error("codec: {what}: {detail}")]
    Codec {
        /// What was being encoded or decoded.
        what: &'static str,
        /// What is wrong with it.
        detail: String,
    },
    /// keel-membership refused a membership change or a join (etcd's texts, e.g.
    /// "etcdserver: re-configuration failed due to not enough started members"), or member
    /// records could not be read.
    #[error(transparent)]
    Reconfig(keel_membership::MembershipError),
    /// The leader's reconfiguration rules refused a membership change this member forwarded
    /// to it: the leader's [`NodeError::Reconfig`] text (etcd's), not retryable as is.
    #[error("{message}")]
    ReconfigRejected {
        /// The leader's message.
        message: String,
    },
    /// The consensus engine refused a membership change (e.g. another change is in progress).
    #[error("etcdserver: re-configuration refused: {detail}")]
    ReconfigRefused {
        /// openraft's reason.
        detail: String,
    },
    /// The call must be served by the leader and this member is not it.
    #[error("etcdserver: not leader")]
    NotLeader {
        /// The leader this member knows, if any.
        leader: Option<MemberId>,
    },
    /// The node was shut down (or never finished starting). A write in flight when shutdown
    /// began may or may not have been applied, as with etcd's "server stopped".
    #[error("etcdserver: server stopped")]
    Stopped,
    /// Storage failed; the store is poisoned and the node must be restarted.
    #[error("storage failed: {0}")]
    Storage(StorageError),
    /// The consensus engine stopped with an error.
    #[error("raft stopped: {detail}")]
    Raft {
        /// openraft's description.
        detail: String,
    },
}

impl NodeError {
    /// True for errors after which the node no longer serves (restart it).
    pub fn is_fatal(&self) -> bool {
        match self {
            NodeError::Stopped | NodeError::Storage(_) | NodeError::Raft { .. } => true,
            NodeError::Reconfig(e) => e.is_fatal(),
            NodeError::Lease(e) => e.is_fatal(),
            _ => false,
        }
    }

    /// A membership error (a refusal, or a storage failure while reading records).
    pub(crate) fn from_membership(e: keel_membership::MembershipError) -> Self {
        NodeError::Reconfig(e)
    }

    /// Sort a storage error into API (refused request) or fatal (storage failed).
    pub(crate) fn from_storage(e: StorageError) -> Self {
        if e.is_fatal() {
            NodeError::Storage(e)
        } else {
            NodeError::Rejected(e)
        }
    }
}

impl From<StorageError> for NodeError {
    fn from(e: StorageError) -> Self {
        NodeError::from_storage(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fatal_and_api_errors_are_separated() {
        assert!(NodeError::Stopped.is_fatal());
        assert!(!NodeError::Timeout.is_fatal());
        assert!(!NodeError::from(StorageError::EmptyKey).is_fatal());
        let io = StorageError::Io {
            op: "write",
            message: "disk full".into(),
        };
        assert!(NodeError::from(io).is_fatal());
        assert_eq!(
            NodeError::Timeout.to_string(),
            "etcdserver: request timed out"
        );
    }
}
