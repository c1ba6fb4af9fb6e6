//! The auth store's state machine: every member applies the same changes in log order.

use crate::error::{AuthError, Result};
use crate::limits::{
    NAME_BYTES_MAX, PERMISSIONS_PER_ROLE_MAX, ROLES_MAX, ROLES_PER_USER_MAX, USERS_MAX,
};
use crate::model::{covers, Access, Permission, Role, User, ROOT};
use keel_types::KeyRange;
use std::collections::{BTreeMap, BTreeSet};

/// A record the last changes touched, for [`crate::AuthStore::stage`] to persist.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// The enabled flag and the auth revision.
    Meta,
    /// A user (written if present, deleted otherwise).
    User(String),
    /// A role (written if present, deleted otherwise).
    Role(String),
}

/// Users, roles and whether auth is enabled, with etcd's rules for changing them.
///
/// Every change that succeeds bumps the auth revision; a token carries the revision it was
/// issued at and is refused ([`AuthError::AuthOldRevision`]) once the store has moved on, so a
/// revoked permission takes effect at once. A refused change changes nothing.
///
/// # Examples
/// ```
/// use keel_auth::{Access, AuthError, AuthState, Permission, PermissionKind};
/// use keel_types::KeyRange;
/// let mut auth = AuthState::default();
/// assert_eq!(auth.enable(), Err(AuthError::RootUserNotExist));
/// auth.user_add("root", Some("hash".into()))?;
/// auth.role_add("root")?;
/// auth.user_grant_role("root", "root")?;
/// auth.enable()?;
/// auth.user_add("app", None)?;
/// auth.role_add("cfg-reader")?;
/// let cfg = KeyRange::prefix(&b"/cfg/"[..]);
/// auth.role_grant_permission("cfg-reader", Permission::new(PermissionKind::Read, cfg.clone()))?;
/// auth.user_grant_role("app", "cfg-reader")?;
/// assert_eq!(auth.check("app", &cfg, Access::Read), Ok(()));
/// assert_eq!(auth.check("app", &cfg, Access::Write), Err(AuthError::PermissionDenied));
/// assert_eq!(auth.check("root", &KeyRange::all(), Access::Write), Ok(()));
/// # Ok::<(), AuthError>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuthState {
    pub(crate) enabled: bool,
    pub(crate) revision: u64,
    pub(crate) users: BTreeMap<String, User>,
    pub(crate) roles: BTreeMap<String, Role>,
    pub(crate) changes: Vec<Change>,
}

fn check_name(name: &str, empty: AuthError) -> Result<()> {
    if name.is_empty() {
        return Err(empty);
    }
    if name.len() > NAME_BYTES_MAX {
        return Err(AuthError::NameTooLong {
            len_bytes: name.len(),
            max_bytes: NAME_BYTES_MAX,
        });
    }
    Ok(())
}

impl AuthState {
    /// Whether auth is enabled.
    pub fn is_enabled(&self) -> bool {
        self.enabled
    }

    /// The auth revision: how many changes have been applied.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// A user.
    pub fn user(&self, name: &str) -> Option<&User> {
        self.users.get(name)
    }

    /// A role.
    pub fn role(&self, name: &str) -> Option<&Role> {
        self.roles.get(name)
    }

    /// Every user, by name.
    pub fn users(&self) -> impl Iterator<Item = &User> {
        self.users.values()
    }

    /// Every role, by name.
    pub fn roles(&self) -> impl Iterator<Item = &Role> {
        self.roles.values()
    }

    /// The records changed since the last call (for [`crate::AuthStore::stage`]).
    pub fn drain_changes(&mut self) -> Vec<Change> {
        std::mem::take(&mut self.changes)
    }

    fn bump(&mut self, change: Change) {
        self.revision += 1;
        self.changes.push(Change::Meta);
        if change != Change::Meta {
            self.changes.push(change);
        }
    }

    /// Enable auth: the `root` user must exist and hold the `root` role (etcdctl's `auth
    /// enable` creates the role and grants it when told so). Enabling twice is not an error.
    ///
    /// # Errors
    /// [`AuthError::RootUserNotExist`], [`AuthError::RootRoleNotExist`].
    pub fn enable(&mut self) -> Result<()> {
        if self.enabled {
            return Ok(());
        }
        let root = self.users.get(ROOT).ok_or(AuthError::RootUserNotExist)?;
        if !root.roles.contains(ROOT) {
            return Err(AuthError::RootRoleNotExist);
        }
        self.enabled = true;
        self.bump(Change::Meta);
        Ok(())
    }

