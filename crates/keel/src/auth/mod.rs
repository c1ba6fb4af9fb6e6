//! Authentication and RBAC in the node: the replicated auth requests, the tokens, and the
//! checks that decide what a caller may do.
//!
//! * Users, roles and permissions are keel-auth's [`AuthState`], changed only by replicated
//!   [`AuthRequest`]s, so every member holds the same state at the same log index. A
//!   password is hashed where the request arrives; only the salted hash is replicated.
//! * [`crate::Node::authenticate`] checks a password on the member that receives it, then
//!   replicates the token's SHA-256 digest ([`AuthRequest::IssueToken`]); every member keeps
//!   the digests in memory, so the token is valid on any member and the log never holds a
//!   usable token. Tokens expire after an idle TTL (etcd's simple tokens: 5 minutes, renewed
//!   by each use) and are lost at restart, as in etcd: clients authenticate again.
//! * Writes from a checked handle ([`crate::Node::with_token`]) are replicated inside
//!   [`Request::Checked`] with the caller's name and token revision, and are checked when
//!   applied, against the auth state at that point of the log: every member decides the same,
//!   and a permission revoked before the write is applied denies it. Reads are checked on the
//!   serving member after its read barrier.
//!
//! Invariants:
//! 1. A refused auth request, or a checked request denied, changes nothing but the applied
//!    marker (the state machine's invariant 3).
//! 2. The auth state in memory matches its column family after every applied entry (changes
//!    are staged into the entry's batch, as the lessor's are).
//! 3. The token table is member-local and never persisted: it holds digests, users and
//!    expiry instants of this member's clock.

mod jwt;
pub use jwt::JwtConfig;

use crate::lease::LeaseState;
use crate::request::{Applied, Request};
use bytes::Bytes;
use keel_auth::{Access, AuthError, AuthState, AuthStore, Permission};
use keel_storage::engine::Engine;
use keel_storage::mvcc::{RequestOp, TxnRequest, WriteTxn};
use keel_types::{Clock, KeyRange};
use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// Most live tokens a member keeps; past it the one closest to expiry is dropped.
pub const TOKENS_MAX: usize = 100_000;

/// Who a replicated request acts for: the user named by a token, and the auth revision the
/// token was issued at.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Caller {
    /// The user.
    pub user: String,
    /// The auth revision at authentication.
    pub revision: u64,
}

/// A replicated change to users, roles, permissions or tokens.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum AuthRequest {
    /// etcd AuthEnable.
    Enable,
    /// etcd AuthDisable.
    Disable,
    /// etcd UserAdd (the password already hashed; `None`: no password).
    UserAdd {
        /// The user.
        name: String,
        /// bcrypt hash.
        password_hash: Option<String>,
    },
    /// etcd UserDelete.
    UserDelete {
        /// The user.
        name: String,
    },
    /// etcd UserChangePassword.
    UserChangePassword {
        /// The user.
        name: String,
        /// bcrypt hash.
        password_hash: Option<String>,
    },
    /// etcd UserGrantRole.
    UserGrantRole {
        /// The user.
        user: String,
        /// The role.
        role: String,
    },
    /// etcd UserRevokeRole.
    UserRevokeRole {
        /// The user.
        user: String,
        /// The role.
        role: String,
    },
    /// etcd RoleAdd.
    RoleAdd {
        /// The role.
        name: String,
    },
    /// etcd RoleDelete.
    RoleDelete {
        /// The role.
        name: String,
    },
    /// etcd RoleGrantPermission.
    RoleGrantPermission {
        /// The role.
        role: String,
        /// The permission.
        permission: Permission,
    },
    /// etcd RoleRevokePermission.
    RoleRevokePermission {
        /// The role.
        role: String,
        /// The exact range of the permission to drop.
        range: KeyRange,
    },
    /// A token for `user` was issued: every member learns its digest.
    IssueToken {
        /// The user (checked again when applied: it must still exist).
        user: String,
        /// SHA-256 of the token.
        digest: [u8; 32],
        /// The auth revision at which the password was checked: refused when applied if
        /// users or roles changed since (a password changed meanwhile must not yield a token
        /// for the old one).
        revision: u64,
    },
}

