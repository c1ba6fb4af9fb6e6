//! The one table that turns keel's errors into gRPC statuses with etcd's codes and messages.
//!
//! etcd clients match on both the code (they retry `Unavailable`, surface `OutOfRange` as
//! "compacted", ...) and the message text, so both follow etcd's table
//! (etcd: api/v3rpc/rpctypes/error.go, server/etcdserver/api/v3rpc/util.go). Errors that have
//! no etcd counterpart keep keel's own text under the closest code.

use keel::{AuthError, NodeError};
use keel_lease::LeaseError;
use keel_membership::MembershipError;
use keel_storage::StorageError;
use tonic::{Code, Status};

/// etcd's message for a read or watch below the compaction revision.
pub const COMPACTED: &str = "etcdserver: mvcc: required revision has been compacted";
/// etcd's message for a read above the current revision.
pub const FUTURE_REVISION: &str = "etcdserver: mvcc: required revision is a future revision";
/// etcd's message for a request over the size limit.
pub const REQUEST_TOO_LARGE: &str = "etcdserver: request is too large";
/// etcd's message for a txn with too many operations.
pub const TOO_MANY_OPS: &str = "etcdserver: too many operations in txn request";
/// etcd's message for a txn that writes one key twice.
pub const DUPLICATE_KEY: &str = "etcdserver: duplicate key given in txn request";
/// etcd's message for an unknown lease.
pub const LEASE_NOT_FOUND: &str = "etcdserver: requested lease not found";
/// etcd's message when the server sheds load.
pub const TOO_MANY_REQUESTS: &str = "etcdserver: too many requests";
/// etcd's message when the NOSPACE alarm refuses a write.
pub const NO_SPACE: &str = "etcdserver: mvcc: database space exceeded";
/// etcd's message for an unknown member.
pub const MEMBER_NOT_FOUND: &str = "etcdserver: member not found";
/// etcd's message for member URLs that do not parse.
pub const MEMBER_BAD_URLS: &str = "etcdserver: given member URLs are invalid";

/// etcd's message for a call a learner does not serve.
pub const NOT_SUPPORTED_FOR_LEARNER: &str = "etcdserver: rpc not supported for learner";

/// etcd's refusal of a call on a learner: only Status and serializable ranges are served
/// (etcd: server/etcdserver/api/v3rpc/interceptor.go, `isRPCSupportedForLearner`).
///
/// # Errors
/// `FailedPrecondition` "etcdserver: rpc not supported for learner" when `node` is a learner.
pub fn refuse_on_learner(node: &keel::Node) -> Result<(), Status> {
    if node.is_learner() {
        return Err(Status::failed_precondition(NOT_SUPPORTED_FOR_LEARNER));
    }
    Ok(())
}

/// A request the API layer refuses before it reaches the node (etcd checks the same things in
/// its gRPC layer, etcd: server/etcdserver/api/v3rpc/key.go).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// A range, put or delete without a key.
    #[error("etcdserver: key is not provided")]
    EmptyKey,
    /// A sort order or sort target outside etcd's enums.
    #[error("etcdserver: invalid sort option")]
    InvalidSortOption,
    /// A txn (or a nested txn) with more compares or operations per branch than allowed.
    #[error("etcdserver: too many operations in txn request")]
    TooManyOps {
        /// Operations in the largest list.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// A membership request whose peer URLs are missing.
    #[error("etcdserver: given member URLs are invalid")]
    BadMemberUrls,
}

impl From<RequestError> for Status {
    fn from(e: RequestError) -> Self {
        Status::invalid_argument(e.to_string())
    }
}

/// The status an etcd client expects for `error`.
///
/// # Examples
/// ```
/// use keel_server::status::from_node_error;
/// let s = from_node_error(&keel::NodeError::Timeout);
/// assert_eq!(s.code(), tonic::Code::Unavailable);
/// assert_eq!(s.message(), "etcdserver: request timed out");
/// ```
pub fn from_node_error(error: &NodeError) -> Status {
    match error {
        NodeError::Timeout => Status::unavailable("etcdserver: request timed out"),
        NodeError::Rejected(e) | NodeError::Storage(e) => from_storage_error(e),
        NodeError::Refused { .. } => Status::invalid_argument(error.to_string()),
        NodeError::LeaseNotFound { .. } => Status::not_found(LEASE_NOT_FOUND),
        NodeError::Lease(e) => from_lease_error(e),
        NodeError::RequestTooLarge { .. } => Status::invalid_argument(REQUEST_TOO_LARGE),
        NodeError::TooManyRequests { .. } => Status::resource_exhausted(TOO_MANY_REQUESTS),
        NodeError::NoSpace => Status::resource_exhausted(NO_SPACE),
        NodeError::Unreachable { .. } | NodeError::Network { .. } => {
            Status::unavailable(error.to_string())
        }
        NodeError::ClusterMismatch { .. } => {
            Status::failed_precondition("etcdserver: cluster ID mismatch")
        }
        NodeError::Config { .. } | NodeError::Codec { .. } => Status::internal(error.to_string()),
        NodeError::Reconfig(e) => from_membership_error(e),
        // A change refused because another is in progress: transient, let the client retry.
        NodeError::ReconfigRefused { .. } => Status::unavailable(error.to_string()),
        // Refused by the leader's rules, forwarded: etcd's text, most of them
        // FailedPrecondition (as the leader would answer for most rule refusals).
        NodeError::ReconfigRejected { message } => Status::failed_precondition(message.clone()),
        NodeError::NotLeader { leader: Some(_) } => {
            Status::unavailable("etcdserver: leader changed")
        }
        NodeError::NotLeader { leader: None } => Status::unavailable("etcdserver: no leader"),
        NodeError::Stopped => Status::unavailable("etcdserver: server stopped"),
        NodeError::Raft { .. } => Status::unavailable(error.to_string()),
        NodeError::Auth(e) => from_auth_error(e),
        _ => Status::unknown(error.to_string()),
    }
}

