//! The replicated lease requests and their results, as they cross the log and the network.

use crate::error::NodeError;
use keel_lease::{Checkpoint, Expired, LeaseError};
use keel_types::{LeaseId, Revision};
use serde::{Deserialize, Serialize};

/// A replicated lease operation (the payload of [`crate::Request::Lease`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum LeaseRequest {
    /// etcd LeaseGrant: a lease with `ttl_secs`, under `id` or one the lessor chooses.
    Grant {
        /// The id the client chose, if any.
        id: Option<LeaseId>,
        /// The requested TTL in seconds (raised to the minimum TTL).
        ttl_secs: i64,
    },
    /// etcd LeaseRevoke: drop the lease and delete its keys in one revision.
    Revoke {
        /// The lease.
        id: LeaseId,
    },
    /// Keep-alives, one renew per id, acknowledged once applied.
    ///
    /// Deviation from etcd: renews are replicated (see keel-lease's crate docs).
    Renew {
        /// The leases to renew.
        ids: Vec<LeaseId>,
    },
    /// Remaining-TTL checkpoints from the leader's lessor.
    Checkpoint {
        /// The checkpoints, in the order the lessor emitted them.
        checkpoints: Vec<LeaseCheckpoint>,
    },
    /// Leases the leader's lessor found expired: revoke each unless renewed since.
    RevokeExpired {
        /// The expired leases.
        expired: Vec<LeaseExpired>,
    },
}

/// keel-lease's [`Checkpoint`] in replicated form.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseCheckpoint {
    /// The lease.
    pub id: LeaseId,
    /// The renew count it was computed under.
    pub renew_count: u32,
    /// The remaining TTL in milliseconds.
    pub remaining_ms: u64,
}

/// keel-lease's [`Expired`] in replicated form.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseExpired {
    /// The lease.
    pub id: LeaseId,
    /// The renew count when the expiry was detected.
    pub renew_count: u32,
}

impl From<&Checkpoint> for LeaseCheckpoint {
    fn from(c: &Checkpoint) -> Self {
        LeaseCheckpoint {
            id: c.id,
            renew_count: c.renew_count.get(),
            remaining_ms: u64::try_from(c.remaining.as_millis()).unwrap_or(u64::MAX),
        }
    }
}

impl From<&Expired> for LeaseExpired {
    fn from(e: &Expired) -> Self {
        LeaseExpired {
            id: e.id,
            renew_count: e.renew_count.get(),
        }
    }
}

impl std::fmt::Display for LeaseRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LeaseRequest::Grant { id, ttl_secs } => write!(f, "lease_grant({id:?}, {ttl_secs}s)"),
            LeaseRequest::Revoke { id } => write!(f, "lease_revoke({id})"),
            LeaseRequest::Renew { ids } => write!(f, "lease_renew({} leases)", ids.len()),
            LeaseRequest::Checkpoint { checkpoints } => {
                write!(f, "lease_checkpoint({} leases)", checkpoints.len())
            }
            LeaseRequest::RevokeExpired { expired } => {
                write!(f, "lease_revoke_expired({} leases)", expired.len())
            }
        }
    }
}

/// The result of applying a [`LeaseRequest`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum LeaseApplied {
    /// A grant: the id and the granted TTL.
    Granted { id: LeaseId, ttl_secs: i64 },
    /// A revoke, its keys deleted at `revision`.
    Revoked { revision: Revision },
    /// Renews: the TTL of each lease in request order (`None`: not found).
    Renewed { ttls: Vec<Option<i64>> },
    /// A checkpoint or expiry batch (no client waits for it).
    Internal,
}

/// A lease refusal, in a form that crosses the network.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum LeaseRejection {
    NotFound { id: LeaseId },
    AlreadyExists { id: LeaseId },
    TtlTooLarge { ttl_secs: i64, max_secs: i64 },
    TtlNotPositive { ttl_secs: i64 },
    TooManyLeases { max: usize },
    Other { message: String },
}

impl From<LeaseError> for LeaseRejection {
    fn from(e: LeaseError) -> Self {
        match e {
            LeaseError::NotFound { id } => LeaseRejection::NotFound { id },
            LeaseError::AlreadyExists { id } => LeaseRejection::AlreadyExists { id },
            LeaseError::TtlTooLarge { ttl_secs, max_secs } => {
                LeaseRejection::TtlTooLarge { ttl_secs, max_secs }
            }
            LeaseError::TtlNotPositive { ttl_secs } => LeaseRejection::TtlNotPositive { ttl_secs },
            LeaseError::TooManyLeases { max } => LeaseRejection::TooManyLeases { max },
            other => LeaseRejection::Other {
                message: other.to_string(),
            },
        }
    }
}

impl From<LeaseRejection> for NodeError {
    fn from(r: LeaseRejection) -> Self {
        let e = match r {
            LeaseRejection::NotFound { id } => return NodeError::LeaseNotFound { lease: id },
            LeaseRejection::AlreadyExists { id } => LeaseError::AlreadyExists { id },
            LeaseRejection::TtlTooLarge { ttl_secs, max_secs } => {
                LeaseError::TtlTooLarge { ttl_secs, max_secs }
            }
            LeaseRejection::TtlNotPositive { ttl_secs } => LeaseError::TtlNotPositive { ttl_secs },
            LeaseRejection::TooManyLeases { max } => LeaseError::TooManyLeases { max },
            LeaseRejection::Other { message } => return NodeError::Refused { message },
        };
        NodeError::Lease(e)
    }
}
