//! The crate's error type.

use keel_storage::StorageError;
use keel_types::LeaseId;

/// Result alias of keel-lease.
pub type Result<T, E = LeaseError> = std::result::Result<T, E>;

/// Everything that can go wrong in keel-lease.
///
/// Display texts mirror etcd's messages where a client may match on them
/// (etcd: server/etcdserver/api/v3rpc/rpctypes/error.go).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LeaseError {
    /// The lease does not exist (renew, revoke, time-to-live, attach or detach).
    #[error("etcdserver: requested lease not found")]
    NotFound {
        /// The id asked for.
        id: LeaseId,
    },
    /// A grant with a client-chosen id that is already in use.
    #[error("etcdserver: lease already exists")]
    AlreadyExists {
        /// The id asked for.
        id: LeaseId,
    },
    /// A grant with a TTL above [`crate::limits::TTL_MAX_SECS`].
    #[error("etcdserver: too large lease TTL")]
    TtlTooLarge {
        /// The TTL asked for.
        ttl_secs: i64,
        /// The limit.
        max_secs: i64,
    },
    /// A grant with a TTL of zero or less.
    ///
    /// Deviation from etcd: etcd silently raises such a TTL to the minimum; keel refuses it,
    /// as a non-positive TTL is always a client bug.
    #[error("etcdserver: lease TTL must be positive")]
    TtlNotPositive {
        /// The TTL asked for.
        ttl_secs: i64,
    },
    /// A grant when the lessor already holds [`crate::limits::LEASE_COUNT_MAX`] leases.
    #[error("etcdserver: too many leases")]
    TooManyLeases {
        /// The limit.
        max: usize,
    },
    /// A lessor configuration that is out of range.
    #[error("invalid lessor configuration: {detail}")]
    InvalidConfig {
        /// What is wrong.
        detail: String,
    },
    /// Storage failed, or a persisted lease record could not be decoded
    /// ([`StorageError::Corrupted`]).
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl LeaseError {
    /// Whether this error leaves the lessor's state unusable (storage failure or corruption)
    /// rather than rejecting one request.
    pub fn is_fatal(&self) -> bool {
        match self {
            LeaseError::Storage(e) => e.is_fatal(),
            _ => false,
        }
    }

    pub(crate) fn corrupted(what: &'static str, detail: impl Into<String>) -> Self {
        LeaseError::Storage(StorageError::Corrupted {
            what,
            detail: detail.into(),
        })
    }
}
