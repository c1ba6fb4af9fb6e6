//! etcd's KV service: Range, Put, DeleteRange, Txn, Compact.

use super::{to_status, ApiLimits};
use crate::convert;
use crate::pb::etcdserverpb as pb;
use keel::Node;
use keel_types::Revision;
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// etcd's KV service on a [`Node`].
#[derive(Clone, Debug)]
pub struct KvService {
    node: Arc<Node>,
    limits: ApiLimits,
}

impl KvService {
    /// The service on `node`, refusing txns over `limits.txn_ops_max`.
    pub fn new(node: Arc<Node>, limits: ApiLimits) -> Self {
        KvService { node, limits }
    }
}

#[tonic::async_trait]
impl pb::kv_server::Kv for KvService {
    async fn range(
        &self,
        request: Request<pb::RangeRequest>,
    ) -> Result<Response<pb::RangeResponse>, Status> {
        let node = Arc::new(super::caller(&self.node, &request).await?);
        let (req, consistency) = convert::range_request(request.into_inner())?;
        // A learner serves serializable ranges only (etcd).
        if consistency == keel::ReadConsistency::Linearizable {
            crate::status::refuse_on_learner(&node)?;
        }
        let resp = node.range(&req, consistency).await.map_err(to_status)?;
        Ok(Response::new(convert::range_response(
            &resp.header,
            resp.body,
        )))
    }

    async fn put(
        &self,
        request: Request<pb::PutRequest>,
    ) -> Result<Response<pb::PutResponse>, Status> {
        let node = Arc::new(super::caller(&self.node, &request).await?);
        crate::status::refuse_on_learner(&node)?;
        let req = convert::put_request(request.into_inner())?;
        let resp = node.put_request(req).await.map_err(to_status)?;
        Ok(Response::new(convert::put_response(
            &resp.header,
            resp.body,
        )))
    }

    async fn delete_range(
        &self,
        request: Request<pb::DeleteRangeRequest>,
    ) -> Result<Response<pb::DeleteRangeResponse>, Status> {
        let node = Arc::new(super::caller(&self.node, &request).await?);
        crate::status::refuse_on_learner(&node)?;
        let req = convert::delete_request(request.into_inner())?;
        let resp = node.delete_range(req).await.map_err(to_status)?;
        Ok(Response::new(convert::delete_response(
            &resp.header,
            resp.body,
        )))
    }

    /// Every txn goes through Raft, read-only ones included (linearizable either way).
    async fn txn(
        &self,
        request: Request<pb::TxnRequest>,
    ) -> Result<Response<pb::TxnResponse>, Status> {
        let node = Arc::new(super::caller(&self.node, &request).await?);
        crate::status::refuse_on_learner(&node)?;
        let req = convert::txn_request(request.into_inner(), self.limits.txn_ops_max)?;
        let resp = node.txn(req).await.map_err(to_status)?;
        Ok(Response::new(convert::txn_response(
            &resp.header,
            resp.body,
        )))
    }

    /// `physical` needs no wait: keel's compaction is effective (reads, watches and HashKV
    /// all ignore the dropped versions) once applied, whatever the progress of the physical
    /// cleanup behind it.
    async fn compact(
        &self,
        request: Request<pb::CompactionRequest>,
    ) -> Result<Response<pb::CompactionResponse>, Status> {
        let node = Arc::new(super::caller(&self.node, &request).await?);
        crate::status::refuse_on_learner(&node)?;
        let revision = Revision::from_etcd(request.into_inner().revision).unwrap_or_default();
        let resp = node.compact(revision).await.map_err(to_status)?;
        Ok(Response::new(pb::CompactionResponse {
            header: Some(convert::header(&resp.header)),
        }))
    }
}
