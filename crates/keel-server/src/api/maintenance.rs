//! etcd's Maintenance service: status, hashes, alarms, defragment, snapshot, leader transfer.

use super::{current_header, to_status, STATUS_VERSION};
use crate::convert;
use crate::pb::etcdserverpb as pb;
use bytes::Bytes;
use keel::Node;
use keel_types::{MemberId, Revision};
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// etcd's Maintenance service on a [`Node`].
#[derive(Clone, Debug)]
pub struct MaintenanceService {
    node: Arc<Node>,
}

impl MaintenanceService {
    /// The service on `node`.
    pub fn new(node: Arc<Node>) -> Self {
        MaintenanceService { node }
    }
}

/// Run a blocking read of the node's state export off the async workers.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, keel::NodeError> + Send + 'static,
) -> Result<T, Status> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Status::internal(format!("state export task failed: {e}")))?
        .map_err(to_status)
}

/// Responses of the snapshot stream in flight (the export thread waits when it is full).
const SNAPSHOT_RESPONSES_BUFFERED_MAX: usize = 4;

/// Read the node's export on a blocking thread and send it framed as
/// [`crate::snapshot_file`] describes, ending with etcd's SHA-256 trailer. `remaining_bytes`
/// counts down from the engine's size estimate and is 0 on the last response.
fn spawn_snapshot_stream(
    node: Arc<Node>,
    header: pb::ResponseHeader,
    estimate_bytes: u64,
    tx: tokio::sync::mpsc::Sender<Result<pb::SnapshotResponse, Status>>,
) {
    tokio::task::spawn_blocking(move || {
        let send = |blob: Vec<u8>, remaining_bytes: u64| {
            tx.blocking_send(Ok(pb::SnapshotResponse {
                header: Some(header),
                remaining_bytes,
                blob: Bytes::from(blob),
            }))
            .is_ok()
        };
        let export = match node.snapshot() {
            Ok(e) => e,
            Err(e) => {
                let _ = tx.blocking_send(Err(to_status(e)));
                return;
            }
        };
        let mut encoder = crate::snapshot_file::SnapshotEncoder::new();
        let mut sent: u64 = 0;
        let mut pending = encoder.header();
        for chunk in export {
            let chunk = match chunk {
                Ok(c) => c,
                Err(e) => {
                    let _ = tx.blocking_send(Err(to_status(e)));
                    return;
                }
            };
            let framed = match encoder.chunk(&chunk) {
                Ok(f) => f,
                Err(e) => {
                    let _ = tx.blocking_send(Err(Status::internal(e.to_string())));
                    return;
                }
            };
            sent += pending.len() as u64;
            // Never 0 before the last response, which alone says "done".
            let remaining = estimate_bytes.saturating_sub(sent).max(1);
            if !send(std::mem::replace(&mut pending, framed), remaining) {
                return;
            }
        }
        pending.extend(encoder.finish());
        let _ = send(pending, 0);
    });
}

#[tonic::async_trait]
impl pb::maintenance_server::Maintenance for MaintenanceService {
    /// This member's alarms (GET), or raise/clear one on this member (ACTIVATE/DEACTIVATE
    /// for this member's id or 0). Deviation from etcd: alarms are per member, not replicated
    /// (see keel's `Node::alarms`); CORRUPT is never raised.
    async fn alarm(
        &self,
        request: Request<pb::AlarmRequest>,
    ) -> Result<Response<pb::AlarmResponse>, Status> {
        let node = Arc::new(super::caller(&self.node, &request).await?);
        use pb::alarm_request::AlarmAction;
        crate::status::refuse_on_learner(&node)?;
        let request = request.into_inner();
        let me = node.id().get();
        let for_me = request.member_id == 0 || request.member_id == me;
        let nospace = request.alarm == pb::AlarmType::Nospace as i32;
        match AlarmAction::try_from(request.action) {
            Ok(AlarmAction::Get) => {}
            Ok(AlarmAction::Activate) if for_me && nospace => {
                node.activate_alarm(keel::Alarm::NoSpace)
                    .map_err(to_status)?;
            }
            Ok(AlarmAction::Deactivate) if for_me && nospace => {
                node.disarm_alarm(keel::Alarm::NoSpace).map_err(to_status)?;
            }
            Ok(AlarmAction::Activate | AlarmAction::Deactivate) => {}
            Err(_) => return Err(Status::invalid_argument("unknown alarm action")),
        }
        let alarms = (node.alarms().into_iter())
            .map(|a| pb::AlarmMember {
                member_id: me,
                alarm: match a {
                    keel::Alarm::NoSpace => pb::AlarmType::Nospace as i32,
                    _ => pb::AlarmType::None as i32,
                },
            })
            .collect();
        Ok(Response::new(pb::AlarmResponse {
            header: Some(current_header(&node).await?),
            alarms,
        }))
    }