impl std::fmt::Display for AuthRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the hashes or digests.
        match self {
            AuthRequest::Enable => write!(f, "auth_enable"),
            AuthRequest::Disable => write!(f, "auth_disable"),
            AuthRequest::UserAdd { name, .. } => write!(f, "user_add({name})"),
            AuthRequest::UserDelete { name } => write!(f, "user_delete({name})"),
            AuthRequest::UserChangePassword { name, .. } => {
                write!(f, "user_change_password({name})")
            }
            AuthRequest::UserGrantRole { user, role } => {
                write!(f, "user_grant_role({user}, {role})")
            }
            AuthRequest::UserRevokeRole { user, role } => {
                write!(f, "user_revoke_role({user}, {role})")
            }
            AuthRequest::RoleAdd { name } => write!(f, "role_add({name})"),
            AuthRequest::RoleDelete { name } => write!(f, "role_delete({name})"),
            AuthRequest::RoleGrantPermission { role, .. } => {
                write!(f, "role_grant_permission({role})")
            }
            AuthRequest::RoleRevokePermission { role, .. } => {
                write!(f, "role_revoke_permission({role})")
            }
            AuthRequest::IssueToken { user, .. } => write!(f, "issue_token({user})"),
        }
    }
}

/// Who a [`crate::Node`] handle acts for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Principal {
    /// The host process: nothing is checked.
    Trusted,
    /// A client without a token: refused everything once auth is enabled.
    Anonymous,
    /// A client with a valid token.
    User(Caller),
}

impl Principal {
    pub(crate) fn caller(&self) -> Option<&Caller> {
        match self {
            Principal::User(c) => Some(c),
            Principal::Trusted | Principal::Anonymous => None,
        }
    }
}

struct Token {
    user: String,
    revision: u64,
    expires: Duration,
}

/// The auth state of one node, shared by the state machine (which applies) and the node's
/// calls (which check).
///
/// Locks: `state` and `tokens` are never held across an `.await` nor together with the
/// lessor's lock taken after them... except in [`AuthGate::authorize`], which reads the
/// lessor while holding `state` for reading; the lessor never takes `state`.
pub(crate) struct AuthGate {
    state: RwLock<AuthState>,
    store: AuthStore,
    tokens: Mutex<HashMap<[u8; 32], Token>>,
    clock: Arc<dyn Clock>,
    token_ttl: Duration,
    /// JWT tokens instead of simple ones.
    pub(crate) jwt: Option<JwtConfig>,
    pub(crate) bcrypt_cost: u32,
    /// One password check at a time: a brute-force client queues behind its own attempts
    /// (bcrypt is slow on purpose) instead of taking every core.
    pub(crate) verify_gate: tokio::sync::Semaphore,
    /// A hash of a random password at the configured cost, made on first need: what an
    /// unknown user's password is checked against.
    decoy: std::sync::OnceLock<String>,
}

impl std::fmt::Debug for AuthGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthGate")
            .field("token_ttl", &self.token_ttl)
            .finish_non_exhaustive()
    }
}

/// SHA-256 of a token (what is replicated and kept).
pub(crate) fn digest(token: &str) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(token.as_bytes()).into()
}

/// A new random token: 32 bytes from the OS, hex.
pub(crate) fn new_token() -> Result<String, AuthError> {
    let mut raw = [0u8; 32];
    getrandom::fill(&mut raw).map_err(|e| AuthError::Hash {
        detail: format!("no randomness for a token: {e}"),
    })?;
    Ok(raw.iter().map(|b| format!("{b:02x}")).collect())
}

impl AuthGate {
    /// Load the auth state from `engine`'s auth column family.
    pub(crate) fn open(
        engine: &dyn Engine,
        clock: Arc<dyn Clock>,
        config: crate::AuthConfig,
    ) -> Result<Self, AuthError> {
        let crate::AuthConfig {
            token_ttl,
            bcrypt_cost,
            jwt,
        } = config;
        let store = AuthStore::open(engine)?;
        let state = store.load(&*engine.view()?)?;
        Ok(AuthGate {
            state: RwLock::new(state),
            store,
            tokens: Mutex::new(HashMap::new()),
            clock,
            token_ttl,
            jwt,
            bcrypt_cost,
            verify_gate: tokio::sync::Semaphore::new(1),
            decoy: std::sync::OnceLock::new(),
        })
    }

    /// The decoy hash (see the field), made on a blocking thread the first time.
    pub(crate) async fn decoy_hash(&self) -> Result<String, AuthError> {
        if let Some(hash) = self.decoy.get() {
            return Ok(hash.clone());
        }
        let secret = new_token()?;
        let cost = self.bcrypt_cost;
        let hash = crate::raft::rt::blocking(move || keel_auth::hash_password(&secret[..32], cost))
            .await
            .map_err(|e| AuthError::Hash {
                detail: e.to_string(),
            })??;
        Ok(self.decoy.get_or_init(|| hash).clone())
    }

