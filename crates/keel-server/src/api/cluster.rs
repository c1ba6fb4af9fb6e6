//! etcd's Cluster service: member add, remove, update, list, promote.

use super::{current_header, to_status};
use crate::convert;
use crate::pb::etcdserverpb as pb;
use crate::status::RequestError;
use keel::{MemberChange, Node, ReadConsistency};
use keel_storage::mvcc::RangeRequest;
use keel_types::{KeyRange, MemberId};
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// etcd's Cluster service on a [`Node`]. Membership calls may be made on any member; the
/// node forwards them to the leader.
#[derive(Clone, Debug)]
pub struct ClusterService {
    node: Arc<Node>,
}

impl ClusterService {
    /// The service on `node`.
    pub fn new(node: Arc<Node>) -> Self {
        ClusterService { node }
    }

    /// The header and member list after a change.
    async fn answer(
        &self,
        change: MemberChange,
    ) -> Result<(pb::ResponseHeader, Vec<pb::Member>), Status> {
        let header = current_header(&self.node).await?;
        Ok((
            header,
            change.members.into_iter().map(convert::member).collect(),
        ))
    }
}

fn urls(peer_urls: &[String]) -> Result<Vec<&str>, RequestError> {
    if peer_urls.is_empty() {
        return Err(RequestError::BadMemberUrls);
    }
    Ok(peer_urls.iter().map(String::as_str).collect())
}

/// etcd's MemberAdd carries no name: a member is unnamed until it starts and publishes the
/// name it was started with.
const UNNAMED: &str = "";

#[tonic::async_trait]
impl pb::cluster_server::Cluster for ClusterService {
    /// `isLearner = false` (etcdctl's default) adds a voter, `true` a learner, as in etcd.
    async fn member_add(
        &self,
        request: Request<pb::MemberAddRequest>,
    ) -> Result<Response<pb::MemberAddResponse>, Status> {
        let node = Arc::new(super::caller(&self.node, &request).await?);
        crate::status::refuse_on_learner(&node)?;
        let req = request.into_inner();
        let peer_urls = urls(&req.peer_ur_ls)?;
        let change = if req.is_learner {
            node.member_add_learner(UNNAMED, &peer_urls).await
        } else {
            node.member_add_voter(UNNAMED, &peer_urls).await
        }
        .map_err(to_status)?;
        let added = change.member_id;
        let (header, members) = self.answer(change).await?;
        let member = members.iter().find(|m| m.id == added.get()).cloned();
        Ok(Response::new(pb::MemberAddResponse {
            header: Some(header),
            member,
            members,
        }))
    }

    async fn member_remove(
        &self,
        request: Request<pb::MemberRemoveRequest>,
    ) -> Result<Response<pb::MemberRemoveResponse>, Status> {
        let node = Arc::new(super::caller(&self.node, &request).await?);
        crate::status::refuse_on_learner(&node)?;
        let id = MemberId::new(request.into_inner().id);
        let change = node.member_remove(id).await.map_err(to_status)?;
        let (header, members) = self.answer(change).await?;
        Ok(Response::new(pb::MemberRemoveResponse {
            header: Some(header),
            members,
        }))
    }

    async fn member_update(
        &self,
        request: Request<pb::MemberUpdateRequest>,
    ) -> Result<Response<pb::MemberUpdateResponse>, Status> {
        let node = Arc::new(super::caller(&self.node, &request).await?);
        crate::status::refuse_on_learner(&node)?;
        let req = request.into_inner();
        let peer_urls = urls(&req.peer_ur_ls)?;
        let change = node
            .member_update(MemberId::new(req.id), &peer_urls)
            .await
            .map_err(to_status)?;
        let (header, members) = self.answer(change).await?;
        Ok(Response::new(pb::MemberUpdateResponse {
            header: Some(header),
            members,
        }))
    }

    /// With `linearizable`, the list reflects every change acknowledged before the call: the
    /// member first catches up with the leader's commit point (a linearizable read), then
    /// lists the records it has applied.
    async fn member_list(
        &self,
        request: Request<pb::MemberListRequest>,
    ) -> Result<Response<pb::MemberListResponse>, Status> {
        let node = Arc::new(super::caller(&self.node, &request).await?);
        crate::status::refuse_on_learner(&node)?;
        if request.into_inner().linearizable {
            let barrier = RangeRequest {
                count_only: true,
                ..RangeRequest::new(KeyRange::key(&b"\0"[..]))
            };
            // The barrier reads no user data: the host's handle, not the caller's (whose
            // permissions need not cover the barrier key).
            self.node
                .range(&barrier, ReadConsistency::Linearizable)
                .await
                .map_err(to_status)?;
        }
        let members = node.members().await.map_err(to_status)?;
        Ok(Response::new(pb::MemberListResponse {
            header: Some(current_header(&node).await?),
            members: members.into_iter().map(convert::member).collect(),
        }))
    }

    async fn member_promote(
        &self,
        request: Request<pb::MemberPromoteRequest>,
    ) -> Result<Response<pb::MemberPromoteResponse>, Status> {
        let node = Arc::new(super::caller(&self.node, &request).await?);
        crate::status::refuse_on_learner(&node)?;
        let id = MemberId::new(request.into_inner().id);
        let change = node.member_promote(id).await.map_err(to_status)?;
        let (header, members) = self.answer(change).await?;
        Ok(Response::new(pb::MemberPromoteResponse {
            header: Some(header),
            members,
        }))
    }
}