    /// Disable auth (not an error when already disabled).
    pub fn disable(&mut self) {
        if self.enabled {
            self.enabled = false;
            self.bump(Change::Meta);
        }
    }

    /// Add a user with a password hash (`None`: no password).
    ///
    /// # Errors
    /// [`AuthError::UserEmpty`], [`AuthError::NameTooLong`], [`AuthError::UserAlreadyExist`],
    /// [`AuthError::TooMany`].
    pub fn user_add(&mut self, name: &str, password_hash: Option<String>) -> Result<()> {
        check_name(name, AuthError::UserEmpty)?;
        if self.users.contains_key(name) {
            return Err(AuthError::UserAlreadyExist);
        }
        if self.users.len() >= USERS_MAX {
            return Err(AuthError::TooMany {
                what: "users".into(),
                max: USERS_MAX,
            });
        }
        let user = User {
            name: name.to_owned(),
            password_hash,
            roles: BTreeSet::new(),
        };
        self.users.insert(name.to_owned(), user);
        self.bump(Change::User(name.to_owned()));
        Ok(())
    }

    /// Delete a user. `root` cannot be deleted while auth is enabled.
    ///
    /// # Errors
    /// [`AuthError::UserEmpty`], [`AuthError::InvalidAuthMgmt`], [`AuthError::UserNotFound`].
    pub fn user_delete(&mut self, name: &str) -> Result<()> {
        check_name(name, AuthError::UserEmpty)?;
        if self.enabled && name == ROOT {
            return Err(AuthError::InvalidAuthMgmt);
        }
        self.users.remove(name).ok_or(AuthError::UserNotFound)?;
        self.bump(Change::User(name.to_owned()));
        Ok(())
    }

    /// Replace a user's password hash.
    ///
    /// # Errors
    /// [`AuthError::UserEmpty`], [`AuthError::UserNotFound`].
    pub fn user_change_password(
        &mut self,
        name: &str,
        password_hash: Option<String>,
    ) -> Result<()> {
        check_name(name, AuthError::UserEmpty)?;
        let user = self.users.get_mut(name).ok_or(AuthError::UserNotFound)?;
        user.password_hash = password_hash;
        self.bump(Change::User(name.to_owned()));
        Ok(())
    }

    /// Grant `role` to `user`. The `root` role exists implicitly; granting a role twice is
    /// not an error.
    ///
    /// # Errors
    /// [`AuthError::UserNotFound`], [`AuthError::RoleNotFound`], [`AuthError::TooMany`].
    pub fn user_grant_role(&mut self, user: &str, role: &str) -> Result<()> {
        check_name(user, AuthError::UserEmpty)?;
        check_name(role, AuthError::RoleEmpty)?;
        // etcd's order: the user first, then the role.
        if !self.users.contains_key(user) {
            return Err(AuthError::UserNotFound);
        }
        if role != ROOT && !self.roles.contains_key(role) {
            return Err(AuthError::RoleNotFound);
        }
        let record = self.users.get_mut(user).ok_or(AuthError::UserNotFound)?;
        if record.roles.contains(role) {
            return Ok(());
        }
        if record.roles.len() >= ROLES_PER_USER_MAX {
            return Err(AuthError::TooMany {
                what: "roles of a user".into(),
                max: ROLES_PER_USER_MAX,
            });
        }
        record.roles.insert(role.to_owned());
        self.bump(Change::User(user.to_owned()));
        Ok(())
    }

    /// Revoke `role` from `user`. `root` keeps the `root` role while auth is enabled.
    ///
    /// # Errors
    /// [`AuthError::InvalidAuthMgmt`], [`AuthError::UserNotFound`], [`AuthError::RoleNotGranted`].
    pub fn user_revoke_role(&mut self, user: &str, role: &str) -> Result<()> {
        check_name(user, AuthError::UserEmpty)?;
        check_name(role, AuthError::RoleEmpty)?;
        if self.enabled && user == ROOT && role == ROOT {
            return Err(AuthError::InvalidAuthMgmt);
        }
        let record = self.users.get_mut(user).ok_or(AuthError::UserNotFound)?;
        if !record.roles.remove(role) {
            return Err(AuthError::RoleNotGranted);
        }
        self.bump(Change::User(user.to_owned()));
        Ok(())
    }

