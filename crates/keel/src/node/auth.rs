//! Authentication and RBAC calls of the node (see [`crate::auth`]).

use super::{unexpected, Node};
use crate::auth::{digest, new_token, AuthRequest, Principal};
use crate::error::NodeError;
use crate::request::{Applied, Request};
use crate::response::{ReadConsistency, Response};
use keel_auth::{Access, AuthError, Permission, Role, User};
use keel_types::KeyRange;

/// etcd AuthStatus.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AuthStatus {
    /// Whether auth is enabled.
    pub enabled: bool,
    /// The auth revision (bumped by every change to users, roles and permissions).
    pub revision: u64,
}

impl Node {
    /// A handle that acts for the holder of `token` (as the etcd API does for a client):
    /// its writes are checked against the token user's permissions when applied, its reads
    /// and watches when served, and auth management needs the `root` role. Without a token
    /// the handle is anonymous, which is refused everything once auth is enabled ("user name
    /// is empty"). With auth disabled the token is ignored and nothing is checked.
    ///
    /// The handle from [`crate::NodeBuilder::start`] is the host process's own and is never
    /// checked.
    ///
    /// # Errors
    /// [`NodeError::Auth`] with "invalid auth token" (unknown, expired, or its user deleted
    /// or its password changed); [`NodeError::Timeout`] if an unknown token could not be
    /// checked against the leader's latest state.
    ///
    /// # Examples
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// use keel::{AuthConfig, NodeBuilder};
    /// use keel_types::MemberId;
    /// let node = NodeBuilder::new(MemberId::new(1))
    ///     .auth(AuthConfig { bcrypt_cost: 4, ..Default::default() })
    ///     .start()
    ///     .await?;
    /// node.user_add("root", Some("rootpw")).await?;
    /// node.user_grant_role("root", "root").await?;
    /// node.auth_enable().await?;
    /// let token = node.authenticate("root", "rootpw").await?.body;
    /// let root = node.with_token(Some(&token)).await?;
    /// root.put(&b"k"[..], &b"v"[..]).await?;
    /// let anonymous = node.with_token(None).await?;
    /// assert!(anonymous.put(&b"k"[..], &b"v"[..]).await.is_err());
    /// node.shutdown().await;
    /// # Ok::<(), keel::NodeError>(())
    /// # }).unwrap();
    /// ```
    pub async fn with_token(&self, token: Option<&str>) -> Result<Node, NodeError> {
        let auth = &self.inner.auth;
        let principal = match auth.resolve(token) {
            Err(AuthError::InvalidAuthToken) => {
                // Issued through another member a moment ago? Catch up with the leader's
                // commit index once, then decide.
                self.linearized(ReadConsistency::Linearizable).await?;
                auth.resolve(token)
            }
            other => other,
        }
        .map_err(NodeError::Auth)?;
        Ok(Node {
            inner: std::sync::Arc::clone(&self.inner),
            principal,
        })
    }

    /// A handle acting for `user`, whom the transport has authenticated: etcd takes the
    /// common name of a client certificate verified against `--trusted-ca-file` as the user
    /// of a request that carries no token. The user must exist once auth is enabled (an
    /// unknown name is anonymous); with auth disabled nothing is checked.
    pub fn with_verified_user(&self, user: &str) -> Node {
        let principal = self.inner.auth.with_state(|s| match s.user(user) {
            Some(_) if s.is_enabled() => Principal::User(crate::auth::Caller {
                user: user.to_owned(),
                revision: s.revision(),
            }),
            _ => Principal::Anonymous,
        });
        Node {
            inner: std::sync::Arc::clone(&self.inner),
            principal,
        }
    }

    /// The user this handle acts for (`None`: trusted or anonymous).
    pub fn user(&self) -> Option<&str> {
        self.principal.caller().map(|c| c.user.as_str())
    }

    /// The host's trusted handle on the same node.
    pub(super) fn trusted(&self) -> Node {
        Node {
            inner: std::sync::Arc::clone(&self.inner),
            principal: Principal::Trusted,
        }
    }

    /// Refuse unless this handle may do `access` on every key of `range`.
    pub(crate) fn check_access(&self, range: &KeyRange, access: Access) -> Result<(), NodeError> {
        self.inner
            .auth
            .check(&self.principal, range, access)
            .map_err(NodeError::Auth)
    }

    /// Refuse unless this handle may administer (root, or auth disabled, or trusted).
    pub(crate) fn check_admin(&self) -> Result<(), NodeError> {
        self.inner
            .auth
            .check_admin(&self.principal)
            .map_err(NodeError::Auth)
    }