    /// Replace the state with the one persisted in `engine` (after a snapshot install).
    pub(crate) fn reload(&self, engine: &dyn Engine) -> Result<(), AuthError> {
        let state = self.store.load(&*engine.view()?)?;
        *self.state.write() = state;
        Ok(())
    }

    /// Run `f` on the state (never across an `.await`).
    pub(crate) fn with_state<T>(&self, f: impl FnOnce(&AuthState) -> T) -> T {
        f(&self.state.read())
    }

    /// Stage the state's pending changes into the entry's batch (invariant 2).
    pub(crate) fn stage(&self, txn: &mut WriteTxn<'_>) -> Result<(), AuthError> {
        let mut state = self.state.write();
        self.store.stage(txn.batch(), &mut state)
    }

    /// Apply one auth request (invariant 1: a refusal changes nothing).
    pub(crate) fn apply(&self, request: &AuthRequest) -> Result<Applied, AuthError> {
        let mut state = self.state.write();
        match request {
            AuthRequest::Enable => state.enable()?,
            AuthRequest::Disable => state.disable(),
            AuthRequest::UserAdd {
                name,
                password_hash,
            } => state.user_add(name, password_hash.clone())?,
            AuthRequest::UserDelete { name } => {
                state.user_delete(name)?;
                self.drop_tokens_of(name);
            }
            AuthRequest::UserChangePassword {
                name,
                password_hash,
            } => {
                state.user_change_password(name, password_hash.clone())?;
                self.drop_tokens_of(name);
            }
            AuthRequest::UserGrantRole { user, role } => state.user_grant_role(user, role)?,
            AuthRequest::UserRevokeRole { user, role } => state.user_revoke_role(user, role)?,
            AuthRequest::RoleAdd { name } => state.role_add(name)?,
            AuthRequest::RoleDelete { name } => state.role_delete(name)?,
            AuthRequest::RoleGrantPermission { role, permission } => {
                state.role_grant_permission(role, permission.clone())?;
            }
            AuthRequest::RoleRevokePermission { role, range } => {
                state.role_revoke_permission(role, range)?;
            }
            AuthRequest::IssueToken {
                user,
                digest,
                revision,
            } => {
                if !state.is_enabled() {
                    return Err(AuthError::AuthNotEnabled);
                }
                if state.user(user).is_none() {
                    return Err(AuthError::AuthFailed);
                }
                if state.revision() != *revision {
                    return Err(AuthError::AuthOldRevision);
                }
                self.insert_token(*digest, user.clone(), *revision);
            }
        }
        Ok(Applied::Auth {
            revision: state.revision(),
        })
    }

    fn insert_token(&self, digest: [u8; 32], user: String, revision: u64) {
        let now = self.clock.now();
        let mut tokens = self.tokens.lock();
        if tokens.len() >= TOKENS_MAX {
            tokens.retain(|_, t| t.expires > now);
        }
        if tokens.len() >= TOKENS_MAX {
            if let Some(oldest) = tokens
                .iter()
                .min_by_key(|(_, t)| t.expires)
                .map(|(d, _)| *d)
            {
                tokens.remove(&oldest);
            }
        }
        let expires = now + self.token_ttl;
        tokens.insert(
            digest,
            Token {
                user,
                revision,
                expires,
            },
        );
    }

    fn drop_tokens_of(&self, user: &str) {
        self.tokens.lock().retain(|_, t| t.user != user);
    }

    /// The principal a request acts for: a live token names its user; no token is
    /// anonymous; an unknown token is refused while auth is enabled and ignored otherwise (as
    /// etcd does).
    ///
    /// # Errors
    /// [`AuthError::InvalidAuthToken`]: unknown, expired, or its user is gone.
    pub(crate) fn resolve(&self, token: Option<&str>) -> Result<Principal, AuthError> {
        let Some(token) = token.filter(|t| !t.is_empty()) else {
            return Ok(Principal::Anonymous);
        };
        if let Some(jwt) = &self.jwt {
            return self.resolve_jwt(jwt, token);
        }
        // Lock order: `state` is never taken while `tokens` is held (apply takes `tokens`
        // while holding `state`).
        let enabled = self.state.read().is_enabled();
        let refused = if enabled {
            Err(AuthError::InvalidAuthToken)
        } else {
            Ok(Principal::Anonymous)
        };
        let now = self.clock.now();
        let mut tokens = self.tokens.lock();
        let key = digest(token);
        let Some(entry) = tokens.get_mut(&key) else {
            return refused;
        };
        if entry.expires <= now {
            tokens.remove(&key);
            return refused;
        }
        entry.expires = now + self.token_ttl;
        let caller = Caller {
            user: entry.user.clone(),
            revision: entry.revision,
        };
        drop(tokens);
        if self.state.read().user(&caller.user).is_none() {
            return Err(AuthError::InvalidAuthToken);
        }
        Ok(Principal::User(caller))
    }