    /// Add a role without permissions.
    ///
    /// # Errors
    /// [`AuthError::RoleEmpty`], [`AuthError::NameTooLong`], [`AuthError::RoleAlreadyExist`],
    /// [`AuthError::TooMany`].
    pub fn role_add(&mut self, name: &str) -> Result<()> {
        check_name(name, AuthError::RoleEmpty)?;
        if self.roles.contains_key(name) {
            return Err(AuthError::RoleAlreadyExist);
        }
        if self.roles.len() >= ROLES_MAX {
            return Err(AuthError::TooMany {
                what: "roles".into(),
                max: ROLES_MAX,
            });
        }
        let role = Role {
            name: name.to_owned(),
            permissions: Vec::new(),
        };
        self.roles.insert(name.to_owned(), role);
        self.bump(Change::Role(name.to_owned()));
        Ok(())
    }

    /// Delete a role and revoke it from every user (`root` cannot be deleted while auth is
    /// enabled).
    ///
    /// # Errors
    /// [`AuthError::RoleEmpty`], [`AuthError::InvalidAuthMgmt`], [`AuthError::RoleNotFound`].
    pub fn role_delete(&mut self, name: &str) -> Result<()> {
        check_name(name, AuthError::RoleEmpty)?;
        if self.enabled && name == ROOT {
            return Err(AuthError::InvalidAuthMgmt);
        }
        self.roles.remove(name).ok_or(AuthError::RoleNotFound)?;
        let holders: Vec<String> = self
            .users
            .values_mut()
            .filter_map(|u| u.roles.remove(name).then(|| u.name.clone()))
            .collect();
        self.changes.extend(holders.into_iter().map(Change::User));
        self.bump(Change::Role(name.to_owned()));
        Ok(())
    }

    /// Grant a permission to a role; a permission on the same range is replaced (its kind
    /// changes), as in etcd.
    ///
    /// # Errors
    /// [`AuthError::RoleNotFound`], [`AuthError::InvalidAuthMgmt`] for an empty range,
    /// [`AuthError::TooMany`].
    pub fn role_grant_permission(&mut self, role: &str, permission: Permission) -> Result<()> {
        check_name(role, AuthError::RoleEmpty)?;
        if permission.range.is_empty() {
            return Err(AuthError::InvalidAuthMgmt);
        }
        let record = self.roles.get_mut(role).ok_or(AuthError::RoleNotFound)?;
        match record
            .permissions
            .iter_mut()
            .find(|p| p.range == permission.range)
        {
            Some(existing) => existing.kind = permission.kind,
            None => {
                if record.permissions.len() >= PERMISSIONS_PER_ROLE_MAX {
                    return Err(AuthError::TooMany {
                        what: "permissions of a role".into(),
                        max: PERMISSIONS_PER_ROLE_MAX,
                    });
                }
                record.permissions.push(permission);
                record.permissions.sort_by_key(|p| p.range.to_etcd());
            }
        }
        self.bump(Change::Role(role.to_owned()));
        Ok(())
    }

    /// Revoke the permission on exactly `range` from a role.
    ///
    /// # Errors
    /// [`AuthError::RoleNotFound`], [`AuthError::PermissionNotGranted`].
    pub fn role_revoke_permission(&mut self, role: &str, range: &KeyRange) -> Result<()> {
        check_name(role, AuthError::RoleEmpty)?;
        let record = self.roles.get_mut(role).ok_or(AuthError::RoleNotFound)?;
        let before = record.permissions.len();
        record.permissions.retain(|p| &p.range != range);
        if record.permissions.len() == before {
            return Err(AuthError::PermissionNotGranted);
        }
        self.bump(Change::Role(role.to_owned()));
        Ok(())
    }

    /// Whether `user` holds the `root` role.
    pub fn is_root(&self, user: &str) -> bool {
        self.users.get(user).is_some_and(|u| u.roles.contains(ROOT))
    }

    /// Whether `user` may do `access` on every key of `range` (always, with auth disabled).
    ///
    /// # Errors
    /// [`AuthError::PermissionDenied`] (also for an unknown user, as etcd answers).
    pub fn check(&self, user: &str, range: &KeyRange, access: Access) -> Result<()> {
        if !self.enabled || self.is_root(user) {
            return Ok(());
        }
        let record = self.users.get(user).ok_or(AuthError::PermissionDenied)?;
        let granted = record
            .roles
            .iter()
            .filter_map(|r| self.roles.get(r))
            .flat_map(|r| r.permissions.iter())
            .filter(|p| p.kind.allows(access))
            .map(|p| &p.range);
        if covers(granted, range) {
            Ok(())
        } else {
            Err(AuthError::PermissionDenied)
        }
    }

