//! The auth store's refusals, with etcd's texts.

/// Why the auth store refused a request. The texts are etcd's (`rpctypes`), so clients that
/// match on them keep working.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub enum AuthError {
    /// `auth enable` without a `root` user.
    #[error("etcdserver: root user does not exist")]
    RootUserNotExist,
    /// `auth enable` while the `root` user lacks the `root` role.
    #[error("etcdserver: root user does not have root role")]
    RootRoleNotExist,
    /// The user already exists.
    #[error("etcdserver: user name already exists")]
    UserAlreadyExist,
    /// No user name was given (or, with auth enabled, no token: the caller is anonymous).
    #[error("etcdserver: user name is empty")]
    UserEmpty,
    /// The user does not exist.
    #[error("etcdserver: user name not found")]
    UserNotFound,
    /// The role already exists.
    #[error("etcdserver: role name already exists")]
    RoleAlreadyExist,
    /// The role does not exist.
    #[error("etcdserver: role name not found")]
    RoleNotFound,
    /// No role name was given.
    #[error("etcdserver: role name is empty")]
    RoleEmpty,
    /// Wrong user name or password (one message for both, so it tells an attacker nothing).
    #[error("etcdserver: authentication failed, invalid user ID or password")]
    AuthFailed,
    /// The caller's roles do not cover what the request touches.
    #[error("etcdserver: permission denied")]
    PermissionDenied,
    /// Revoking a role the user does not have.
    #[error("etcdserver: role is not granted to the user")]
    RoleNotGranted,
    /// Revoking a permission the role does not have.
    #[error("etcdserver: permission is not granted to the role")]
    PermissionNotGranted,
    /// An auth call that needs auth enabled (authenticate).
    #[error("etcdserver: authentication is not enabled")]
    AuthNotEnabled,
    /// The token is unknown, expired, or its user is gone.
    #[error("etcdserver: invalid auth token")]
    InvalidAuthToken,
    /// A change that would lock everyone out (deleting `root`, or its `root` role, while auth
    /// is enabled), or a malformed permission.
    #[error("etcdserver: invalid auth management")]
    InvalidAuthMgmt,
    /// The token was issued before the last change to users, roles or permissions:
    /// authenticate again (etcd's clients do so by themselves).
    #[error("etcdserver: revision of auth store is old")]
    AuthOldRevision,
    /// A password too long to hash (bcrypt reads at most 72 bytes; longer ones are refused
    /// rather than silently truncated).
    #[error("etcdserver: password is too long ({len_bytes} bytes, at most {max_bytes})")]
    PasswordTooLong {
        /// Bytes given.
        len_bytes: usize,
        /// The limit.
        max_bytes: usize,
    },
    /// A name longer than [`crate::limits::NAME_BYTES_MAX`].
    #[error("etcdserver: name is too long ({len_bytes} bytes, at most {max_bytes})")]
    NameTooLong {
        /// Bytes given.
        len_bytes: usize,
        /// The limit.
        max_bytes: usize,
    },
    /// More users, roles, or permissions per role than [`crate::limits`] allows.
    #[error("etcdserver: too many {what} (at most {max})")]
    TooMany {
        /// What is counted.
        what: String,
        /// The limit.
        max: usize,
    },
    /// Hashing failed (bad cost, no randomness).
    #[error("etcdserver: password hashing failed: {detail}")]
    Hash {
        /// The hasher's message.
        detail: String,
    },
    /// The JWT token settings are unusable (unknown signing method, a key that does not
    /// parse or does not match its pair, a zero TTL). A configuration error, raised before
    /// the node starts.
    #[error("auth: invalid JWT token settings: {detail}")]
    TokenKey {
        /// What is wrong.
        detail: String,
    },
    /// Reading or writing auth records failed (never replicated: it stops the node).
    #[error(transparent)]
    #[serde(skip)]
    Storage(#[from] keel_storage::StorageError),
}

/// Result of auth operations.
pub type Result<T, E = AuthError> = std::result::Result<T, E>;
