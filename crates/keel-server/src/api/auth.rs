//! etcd's Auth service: enable/disable/status, authenticate, users, roles, permissions.
//!
//! Every call but Authenticate acts for the caller's token ([`super::caller`]); management
//! calls need the `root` role once auth is enabled (checked by the node).

use super::{caller, to_status};
use crate::convert::header;
use crate::pb::{authpb, etcdserverpb as pb};
use keel::{Node, Permission, PermissionKind};
use keel_types::KeyRange;
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// etcd's Auth service on a [`Node`].
#[derive(Clone, Debug)]
pub struct AuthService {
    node: Arc<Node>,
}

impl AuthService {
    /// The service on `node`.
    pub fn new(node: Arc<Node>) -> Self {
        AuthService { node }
    }
}

/// A permission from etcd's wire form.
fn permission(p: authpb::Permission) -> Result<Permission, Status> {
    let kind = match authpb::permission::Type::try_from(p.perm_type) {
        Ok(authpb::permission::Type::Read) => PermissionKind::Read,
        Ok(authpb::permission::Type::Write) => PermissionKind::Write,
        Ok(authpb::permission::Type::Readwrite) => PermissionKind::ReadWrite,
        Err(_) => {
            return Err(Status::invalid_argument(
                "etcdserver: invalid auth management",
            ))
        }
    };
    Ok(Permission::new(
        kind,
        KeyRange::from_etcd(p.key, p.range_end),
    ))
}

/// etcd's wire form of a permission.
fn to_pb_permission(p: &Permission) -> authpb::Permission {
    let (key, range_end) = p.range.to_etcd();
    let perm_type = match p.kind {
        PermissionKind::Read => authpb::permission::Type::Read,
        PermissionKind::Write => authpb::permission::Type::Write,
        PermissionKind::ReadWrite => authpb::permission::Type::Readwrite,
    };
    authpb::Permission {
        perm_type: perm_type as i32,
        key,
        range_end,
    }
}