    /// etcd Authenticate: check `password` (on this member, one check at a time), then
    /// replicate the new token's digest, so that it is valid on every member. Returns the
    /// token, which [`Node::with_token`] takes.
    ///
    /// # Errors
    /// [`NodeError::Auth`]: "authentication is not enabled", "authentication failed, invalid
    /// user ID or password" (one answer for an unknown user and a wrong password);
    /// [`NodeError::Timeout`], [`NodeError::Stopped`].
    pub async fn authenticate(
        &self,
        user: &str,
        password: &str,
    ) -> Result<Response<String>, NodeError> {
        let running = self.linearized(ReadConsistency::Linearizable).await?;
        let auth = &self.inner.auth;
        // The hash and the revision it belongs to, read together: the token is bound to that
        // revision, so a password changed meanwhile does not yield one.
        let (hash, revision) = auth.with_state(|s| {
            if !s.is_enabled() {
                return Err(NodeError::Auth(AuthError::AuthNotEnabled));
            }
            let hash = s.user(user).and_then(|u| u.password_hash.clone());
            Ok((hash, s.revision()))
        })?;
        let verified = {
            let _one_at_a_time = auth
                .verify_gate
                .acquire()
                .await
                .map_err(|_| NodeError::Stopped)?;
            // An unknown user (or one without password) costs a bcrypt check too, against a
            // hash nobody's password matches, so the answer time does not tell a guesser
            // which names exist.
            let (hash, known) = match hash {
                Some(hash) => (hash, true),
                None => (auth.decoy_hash().await.map_err(NodeError::Auth)?, false),
            };
            let password = password.to_owned();
            let matched =
                crate::raft::rt::blocking(move || keel_auth::verify_password(&password, &hash))
                    .await
                    .unwrap_or(false);
            known && matched
        };
        if !verified {
            tracing::warn!(user, "authentication failed");
            return Err(NodeError::Auth(AuthError::AuthFailed));
        }
        if let Some(jwt) = &auth.jwt {
            // A JWT of a revision that has moved on is refused at its first use ("revision of
            // auth store is old").
            return Ok(Response {
                header: self.current_header()?,
                body: jwt.sign(user, revision).map_err(NodeError::Auth)?,
            });
        }
        let token = new_token().map_err(NodeError::Auth)?;
        let issue = Request::Auth(AuthRequest::IssueToken {
            user: user.to_owned(),
            digest: digest(&token),
            revision,
        });
        let (_, term) = self.trusted().propose(issue).await?;
        // The entry is applied on the leader; wait until it is applied here too, so the
        // token works on this member at once.
        running
            .consensus
            .linearize(self.inner.request_timeout)
            .await?;
        let header = self.current_header()?;
        Ok(Response {
            header: crate::response::ResponseHeader {
                raft_term: term,
                ..header
            },
            body: token,
        })
    }

    async fn auth_change(&self, request: AuthRequest) -> Result<Response<u64>, NodeError> {
        self.check_admin()?;
        match self.propose(Request::Auth(request)).await? {
            (Applied::Auth { revision }, term) => {
                let header = self.current_header()?;
                Ok(Response {
                    header: crate::response::ResponseHeader {
                        raft_term: term,
                        ..header
                    },
                    body: revision,
                })
            }
            (other, _) => Err(unexpected(&other)),
        }
    }

    /// etcd AuthEnable: the `root` user must exist and hold the `root` role.
    ///
    /// # Errors
    /// [`NodeError::Auth`] ("root user does not exist", "root user does not have root role",
    /// "permission denied"), [`NodeError::Timeout`], [`NodeError::Stopped`].
    pub async fn auth_enable(&self) -> Result<Response<u64>, NodeError> {
        self.auth_change(AuthRequest::Enable).await
    }

    /// etcd AuthDisable.
    ///
    /// # Errors
    /// As [`Node::auth_enable`].
    pub async fn auth_disable(&self) -> Result<Response<u64>, NodeError> {
        self.auth_change(AuthRequest::Disable).await
    }

    /// etcd AuthStatus (linearizable).
    ///
    /// # Errors
    /// [`NodeError::Timeout`], [`NodeError::Stopped`].
    pub async fn auth_status(&self) -> Result<Response<AuthStatus>, NodeError> {
        self.linearized(ReadConsistency::Linearizable).await?;
        let body = self.inner.auth.with_state(|s| AuthStatus {
            enabled: s.is_enabled(),
            revision: s.revision(),
        });
        Ok(Response {
            header: self.current_header()?,
            body,
        })
    }