/// The status for an auth refusal: etcd's codes (rpctypes), its texts from keel-auth.
pub fn from_auth_error(error: &AuthError) -> Status {
    use AuthError as A;
    let code = match error {
        A::RootUserNotExist
        | A::RootRoleNotExist
        | A::UserAlreadyExist
        | A::UserNotFound
        | A::RoleAlreadyExist
        | A::RoleNotFound
        | A::RoleNotGranted
        | A::PermissionNotGranted
        | A::AuthNotEnabled => Code::FailedPrecondition,
        A::PermissionDenied => Code::PermissionDenied,
        A::InvalidAuthToken => Code::Unauthenticated,
        A::TooMany { .. } => Code::ResourceExhausted,
        A::Storage(_) | A::Hash { .. } | A::TokenKey { .. } => Code::Internal,
        // Empty names, failed authentication, invalid management, stale tokens, oversized
        // names and passwords.
        _ => Code::InvalidArgument,
    };
    Status::new(code, error.to_string())
}

/// The status for a failed MoveLeader: etcd answers "not leader" on a member that does not
/// lead and "bad leader transferee" for a target that is not a voter
/// (etcd: server/etcdserver/server.go `MoveLeader`); everything else as [`from_node_error`].
pub fn from_move_leader_error(error: &NodeError) -> Status {
    match error {
        NodeError::NotLeader { .. } => Status::failed_precondition("etcdserver: not leader"),
        NodeError::Reconfig(MembershipError::MemberNotFound { .. }) => {
            Status::failed_precondition("etcdserver: bad leader transferee")
        }
        other => from_node_error(other),
    }
}

/// The status for a storage error (a refused request, or a failed store).
pub fn from_storage_error(error: &StorageError) -> Status {
    use StorageError as S;
    match error {
        S::EmptyKey | S::KeyNotFound | S::ValueProvided | S::LeaseProvided => {
            Status::invalid_argument(error.to_string())
        }
        S::KeyTooLarge { .. } | S::ValueTooLarge { .. } | S::RequestTooLarge { .. } => {
            Status::invalid_argument(REQUEST_TOO_LARGE)
        }
        S::Compacted { .. } => Status::out_of_range(COMPACTED),
        S::FutureRevision { .. } => Status::out_of_range(FUTURE_REVISION),
        S::NegativeRevision { .. } => Status::invalid_argument(error.to_string()),
        S::TooManyOps { .. } => Status::invalid_argument(TOO_MANY_OPS),
        S::DuplicateKey => Status::invalid_argument(DUPLICATE_KEY),
        // The watch could not be registered or its store went away: retry (elsewhere).
        S::Watch { .. } => Status::unavailable(error.to_string()),
        S::Corrupted { .. } | S::IncompleteInstall => Status::data_loss(error.to_string()),
        // A poisoned store refuses everything until restart: other members can serve.
        S::Poisoned { .. } | S::Io { .. } => Status::unavailable(error.to_string()),
        _ => Status::internal(error.to_string()),
    }
}

fn from_lease_error(error: &LeaseError) -> Status {
    match error {
        LeaseError::NotFound { .. } => Status::not_found(LEASE_NOT_FOUND),
        LeaseError::AlreadyExists { .. } => Status::failed_precondition(error.to_string()),
        LeaseError::TtlTooLarge { .. } => Status::out_of_range(error.to_string()),
        // Deviation from etcd: etcd raises a non-positive TTL to the minimum, keel refuses it.
        LeaseError::TtlNotPositive { .. } => Status::invalid_argument(error.to_string()),
        LeaseError::TooManyLeases { .. } => Status::resource_exhausted(error.to_string()),
        LeaseError::Storage(e) => from_storage_error(e),
        _ => Status::internal(error.to_string()),
    }
}