    /// A JWT names its user and revision itself; only its signature and expiry are checked
    /// (the revision is checked by each request, as for simple tokens).
    fn resolve_jwt(&self, jwt: &JwtConfig, token: &str) -> Result<Principal, AuthError> {
        let state = self.state.read();
        match jwt.verify(token) {
            Ok((user, revision)) if state.is_enabled() && state.user(&user).is_some() => {
                Ok(Principal::User(Caller { user, revision }))
            }
            _ if !state.is_enabled() => Ok(Principal::Anonymous),
            _ => Err(AuthError::InvalidAuthToken),
        }
    }

    /// The caller behind a checked principal, with its token still current; `None` with
    /// auth disabled (nothing is checked).
    fn current<'a>(
        state: &AuthState,
        principal: &'a Principal,
    ) -> Result<Option<&'a Caller>, AuthError> {
        if !state.is_enabled() || *principal == Principal::Trusted {
            return Ok(None);
        }
        let caller = principal.caller().ok_or(AuthError::UserEmpty)?;
        state.check_revision(caller.revision)?;
        Ok(Some(caller))
    }

    /// Whether `principal` may do `access` on `range` (reads, watches).
    pub(crate) fn check(
        &self,
        principal: &Principal,
        range: &KeyRange,
        access: Access,
    ) -> Result<(), AuthError> {
        let state = self.state.read();
        match Self::current(&state, principal)? {
            None => Ok(()),
            Some(caller) => state.check(&caller.user, range, access),
        }
    }

    /// Whether `principal` may administer (root).
    pub(crate) fn check_admin(&self, principal: &Principal) -> Result<(), AuthError> {
        let state = self.state.read();
        match Self::current(&state, principal)? {
            None => Ok(()),
            Some(caller) => state.check_admin(&caller.user),
        }
    }

    /// Whether `principal` may read the record of `user` (admin, or itself).
    pub(crate) fn check_user_read(
        &self,
        principal: &Principal,
        user: &str,
    ) -> Result<(), AuthError> {
        let state = self.state.read();
        match Self::current(&state, principal)? {
            Some(caller) if caller.user != user => state.check_admin(&caller.user),
            _ => Ok(()),
        }
    }

    /// Whether `principal` may read role `role` (admin, or a holder of it).
    pub(crate) fn check_role_read(
        &self,
        principal: &Principal,
        role: &str,
    ) -> Result<(), AuthError> {
        let state = self.state.read();
        match Self::current(&state, principal)? {
            Some(caller)
                if !state
                    .user(&caller.user)
                    .is_some_and(|u| u.roles.contains(role)) =>
            {
                state.check_admin(&caller.user)
            }
            _ => Ok(()),
        }
    }

    /// Decide a [`Request::Checked`] when it is applied: the caller's token must be current
    /// and its roles must cover every key the request reads or writes.
    pub(crate) fn authorize(
        &self,
        caller: Option<&Caller>,
        request: &Request,
        lease: &LeaseState,
    ) -> Result<(), AuthError> {
        let state = self.state.read();
        if !state.is_enabled() {
            return Ok(());
        }
        let caller = caller.ok_or(AuthError::UserEmpty)?;
        state.check_revision(caller.revision)?;
        let user = caller.user.as_str();
        let lease_keys = |id| {
            let now = lease.now();
            lease
                .with_lessor(|l| l.time_to_live(id, now, true))
                .map(|t| t.keys)
                .unwrap_or_default()
        };
        let keys_of = |keys: Vec<Bytes>| -> Result<(), AuthError> {
            keys.into_iter()
                .try_for_each(|k| state.check(user, &KeyRange::Key(k), Access::Write))
        };
        match request {
            Request::Put(p) => {
                check_put(&state, user, &p.key, p.prev_kv)?;
                match p.lease {
                    Some(id) => keys_of(lease_keys(id)),
                    None => Ok(()),
                }
            }
            Request::DeleteRange(d) => check_delete(&state, user, &d.range, d.prev_kv),
            Request::Txn(t) => {
                check_txn(&state, user, t)?;
                crate::lease::named_leases(request)
                    .into_iter()
                    .try_for_each(|id| keys_of(lease_keys(id)))
            }
            Request::Lease(crate::lease::LeaseRequest::Revoke { id }) => keys_of(lease_keys(*id)),
            Request::Lease(
                crate::lease::LeaseRequest::Grant { .. } | crate::lease::LeaseRequest::Renew { .. },
            ) => Ok(()),
            // Compaction, auth management, the leader's lease bookkeeping: root only.
            Request::Compact { .. }
            | Request::Auth(_)
            | Request::Lease(_)
            | Request::Checked { .. } => state.check_admin(user),
        }
    }
}