    /// etcd UserAdd: `password` is hashed here (bcrypt, [`crate::AuthConfig::bcrypt_cost`]);
    /// `None` adds a user without password.
    ///
    /// # Errors
    /// [`NodeError::Auth`] ("user name already exists", "user name is empty", password too
    /// long, "permission denied"), [`NodeError::Timeout`], [`NodeError::Stopped`].
    pub async fn user_add(
        &self,
        name: &str,
        password: Option<&str>,
    ) -> Result<Response<u64>, NodeError> {
        self.hashed_change(password, |password_hash| AuthRequest::UserAdd {
            name: name.to_owned(),
            password_hash,
        })
        .await
    }

    /// etcd UserAdd with a password hashed by the client (etcd 3.5's `hashedPassword`): it
    /// must be a well-formed bcrypt hash.
    ///
    /// # Errors
    /// As [`Node::user_add`]; a malformed hash.
    pub async fn user_add_hashed(
        &self,
        name: &str,
        password_hash: Option<&str>,
    ) -> Result<Response<u64>, NodeError> {
        self.auth_change(AuthRequest::UserAdd {
            name: name.to_owned(),
            password_hash: checked_hash(password_hash)?,
        })
        .await
    }

    /// etcd UserChangePassword with a client-made bcrypt hash.
    ///
    /// # Errors
    /// As [`Node::user_add_hashed`]; "user name not found".
    pub async fn user_change_password_hashed(
        &self,
        name: &str,
        password_hash: Option<&str>,
    ) -> Result<Response<u64>, NodeError> {
        self.auth_change(AuthRequest::UserChangePassword {
            name: name.to_owned(),
            password_hash: checked_hash(password_hash)?,
        })
        .await
    }

    /// A change carrying a password: admin is checked before the (slow) hash is made.
    async fn hashed_change(
        &self,
        password: Option<&str>,
        change: impl FnOnce(Option<String>) -> AuthRequest,
    ) -> Result<Response<u64>, NodeError> {
        self.check_admin()?;
        let password_hash = self.hash(password).await?;
        self.auth_change(change(password_hash)).await
    }

    async fn hash(&self, password: Option<&str>) -> Result<Option<String>, NodeError> {
        let Some(password) = password else {
            return Ok(None);
        };
        let password = password.to_owned();
        let cost = self.inner.auth.bcrypt_cost;
        crate::raft::rt::blocking(move || keel_auth::hash_password(&password, cost))
            .await
            .map_err(|e| {
                NodeError::Auth(AuthError::Hash {
                    detail: e.to_string(),
                })
            })?
            .map(Some)
            .map_err(NodeError::Auth)
    }

    /// etcd UserDelete (its tokens stop working).
    ///
    /// # Errors
    /// [`NodeError::Auth`] ("user name not found", "invalid auth management" for `root`
    /// while enabled, "permission denied"), [`NodeError::Timeout`], [`NodeError::Stopped`].
    pub async fn user_delete(&self, name: &str) -> Result<Response<u64>, NodeError> {
        self.auth_change(AuthRequest::UserDelete {
            name: name.to_owned(),
        })
        .await
    }

    /// etcd UserChangePassword (the user's tokens stop working).
    ///
    /// # Errors
    /// As [`Node::user_add`]; "user name not found".
    pub async fn user_change_password(
        &self,
        name: &str,
        password: Option<&str>,
    ) -> Result<Response<u64>, NodeError> {
        self.hashed_change(password, |password_hash| AuthRequest::UserChangePassword {
            name: name.to_owned(),
            password_hash,
        })
        .await
    }

    /// etcd UserGrantRole.
    ///
    /// # Errors
    /// [`NodeError::Auth`] ("user name not found", "role name not found", "permission
    /// denied"), [`NodeError::Timeout`], [`NodeError::Stopped`].
    pub async fn user_grant_role(
        &self,
        user: &str,
        role: &str,
    ) -> Result<Response<u64>, NodeError> {
        self.auth_change(AuthRequest::UserGrantRole {
            user: user.to_owned(),
            role: role.to_owned(),
        })
        .await
    }

    /// etcd UserRevokeRole.
    ///
    /// # Errors
    /// [`NodeError::Auth`] ("user name not found", "role is not granted to the user",
    /// "invalid auth management", "permission denied"), [`NodeError::Timeout`],
    /// [`NodeError::Stopped`].
    pub async fn user_revoke_role(
        &self,
        user: &str,
        role: &str,
    ) -> Result<Response<u64>, NodeError> {
        self.auth_change(AuthRequest::UserRevokeRole {
            user: user.to_owned(),
            role: role.to_owned(),
        })
        .await
    }

