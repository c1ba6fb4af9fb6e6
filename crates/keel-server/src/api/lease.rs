//! etcd's Lease service: grant, revoke, keep-alive (a stream), time-to-live, list.

use super::{current_header, to_status, ApiLimits};
use crate::convert;
use crate::pb::etcdserverpb as pb;
use futures_util::StreamExt;
use keel::{Node, NodeError};
use keel_types::LeaseId;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

/// Keep-alive answers buffered per stream before the server waits for the client to read.
const KEEP_ALIVE_BUFFER: usize = 16;

/// etcd's Lease service on a [`Node`].
#[derive(Clone, Debug)]
pub struct LeaseService {
    node: Arc<Node>,
    limits: ApiLimits,
}

impl LeaseService {
    /// The service on `node`; a keep-alive stream renews at most
    /// `limits.keep_alive_leases_per_stream_max` distinct leases.
    pub fn new(node: Arc<Node>, limits: ApiLimits) -> Self {
        LeaseService { node, limits }
    }
}

/// One keep-alive. An unknown lease (0 included) is answered with TTL 0 rather than an
/// error, as etcd does (etcd: server/etcdserver/api/v3rpc/lease.go `leaseKeepAlive`).
async fn keep_alive_once(node: &Node, id: i64) -> Result<pb::LeaseKeepAliveResponse, Status> {
    let renewed = match LeaseId::new(id) {
        Some(lease) => match node.lease_keep_alive(lease).await {
            Ok(resp) => Some(resp),
            Err(NodeError::LeaseNotFound { .. }) => None,
            Err(e) => return Err(to_status(e)),
        },
        None => None,
    };
    Ok(match renewed {
        Some(resp) => pb::LeaseKeepAliveResponse {
            header: Some(convert::header(&resp.header)),
            id,
            ttl: resp.body.ttl_secs,
        },
        None => pb::LeaseKeepAliveResponse {
            header: Some(current_header(node).await?),
            id,
            ttl: 0,
        },
    })
}

/// Answer every keep-alive of one stream, in order, until the client closes it, stops
/// reading, or a call fails (the error ends the stream, as in etcd).
async fn keep_alive_loop(
    node: Arc<Node>,
    mut inbound: Streaming<pb::LeaseKeepAliveRequest>,
    tx: mpsc::Sender<Result<pb::LeaseKeepAliveResponse, Status>>,
    leases_max: usize,
) {
    let mut seen = std::collections::HashSet::new();
    while let Some(Ok(request)) = inbound.next().await {
        let reply = if seen.len() >= leases_max && !seen.contains(&request.id) {
            Err(Status::resource_exhausted(crate::status::TOO_MANY_REQUESTS))
        } else {
            seen.insert(request.id);
            keep_alive_once(&node, request.id).await
        };
        let failed = reply.is_err();
        if tx.send(reply).await.is_err() || failed {
            return;
        }
    }
}

#[tonic::async_trait]
impl pb::lease_server::Lease for LeaseService {
    /// ID 0 lets the cluster choose the id.
    async fn lease_grant(
        &self,
        request: Request<pb::LeaseGrantRequest>,
    ) -> Result<Response<pb::LeaseGrantResponse>, Status> {
        let node = Arc::new(super::caller(&self.node, &request).await?);
        crate::status::refuse_on_learner(&node)?;
        let req = request.into_inner();
        let resp = node
            .lease_grant(req.ttl, LeaseId::new(req.id))
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::LeaseGrantResponse {
            header: Some(convert::header(&resp.header)),
            id: resp.body.id.get(),
            ttl: resp.body.ttl_secs,
            error: String::new(),
        }))
    }

    async fn lease_revoke(
        &self,
        request: Request<pb::LeaseRevokeRequest>,
    ) -> Result<Response<pb::LeaseRevokeResponse>, Status> {
        let node = Arc::new(super::caller(&self.node, &request).await?);
        crate::status::refuse_on_learner(&node)?;
        let id = request.into_inner().id;
        // Lease 0 means "no lease": revoking it revokes a lease that does not exist.
        let lease =
            LeaseId::new(id).ok_or_else(|| Status::not_found(crate::status::LEASE_NOT_FOUND))?;
        let resp = node.lease_revoke(lease).await.map_err(to_status)?;
        Ok(Response::new(pb::LeaseRevokeResponse {
            header: Some(convert::header(&resp.header)),
        }))
    }

    type LeaseKeepAliveStream = ReceiverStream<Result<pb::LeaseKeepAliveResponse, Status>>;

    async fn lease_keep_alive(
        &self,
        request: Request<Streaming<pb::LeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
        let node = Arc::new(super::caller(&self.node, &request).await?);
        crate::status::refuse_on_learner(&node)?;
        let (tx, rx) = mpsc::channel(KEEP_ALIVE_BUFFER);
        let leases_max = self.limits.keep_alive_leases_per_stream_max;
        tokio::spawn(keep_alive_loop(
            Arc::clone(&node),
            request.into_inner(),
            tx,
            leases_max,
        ));
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    /// An unknown lease is answered with TTL -1, not an error, as etcd does.
    async fn lease_time_to_live(
        &self,
        request: Request<pb::LeaseTimeToLiveRequest>,
    ) -> Result<Response<pb::LeaseTimeToLiveResponse>, Status> {
        let node = Arc::new(super::caller(&self.node, &request).await?);
        crate::status::refuse_on_learner(&node)?;
        let req = request.into_inner();
        let found = match LeaseId::new(req.id) {
            Some(lease) => match node.lease_time_to_live(lease, req.keys).await {
                Ok(resp) => Some(resp),
                Err(NodeError::LeaseNotFound { .. }) => None,
                Err(e) => return Err(to_status(e)),
            },
            None => None,
        };
        let answer = match found {
            Some(resp) => pb::LeaseTimeToLiveResponse {
                header: Some(convert::header(&resp.header)),
                id: req.id,
                // Whole seconds left, rounded down as etcd does.
                ttl: convert::signed(resp.body.remaining.as_secs()),
                granted_ttl: resp.body.granted_ttl_secs,
                keys: resp.body.keys,
            },
            None => pb::LeaseTimeToLiveResponse {
                header: Some(current_header(&node).await?),
                id: req.id,
                ttl: -1,
                granted_ttl: 0,
                keys: Vec::new(),
            },
        };
        Ok(Response::new(answer))
    }

    async fn lease_leases(
        &self,
        request: Request<pb::LeaseLeasesRequest>,
    ) -> Result<Response<pb::LeaseLeasesResponse>, Status> {
        let node = Arc::new(super::caller(&self.node, &request).await?);
        crate::status::refuse_on_learner(&node)?;
        let resp = node.leases().await.map_err(to_status)?;
        Ok(Response::new(pb::LeaseLeasesResponse {
            header: Some(convert::header(&resp.header)),
            leases: resp
                .body
                .into_iter()
                .map(|id| pb::LeaseStatus { id: id.get() })
                .collect(),
        }))
    }
}