/// etcd adds a user without password when asked (`no_password`) or when none is given; a
/// pre-hashed password (`hashedPassword`, etcd 3.5) is taken as the hash.
enum NewPassword<'a> {
    Plain(&'a str),
    Hashed(&'a str),
    None,
}

fn new_password<'a>(plain: &'a str, hashed: &'a str, no_password: bool) -> NewPassword<'a> {
    if no_password {
        NewPassword::None
    } else if !hashed.is_empty() {
        NewPassword::Hashed(hashed)
    } else if !plain.is_empty() {
        NewPassword::Plain(plain)
    } else {
        NewPassword::None
    }
}

macro_rules! header_only {
    ($resp:expr, $ty:ident) => {
        Ok(Response::new(pb::$ty {
            header: Some(header(&$resp.header)),
        }))
    };
}

#[tonic::async_trait]
impl pb::auth_server::Auth for AuthService {
    async fn auth_enable(
        &self,
        request: Request<pb::AuthEnableRequest>,
    ) -> Result<Response<pb::AuthEnableResponse>, Status> {
        let node = caller(&self.node, &request).await?;
        let resp = node.auth_enable().await.map_err(to_status)?;
        header_only!(resp, AuthEnableResponse)
    }

    async fn auth_disable(
        &self,
        request: Request<pb::AuthDisableRequest>,
    ) -> Result<Response<pb::AuthDisableResponse>, Status> {
        let node = caller(&self.node, &request).await?;
        let resp = node.auth_disable().await.map_err(to_status)?;
        header_only!(resp, AuthDisableResponse)
    }

    async fn auth_status(
        &self,
        request: Request<pb::AuthStatusRequest>,
    ) -> Result<Response<pb::AuthStatusResponse>, Status> {
        let node = caller(&self.node, &request).await?;
        let resp = node.auth_status().await.map_err(to_status)?;
        Ok(Response::new(pb::AuthStatusResponse {
            header: Some(header(&resp.header)),
            enabled: resp.body.enabled,
            auth_revision: resp.body.revision,
        }))
    }

    async fn authenticate(
        &self,
        request: Request<pb::AuthenticateRequest>,
    ) -> Result<Response<pb::AuthenticateResponse>, Status> {
        let req = request.into_inner();
        let resp = self
            .node
            .authenticate(&req.name, &req.password)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::AuthenticateResponse {
            header: Some(header(&resp.header)),
            token: resp.body,
        }))
    }

    async fn user_add(
        &self,
        request: Request<pb::AuthUserAddRequest>,
    ) -> Result<Response<pb::AuthUserAddResponse>, Status> {
        let node = caller(&self.node, &request).await?;
        let req = request.into_inner();
        let no_password = req.options.is_some_and(|o| o.no_password);
        let resp = match new_password(&req.password, &req.hashed_password, no_password) {
            NewPassword::Plain(p) => node.user_add(&req.name, Some(p)).await,
            NewPassword::Hashed(h) => node.user_add_hashed(&req.name, Some(h)).await,
            NewPassword::None => node.user_add(&req.name, None).await,
        }
        .map_err(to_status)?;
        header_only!(resp, AuthUserAddResponse)
    }

    async fn user_get(
        &self,
        request: Request<pb::AuthUserGetRequest>,
    ) -> Result<Response<pb::AuthUserGetResponse>, Status> {
        let node = caller(&self.node, &request).await?;
        let resp = node
            .user_get(&request.into_inner().name)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::AuthUserGetResponse {
            header: Some(header(&resp.header)),
            roles: resp.body.roles.into_iter().collect(),
        }))
    }

    async fn user_list(
        &self,
        request: Request<pb::AuthUserListRequest>,
    ) -> Result<Response<pb::AuthUserListResponse>, Status> {
        let node = caller(&self.node, &request).await?;
        let resp = node.user_list().await.map_err(to_status)?;
        Ok(Response::new(pb::AuthUserListResponse {
            header: Some(header(&resp.header)),
            users: resp.body,
        }))
    }

    async fn user_delete(
        &self,
        request: Request<pb::AuthUserDeleteRequest>,
    ) -> Result<Response<pb::AuthUserDeleteResponse>, Status> {
        let node = caller(&self.node, &request).await?;
        let resp = node
            .user_delete(&request.into_inner().name)
            .await
            .map_err(to_status)?;
        header_only!(resp, AuthUserDeleteResponse)
    }

    async fn user_change_password(
        &self,
        request: Request<pb::AuthUserChangePasswordRequest>,
    ) -> Result<Response<pb::AuthUserChangePasswordResponse>, Status> {
        let node = caller(&self.node, &request).await?;
        let req = request.into_inner();
        let resp = match new_password(&req.password, &req.hashed_password, false) {
            NewPassword::Plain(p) => node.user_change_password(&req.name, Some(p)).await,
            NewPassword::Hashed(h) => node.user_change_password_hashed(&req.name, Some(h)).await,
            NewPassword::None => node.user_change_password(&req.name, None).await,
        }
        .map_err(to_status)?;
        header_only!(resp, AuthUserChangePasswordResponse)
    }

    async fn user_grant_role(
        &self,
        request: Request<pb::AuthUserGrantRoleRequest>,
    ) -> Result<Response<pb::AuthUserGrantRoleResponse>, Status> {
        let node = caller(&self.node, &request).await?;
        let req = request.into_inner();
        let resp = node
            .user_grant_role(&req.user, &req.role)
            .await
            .map_err(to_status)?;
        header_only!(resp, AuthUserGrantRoleResponse)
    }

    async fn user_revoke_role(
        &self,
        request: Request<pb::AuthUserRevokeRoleRequest>,
    ) -> Result<Response<pb::AuthUserRevokeRoleResponse>, Status> {
        let node = caller(&self.node, &request).await?;
        let req = request.into_inner();
        let resp = node
            .user_revoke_role(&req.name, &req.role)
            .await
            .map_err(to_status)?;
        header_only!(resp, AuthUserRevokeRoleResponse)
    }

    async fn role_add(
        &self,
        request: Request<pb::AuthRoleAddRequest>,
    ) -> Result<Response<pb::AuthRoleAddResponse>, Status> {
        let node = caller(&self.node, &request).await?;
        let resp = node
            .role_add(&request.into_inner().name)
            .await
            .map_err(to_status)?;
        header_only!(resp, AuthRoleAddResponse)
    }

    async fn role_get(
        &self,
        request: Request<pb::AuthRoleGetRequest>,
    ) -> Result<Response<pb::AuthRoleGetResponse>, Status> {
        let node = caller(&self.node, &request).await?;
        let resp = node
            .role_get(&request.into_inner().role)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::AuthRoleGetResponse {
            header: Some(header(&resp.header)),
            perm: resp.body.permissions.iter().map(to_pb_permission).collect(),
        }))
    }

    async fn role_list(
        &self,
        request: Request<pb::AuthRoleListRequest>,
    ) -> Result<Response<pb::AuthRoleListResponse>, Status> {
        let node = caller(&self.node, &request).await?;
        let resp = node.role_list().await.map_err(to_status)?;
        Ok(Response::new(pb::AuthRoleListResponse {
            header: Some(header(&resp.header)),
            roles: resp.body,
        }))
    }

    async fn role_delete(
        &self,
        request: Request<pb::AuthRoleDeleteRequest>,
    ) -> Result<Response<pb::AuthRoleDeleteResponse>, Status> {
        let node = caller(&self.node, &request).await?;
        let resp = node
            .role_delete(&request.into_inner().role)
            .await
            .map_err(to_status)?;
        header_only!(resp, AuthRoleDeleteResponse)
    }

    async fn role_grant_permission(
        &self,
        request: Request<pb::AuthRoleGrantPermissionRequest>,
    ) -> Result<Response<pb::AuthRoleGrantPermissionResponse>, Status> {
        let node = caller(&self.node, &request).await?;
        let req = request.into_inner();
        let perm = req
            .perm
            .ok_or_else(|| Status::invalid_argument("etcdserver: permission not given"))?;
        let resp = node
            .role_grant_permission(&req.name, permission(perm)?)
            .await
            .map_err(to_status)?;
        header_only!(resp, AuthRoleGrantPermissionResponse)
    }

    async fn role_revoke_permission(
        &self,
        request: Request<pb::AuthRoleRevokePermissionRequest>,
    ) -> Result<Response<pb::AuthRoleRevokePermissionResponse>, Status> {
        let node = caller(&self.node, &request).await?;
        let req = request.into_inner();
        let range = KeyRange::from_etcd(req.key, req.range_end);
        let resp = node
            .role_revoke_permission(&req.role, range)
            .await
            .map_err(to_status)?;
        header_only!(resp, AuthRoleRevokePermissionResponse)
    }
}
