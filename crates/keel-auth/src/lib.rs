//! keel's authentication and role-based access control, with etcd's model and rules.
//!
//! * Users have a salted bcrypt password hash ([`hash_password`]) and roles; roles have
//!   key-range [`Permission`]s (read, write, readwrite); the `root` role grants everything.
//! * [`AuthState`] is a pure state machine: every member applies the same changes in log
//!   order (the node replicates them through Raft) and answers permission checks from it.
//! * [`AuthStore`] persists it in its own column family ([`AUTH_CF`]) inside the caller's
//!   write batch, so an auth change commits atomically with its applied-log marker.
//!
//! This crate knows nothing of Raft, tokens or gRPC: the node issues and checks tokens and
//! decides which requests need which [`Access`].

mod error;
pub mod limits;
mod model;
mod password;
mod state;
mod store;

pub use error::{AuthError, Result};
pub use model::{Access, Permission, PermissionKind, Role, User, ROOT};
pub use password::{check_hash, hash_password, verify_password};
pub use state::{AuthState, Change};
pub use store::{AuthStore, AUTH_CF};