    /// `raftIndex` is the committed index and `raftAppliedIndex` the applied one, as in
    /// etcd; `dbSizeInUse` is RocksDB's live-data estimate.
    async fn status(
        &self,
        request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let node = Arc::new(super::caller(&self.node, &request).await?);
        let s = node.status().await.map_err(to_status)?;
        let db_size = convert::signed(s.db_size_bytes);
        Ok(Response::new(pb::StatusResponse {
            header: Some(convert::header(&s.header)),
            version: STATUS_VERSION.to_owned(),
            db_size,
            leader: s.leader.map_or(0, MemberId::get),
            raft_index: s.committed_index,
            raft_term: s.header.raft_term,
            raft_applied_index: s.applied_index,
            errors: Vec::new(),
            db_size_in_use: convert::signed(s.db_in_use_bytes),
            is_learner: s.is_learner,
        }))
    }

    /// A full compaction of the storage engine (RocksDB's equivalent of etcd's defragment:
    /// deleted and compacted data stops taking space). Online: requests keep being served.
    async fn defragment(
        &self,
        request: Request<pb::DefragmentRequest>,
    ) -> Result<Response<pb::DefragmentResponse>, Status> {
        let node = Arc::new(super::caller(&self.node, &request).await?);
        crate::status::refuse_on_learner(&node)?;
        node.defragment().await.map_err(to_status)?;
        Ok(Response::new(pb::DefragmentResponse {
            header: Some(current_header(&node).await?),
        }))
    }

    /// A CRC-32C of this member's whole replicated state (the snapshot export). Like etcd's
    /// Hash, it covers member-local bookkeeping too; compare members with HashKV.
    async fn hash(
        &self,
        request: Request<pb::HashRequest>,
    ) -> Result<Response<pb::HashResponse>, Status> {
        let node = Arc::new(super::caller(&self.node, &request).await?);
        crate::status::refuse_on_learner(&node)?;
        let header = current_header(&node).await?;
        let node = Arc::clone(&node);
        let hash = blocking(move || {
            let mut crc = 0u32;
            for chunk in node.snapshot()? {
                crc = crc32c::crc32c_append(crc, &chunk?);
            }
            Ok(crc)
        })
        .await?;
        Ok(Response::new(pb::HashResponse {
            header: Some(header),
            hash,
        }))
    }

    async fn hash_kv(
        &self,
        request: Request<pb::HashKvRequest>,
    ) -> Result<Response<pb::HashKvResponse>, Status> {
        let node = Arc::new(super::caller(&self.node, &request).await?);
        crate::status::refuse_on_learner(&node)?;
        let revision = Revision::from_etcd(request.into_inner().revision).filter(|r| r.get() > 0);
        let resp = node.hash_kv(revision).await.map_err(to_status)?;
        Ok(Response::new(pb::HashKvResponse {
            header: Some(convert::header(&resp.header)),
            hash: resp.body.hash,
            compact_revision: resp.body.compact_revision.to_etcd(),
            hash_revision: resp.body.revision.to_etcd(),
        }))
    }

    type SnapshotStream =
        tokio_stream::wrappers::ReceiverStream<Result<pb::SnapshotResponse, Status>>;

    /// Deviation from etcd: the blob is keel's snapshot format (the checksummed chunks of the
    /// replicated state in [`crate::snapshot_file`]'s container, which keeps etcd's
    /// `512·k + 32`-byte shape and SHA-256 trailer so etcdctl saves it), not a bolt database;
    /// etcdutl cannot restore it. Streamed as it is read: memory stays bounded.
    async fn snapshot(
        &self,
        request: Request<pb::SnapshotRequest>,
    ) -> Result<Response<Self::SnapshotStream>, Status> {
        let node = Arc::new(super::caller(&self.node, &request).await?);
        crate::status::refuse_on_learner(&node)?;
        let header = current_header(&node).await?;
        let estimate_bytes = node.status().await.map_err(to_status)?.db_size_bytes;
        let (tx, rx) = tokio::sync::mpsc::channel(SNAPSHOT_RESPONSES_BUFFERED_MAX);
        spawn_snapshot_stream(Arc::clone(&node), header, estimate_bytes, tx);
        Ok(Response::new(tokio_stream::wrappers::ReceiverStream::new(
            rx,
        )))
    }

    /// Must be called on the leader, as in etcd.
    async fn move_leader(
        &self,
        request: Request<pb::MoveLeaderRequest>,
    ) -> Result<Response<pb::MoveLeaderResponse>, Status> {
        let node = Arc::new(super::caller(&self.node, &request).await?);
        crate::status::refuse_on_learner(&node)?;
        let target = MemberId::new(request.into_inner().target_id);
        node.move_leader(target)
            .await
            .map_err(|e| crate::status::from_move_leader_error(&e))?;
        Ok(Response::new(pb::MoveLeaderResponse {
            header: Some(current_header(&node).await?),
        }))
    }

    /// keel has one storage format and no cluster version negotiation: nothing to downgrade.
    async fn downgrade(
        &self,
        _request: Request<pb::DowngradeRequest>,
    ) -> Result<Response<pb::DowngradeResponse>, Status> {
        Err(Status::unimplemented(
            "keel does not support cluster downgrades",
        ))
    }
}