    /// etcd UserGet (root, or the user itself). The password hash is not returned.
    ///
    /// # Errors
    /// [`NodeError::Auth`] ("user name not found", "permission denied"),
    /// [`NodeError::Timeout`], [`NodeError::Stopped`].
    pub async fn user_get(&self, name: &str) -> Result<Response<User>, NodeError> {
        self.linearized(ReadConsistency::Linearizable).await?;
        let auth = &self.inner.auth;
        auth.check_user_read(&self.principal, name)
            .map_err(NodeError::Auth)?;
        let user = auth
            .with_state(|s| s.user(name).cloned())
            .ok_or(NodeError::Auth(AuthError::UserNotFound))?;
        Ok(Response {
            header: self.current_header()?,
            body: User {
                password_hash: None,
                ..user
            },
        })
    }

    /// etcd UserList (root).
    ///
    /// # Errors
    /// [`NodeError::Auth`] ("permission denied"), [`NodeError::Timeout`],
    /// [`NodeError::Stopped`].
    pub async fn user_list(&self) -> Result<Response<Vec<String>>, NodeError> {
        self.linearized(ReadConsistency::Linearizable).await?;
        self.check_admin()?;
        let body = self
            .inner
            .auth
            .with_state(|s| s.users().map(|u| u.name.clone()).collect());
        Ok(Response {
            header: self.current_header()?,
            body,
        })
    }

    /// etcd RoleAdd.
    ///
    /// # Errors
    /// [`NodeError::Auth`] ("role name already exists", "role name is empty", "permission
    /// denied"), [`NodeError::Timeout`], [`NodeError::Stopped`].
    pub async fn role_add(&self, name: &str) -> Result<Response<u64>, NodeError> {
        self.auth_change(AuthRequest::RoleAdd {
            name: name.to_owned(),
        })
        .await
    }

    /// etcd RoleDelete (revoked from every user holding it).
    ///
    /// # Errors
    /// [`NodeError::Auth`] ("role name not found", "invalid auth management" for `root`
    /// while enabled, "permission denied"), [`NodeError::Timeout`], [`NodeError::Stopped`].
    pub async fn role_delete(&self, name: &str) -> Result<Response<u64>, NodeError> {
        self.auth_change(AuthRequest::RoleDelete {
            name: name.to_owned(),
        })
        .await
    }

    /// etcd RoleGrantPermission (a permission on the same range is replaced).
    ///
    /// # Errors
    /// [`NodeError::Auth`] ("role name not found", "invalid auth management" for an empty
    /// range, "permission denied"), [`NodeError::Timeout`], [`NodeError::Stopped`].
    pub async fn role_grant_permission(
        &self,
        role: &str,
        permission: Permission,
    ) -> Result<Response<u64>, NodeError> {
        self.auth_change(AuthRequest::RoleGrantPermission {
            role: role.to_owned(),
            permission,
        })
        .await
    }

    /// etcd RoleRevokePermission: drop the permission on exactly `range`.
    ///
    /// # Errors
    /// [`NodeError::Auth`] ("role name not found", "permission is not granted to the role",
    /// "permission denied"), [`NodeError::Timeout`], [`NodeError::Stopped`].
    pub async fn role_revoke_permission(
        &self,
        role: &str,
        range: KeyRange,
    ) -> Result<Response<u64>, NodeError> {
        self.auth_change(AuthRequest::RoleRevokePermission {
            role: role.to_owned(),
            range,
        })
        .await
    }

    /// etcd RoleGet (root, or a holder of the role).
    ///
    /// # Errors
    /// [`NodeError::Auth`] ("role name not found", "permission denied"),
    /// [`NodeError::Timeout`], [`NodeError::Stopped`].
    pub async fn role_get(&self, name: &str) -> Result<Response<Role>, NodeError> {
        self.linearized(ReadConsistency::Linearizable).await?;
        let auth = &self.inner.auth;
        auth.check_role_read(&self.principal, name)
            .map_err(NodeError::Auth)?;
        let role = auth
            .with_state(|s| s.role(name).cloned())
            .ok_or(NodeError::Auth(AuthError::RoleNotFound))?;
        Ok(Response {
            header: self.current_header()?,
            body: role,
        })
    }

    /// etcd RoleList (root).
    ///
    /// # Errors
    /// [`NodeError::Auth`] ("permission denied"), [`NodeError::Timeout`],
    /// [`NodeError::Stopped`].
    pub async fn role_list(&self) -> Result<Response<Vec<String>>, NodeError> {
        self.linearized(ReadConsistency::Linearizable).await?;
        self.check_admin()?;
        let body = self
            .inner
            .auth
            .with_state(|s| s.roles().map(|r| r.name.clone()).collect());
        Ok(Response {
            header: self.current_header()?,
            body,
        })
    }
}

fn checked_hash(hash: Option<&str>) -> Result<Option<String>, NodeError> {
    hash.map(|h| keel_auth::check_hash(h).map(|()| h.to_owned()))
        .transpose()
        .map_err(NodeError::Auth)
}