fn check_put(state: &AuthState, user: &str, key: &Bytes, prev_kv: bool) -> Result<(), AuthError> {
    let range = KeyRange::Key(key.clone());
    state.check(user, &range, Access::Write)?;
    if prev_kv {
        state.check(user, &range, Access::Read)?;
    }
    Ok(())
}

fn check_delete(
    state: &AuthState,
    user: &str,
    range: &KeyRange,
    prev_kv: bool,
) -> Result<(), AuthError> {
    state.check(user, range, Access::Write)?;
    if prev_kv {
        state.check(user, range, Access::Read)?;
    }
    Ok(())
}

/// Every compare and every op of both branches, nested txns included (etcd checks them all,
/// whichever branch runs).
fn check_txn(state: &AuthState, user: &str, txn: &TxnRequest) -> Result<(), AuthError> {
    for compare in &txn.compare {
        state.check(user, &compare.range, Access::Read)?;
    }
    for op in txn.success.iter().chain(&txn.failure) {
        match op {
            RequestOp::Range(r) => state.check(user, &r.range, Access::Read)?,
            RequestOp::Put(p) => check_put(state, user, &p.key, p.prev_kv)?,
            RequestOp::Delete(d) => check_delete(state, user, &d.range, d.prev_kv)?,
            RequestOp::Txn(t) => check_txn(state, user, t)?,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_storage::engine::MemEngine;
    use keel_types::ManualClock;

    fn gate(clock: Arc<ManualClock>) -> AuthGate {
        let engine = MemEngine::new(&[keel_auth::AUTH_CF]);
        let config = crate::AuthConfig {
            token_ttl: Duration::from_secs(10),
            ..crate::AuthConfig::default()
        };
        AuthGate::open(&engine, clock, config).unwrap()
    }

    fn apply(gate: &AuthGate, request: AuthRequest) -> Result<Applied, AuthError> {
        gate.apply(&request)
    }

    #[test]
    fn a_token_is_bound_to_the_revision_its_password_was_checked_at() {
        let clock = Arc::new(ManualClock::new());
        let gate = gate(Arc::clone(&clock));
        let add = |name: &str| AuthRequest::UserAdd {
            name: name.into(),
            password_hash: None,
        };
        apply(&gate, add("root")).unwrap();
        apply(
            &gate,
            AuthRequest::UserGrantRole {
                user: "root".into(),
                role: "root".into(),
            },
        )
        .unwrap();
        apply(&gate, AuthRequest::Enable).unwrap();
        let checked_at = gate.with_state(AuthState::revision);
        // The password changes between the check and the issue: the token is refused.
        apply(
            &gate,
            AuthRequest::UserChangePassword {
                name: "root".into(),
                password_hash: None,
            },
        )
        .unwrap();
        let issue = |revision| AuthRequest::IssueToken {
            user: "root".into(),
            digest: digest("t1"),
            revision,
        };
        assert_eq!(
            apply(&gate, issue(checked_at)),
            Err(AuthError::AuthOldRevision)
        );
        assert_eq!(gate.resolve(Some("t1")), Err(AuthError::InvalidAuthToken));
        // At the current revision it is issued, and lives its TTL from the last use.
        let now = gate.with_state(AuthState::revision);
        apply(&gate, issue(now)).unwrap();
        assert!(matches!(gate.resolve(Some("t1")), Ok(Principal::User(_))));
        clock.advance(Duration::from_secs(9));
        assert!(matches!(gate.resolve(Some("t1")), Ok(Principal::User(_))));
        clock.advance(Duration::from_secs(9));
        assert!(matches!(gate.resolve(Some("t1")), Ok(Principal::User(_))));
        clock.advance(Duration::from_secs(11));
        assert_eq!(gate.resolve(Some("t1")), Err(AuthError::InvalidAuthToken));
        // With auth disabled an unknown or expired token is ignored, as in etcd.
        apply(&gate, AuthRequest::Disable).unwrap();
        assert_eq!(gate.resolve(Some("t1")), Ok(Principal::Anonymous));
    }
}
