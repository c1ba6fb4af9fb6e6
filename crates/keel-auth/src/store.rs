//! Auth records in their own column family, written inside the caller's batch.
//!
//! ```text
//! column family "auth"
//! key              value
//! 'm'              [FORMAT_VERSION] postcard(enabled: bool, revision: u64)
//! 'u' | user name  [FORMAT_VERSION] postcard(User)   (the password only as its bcrypt hash)
//! 'r' | role name  [FORMAT_VERSION] postcard(Role)
//! ```
//!
//! The whole store is loaded at open: it is small (bounded by [`crate::limits`]) and every
//! permission check reads it.

use crate::error::Result;
use crate::model::{Role, User};
use crate::state::{AuthState, Change};
use keel_storage::engine::{ColumnFamily, Engine, ReadView, ScanBounds, WriteBatch};
use keel_storage::StorageError;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::ops::ControlFlow;

/// The column family of auth records; pass it to the engine at open.
pub const AUTH_CF: &str = "auth";

const FORMAT_VERSION: u8 = 1;
const TAG_META: u8 = b'm';
const TAG_ROLE: u8 = b'r';
const TAG_USER: u8 = b'u';

fn key(tag: u8, name: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + name.len());
    k.push(tag);
    k.extend_from_slice(name.as_bytes());
    k
}

fn encode<T: Serialize>(what: &'static str, value: &T) -> Result<Vec<u8>> {
    let mut out = vec![FORMAT_VERSION];
    let body = postcard::to_stdvec(value).map_err(|e| StorageError::Corrupted {
        what,
        detail: format!("cannot encode: {e}"),
    })?;
    out.extend_from_slice(&body);
    Ok(out)
}

fn decode<T: DeserializeOwned>(what: &'static str, bytes: &[u8]) -> Result<T> {
    let corrupted = |detail: String| StorageError::Corrupted { what, detail };
    match bytes.split_first() {
        Some((&FORMAT_VERSION, body)) => {
            let (value, rest) =
                postcard::take_from_bytes(body).map_err(|e| corrupted(e.to_string()))?;
            if !rest.is_empty() {
                return Err(corrupted(format!("{} trailing bytes", rest.len())).into());
            }
            Ok(value)
        }
        Some((v, _)) => Err(corrupted(format!("unknown format version {v}")).into()),
        None => Err(corrupted("empty record".into()).into()),
    }
}

/// Reads and writes [`AuthState`] records.
///
/// # Examples
/// ```
/// use keel_auth::{AuthState, AuthStore, AUTH_CF};
/// use keel_storage::engine::{Durability, Engine, MemEngine, WriteBatch};
/// let engine = MemEngine::new(&[AUTH_CF]);
/// let store = AuthStore::open(&engine)?;
/// let mut auth = AuthState::default();
/// auth.user_add("root", None)?;
/// let mut batch = WriteBatch::default();
/// store.stage(&mut batch, &mut auth)?;
/// engine.write(batch, Durability::Synced)?;
/// assert_eq!(store.load(&*engine.view()?)?, auth);
/// # Ok::<(), keel_auth::AuthError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AuthStore {
    cf: ColumnFamily,
}

impl AuthStore {
    /// The store over `engine`'s [`AUTH_CF`].
    ///
    /// # Errors
    /// The column family was not registered.
    pub fn open<E: Engine + ?Sized>(engine: &E) -> Result<Self> {
        Ok(AuthStore {
            cf: engine.column_family(AUTH_CF)?,
        })
    }

    /// Write the records `state` changed since the last stage into `batch`.
    ///
    /// # Errors
    /// A record that cannot be encoded (the batch must then not be committed).
    pub fn stage(&self, batch: &mut WriteBatch, state: &mut AuthState) -> Result<()> {
        for change in state.drain_changes() {
            match change {
                Change::Meta => batch.put(
                    self.cf,
                    vec![TAG_META],
                    encode("auth meta", &(state.enabled, state.revision))?,
                ),
                Change::User(name) => match state.users.get(&name) {
                    Some(user) => {
                        batch.put(self.cf, key(TAG_USER, &name), encode("auth user", user)?);
                    }
                    None => batch.delete(self.cf, key(TAG_USER, &name)),
                },
                Change::Role(name) => match state.roles.get(&name) {
                    Some(role) => {
                        batch.put(self.cf, key(TAG_ROLE, &name), encode("auth role", role)?);
                    }
                    None => batch.delete(self.cf, key(TAG_ROLE, &name)),
                },
            }
        }
        Ok(())
    }

    /// Load the whole state.
    ///
    /// # Errors
    /// Storage failure or a corrupted record.
    pub fn load(&self, view: &dyn ReadView) -> Result<AuthState> {
        let mut state = AuthState::default();
        if let Some(meta) = view.get(self.cf, &[TAG_META])? {
            (state.enabled, state.revision) = decode("auth meta", &meta)?;
        }
        view.scan(
            self.cf,
            ScanBounds::forward(&[TAG_USER], Some(&[TAG_USER + 1])),
            &mut |_, value| {
                let user: User = decode("auth user", value).map_err(into_storage)?;
                state.users.insert(user.name.clone(), user);
                Ok(ControlFlow::Continue(()))
            },
        )?;
        view.scan(
            self.cf,
            ScanBounds::forward(&[TAG_ROLE], Some(&[TAG_ROLE + 1])),
            &mut |_, value| {
                let role: Role = decode("auth role", value).map_err(into_storage)?;
                state.roles.insert(role.name.clone(), role);
                Ok(ControlFlow::Continue(()))
            },
        )?;
        Ok(state)
    }
}

fn into_storage(e: crate::AuthError) -> StorageError {
    match e {
        crate::AuthError::Storage(s) => s,
        other => StorageError::Corrupted {
            what: "auth record",
            detail: other.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Permission, PermissionKind};
    use keel_storage::engine::{Durability, MemEngine};
    use keel_types::KeyRange;

    #[test]
    fn every_change_round_trips_and_deletes_are_persisted() {
        let engine = MemEngine::new(&[AUTH_CF]);
        let store = AuthStore::open(&engine).unwrap();
        let mut auth = AuthState::default();
        auth.user_add("root", Some("h".into())).unwrap();
        auth.user_grant_role("root", "root").unwrap();
        auth.user_add("u", None).unwrap();
        auth.role_add("r").unwrap();
        auth.role_grant_permission(
            "r",
            Permission::new(PermissionKind::Write, KeyRange::prefix(&b"p"[..])),
        )
        .unwrap();
        auth.user_grant_role("u", "r").unwrap();
        auth.enable().unwrap();
        let mut batch = WriteBatch::default();
        store.stage(&mut batch, &mut auth).unwrap();
        engine.write(batch, Durability::Synced).unwrap();
        assert_eq!(store.load(&*engine.view().unwrap()).unwrap(), auth);
        auth.role_delete("r").unwrap();
        auth.user_delete("u").unwrap();
        let mut batch = WriteBatch::default();
        store.stage(&mut batch, &mut auth).unwrap();
        engine.write(batch, Durability::Synced).unwrap();
        let loaded = store.load(&*engine.view().unwrap()).unwrap();
        assert_eq!(loaded, auth);
        assert!(loaded.role("r").is_none() && loaded.user("u").is_none());
    }

    #[test]
    fn corrupted_records_are_typed_errors() {
        assert!(decode::<User>("auth user", &[]).is_err());
        assert!(decode::<User>("auth user", &[9, 1, 2]).is_err());
        assert!(decode::<(bool, u64)>("auth meta", &[FORMAT_VERSION, 1, 5, 0]).is_err());
    }
}
