//! Bounds on the auth store, so that a careless or hostile admin cannot grow it without end.

/// Longest user or role name, in bytes.
pub const NAME_BYTES_MAX: usize = 256;
/// Most users.
pub const USERS_MAX: usize = 10_000;
/// Most roles.
pub const ROLES_MAX: usize = 10_000;
/// Most key-range permissions one role holds.
pub const PERMISSIONS_PER_ROLE_MAX: usize = 10_000;
/// Most roles granted to one user.
pub const ROLES_PER_USER_MAX: usize = 1_000;
/// Longest password bcrypt hashes without truncating it.
pub const PASSWORD_BYTES_MAX: usize = 72;
/// etcd's default bcrypt cost (`--bcrypt-cost`).
pub const BCRYPT_COST_DEFAULT: u32 = 10;