    /// Refuse a token issued at `token_revision` if the store has changed since.
    ///
    /// # Errors
    /// [`AuthError::AuthOldRevision`].
    pub fn check_revision(&self, token_revision: u64) -> Result<()> {
        if token_revision < self.revision {
            return Err(AuthError::AuthOldRevision);
        }
        Ok(())
    }

    /// Whether `user` may administer (auth management, snapshots, defragment): root only,
    /// always with auth disabled.
    ///
    /// # Errors
    /// [`AuthError::PermissionDenied`].
    pub fn check_admin(&self, user: &str) -> Result<()> {
        if !self.enabled || self.is_root(user) {
            Ok(())
        } else {
            Err(AuthError::PermissionDenied)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::PermissionKind;

    fn enabled() -> AuthState {
        let mut a = AuthState::default();
        a.user_add(ROOT, None).unwrap();
        a.user_grant_role(ROOT, ROOT).unwrap();
        a.enable().unwrap();
        a
    }

    #[test]
    fn etcd_rules_for_root_and_refusals_change_nothing() {
        let mut a = AuthState::default();
        a.user_add(ROOT, None).unwrap();
        assert_eq!(a.enable(), Err(AuthError::RootRoleNotExist));
        let mut a = enabled();
        let before = a.clone();
        assert_eq!(a.user_delete(ROOT), Err(AuthError::InvalidAuthMgmt));
        assert_eq!(
            a.user_revoke_role(ROOT, ROOT),
            Err(AuthError::InvalidAuthMgmt)
        );
        assert_eq!(a.role_delete(ROOT), Err(AuthError::InvalidAuthMgmt));
        assert_eq!(a.user_add("", None), Err(AuthError::UserEmpty));
        assert_eq!(a.user_add(ROOT, None), Err(AuthError::UserAlreadyExist));
        assert_eq!(
            a.user_grant_role(ROOT, "nope"),
            Err(AuthError::RoleNotFound)
        );
        assert_eq!(
            a.user_revoke_role("ghost", "x"),
            Err(AuthError::UserNotFound)
        );
        assert_eq!(
            a.role_revoke_permission("ghost", &KeyRange::all()),
            Err(AuthError::RoleNotFound)
        );
        assert!(matches!(
            a.user_add(&"n".repeat(257), None),
            Err(AuthError::NameTooLong { .. })
        ));
        let mut after = a.clone();
        after.changes.clear();
        let mut expected = before;
        expected.changes.clear();
        assert_eq!(after, expected, "refusals changed the state");
        a.disable();
        a.user_delete(ROOT).unwrap();
    }

    #[test]
    fn revision_moves_with_every_change_and_old_tokens_are_refused() {
        let mut a = enabled();
        let issued_at = a.revision();
        assert_eq!(a.check_revision(issued_at), Ok(()));
        a.role_add("r").unwrap();
        assert_eq!(a.check_revision(issued_at), Err(AuthError::AuthOldRevision));
        // Idempotent grants change nothing.
        a.user_grant_role(ROOT, ROOT).unwrap();
        assert_eq!(a.revision(), issued_at + 1);
    }

    #[test]
    fn role_delete_revokes_from_users_and_regrant_replaces_kind() {
        let mut a = enabled();
        a.user_add("u", None).unwrap();
        a.role_add("r").unwrap();
        let k = KeyRange::key(&b"k"[..]);
        a.role_grant_permission("r", Permission::new(PermissionKind::Read, k.clone()))
            .unwrap();
        a.user_grant_role("u", "r").unwrap();
        assert_eq!(
            a.check("u", &k, Access::Write),
            Err(AuthError::PermissionDenied)
        );
        a.role_grant_permission("r", Permission::new(PermissionKind::ReadWrite, k.clone()))
            .unwrap();
        assert_eq!(a.role("r").unwrap().permissions.len(), 1);
        assert_eq!(a.check("u", &k, Access::Write), Ok(()));
        a.role_delete("r").unwrap();
        assert!(a.user("u").unwrap().roles.is_empty());
        assert_eq!(
            a.check("u", &k, Access::Read),
            Err(AuthError::PermissionDenied)
        );
        assert_eq!(
            a.check("ghost", &k, Access::Read),
            Err(AuthError::PermissionDenied)
        );
    }
}