fn from_membership_error(error: &MembershipError) -> Status {
    use MembershipError as M;
    let code = match error {
        // etcd reports a removed id as an unknown member (etcd: api/v3rpc/util.go).
        M::MemberNotFound { .. } | M::IdRemoved { .. } => {
            return Status::not_found(MEMBER_NOT_FOUND)
        }
        M::BadMemberUrls { .. }
        | M::UrlScheme { .. }
        | M::UrlHostPort { .. }
        | M::UrlPath { .. }
        | M::NoUrls => return Status::invalid_argument(MEMBER_BAD_URLS),
        M::ClusterIdMismatch { .. } | M::DataDirClusterMismatch { .. } => {
            return Status::failed_precondition("etcdserver: cluster ID mismatch")
        }
        M::Storage(e) => return from_storage_error(e),
        M::MemberExists { .. }
        | M::PeerUrlExists { .. }
        | M::MemberNotLearner { .. }
        | M::LearnerNotReady { .. }
        | M::NotAVoter { .. }
        | M::TooManyLearners { .. }
        | M::TooManyMembers { .. }
        | M::TooManyRemoved { .. }
        | M::NotEnoughStartedMembers { .. } => Code::FailedPrecondition,
        M::InvalidName { .. } | M::TooLong { .. } | M::TooMany { .. } => Code::InvalidArgument,
        M::Corrupted { .. } => Code::DataLoss,
        _ => Code::Internal,
    };
    Status::new(code, error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_types::{LeaseId, MemberId, Revision};

    fn check(error: NodeError, code: Code, message: &str) {
        let s = from_node_error(&error);
        assert_eq!((s.code(), s.message()), (code, message), "{error:?}");
    }

    #[test]
    fn etcd_codes_and_messages() {
        let rev = Revision::new(5);
        let rejected = NodeError::Rejected;
        check(
            rejected(StorageError::Compacted {
                requested: rev,
                compacted: rev,
            }),
            Code::OutOfRange,
            COMPACTED,
        );
        check(
            rejected(StorageError::FutureRevision {
                requested: rev,
                current: rev,
            }),
            Code::OutOfRange,
            FUTURE_REVISION,
        );
        check(
            NodeError::LeaseNotFound {
                lease: LeaseId::new(7).unwrap(),
            },
            Code::NotFound,
            LEASE_NOT_FOUND,
        );
        check(
            NodeError::NotLeader {
                leader: Some(MemberId::new(2)),
            },
            Code::Unavailable,
            "etcdserver: leader changed",
        );
        check(
            NodeError::NotLeader { leader: None },
            Code::Unavailable,
            "etcdserver: no leader",
        );
        check(
            NodeError::RequestTooLarge {
                len_bytes: 9,
                max_bytes: 1,
            },
            Code::InvalidArgument,
            REQUEST_TOO_LARGE,
        );
        check(
            NodeError::TooManyRequests {
                backlog_entries: 5001,
            },
            Code::ResourceExhausted,
            TOO_MANY_REQUESTS,
        );
        check(NodeError::NoSpace, Code::ResourceExhausted, NO_SPACE);
        check(
            rejected(StorageError::TooManyOps { count: 2, max: 1 }),
            Code::InvalidArgument,
            TOO_MANY_OPS,
        );
        check(
            rejected(StorageError::DuplicateKey),
            Code::InvalidArgument,
            DUPLICATE_KEY,
        );
        check(
            rejected(StorageError::KeyNotFound),
            Code::InvalidArgument,
            "etcdserver: key not found",
        );
    }

    #[test]
    fn membership_codes_and_messages() {
        // A rules refusal forwarded by the leader keeps etcd's text and code.
        let not_enough = "etcdserver: re-configuration failed due to not enough started members";
        let status = from_node_error(&NodeError::ReconfigRejected {
            message: not_enough.into(),
        });
        assert_eq!(
            (status.code(), status.message()),
            (Code::FailedPrecondition, not_enough)
        );
        let id = MemberId::new(3);
        let reconfig = NodeError::Reconfig;
        check(
            reconfig(MembershipError::PeerUrlExists { url: "x".into() }),
            Code::FailedPrecondition,
            "etcdserver: Peer URLs already exists",
        );
        check(
            reconfig(MembershipError::IdRemoved { id }),
            Code::NotFound,
            MEMBER_NOT_FOUND,
        );
        check(
            reconfig(MembershipError::LearnerNotReady {
                id,
                learner_match: None,
                leader_match: 10,
            }),
            Code::FailedPrecondition,
            "etcdserver: can only promote a learner member which is in sync with leader",
        );
        check(
            reconfig(MembershipError::NoUrls),
            Code::InvalidArgument,
            MEMBER_BAD_URLS,
        );
        let s = from_move_leader_error(&NodeError::NotLeader { leader: None });
        assert_eq!(
            (s.code(), s.message()),
            (Code::FailedPrecondition, "etcdserver: not leader")
        );
    }
}
