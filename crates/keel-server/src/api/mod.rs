//! etcd's v3 gRPC API (KV, Watch, Lease, Cluster, Maintenance) served by a [`keel::Node`].
//!
//! Each service is a thin adapter: decode the request ([`crate::convert`]), call the node,
//! encode the answer, and turn errors into etcd's statuses ([`crate::status`]). Every call
//! acts for the token in its `token` metadata ([`caller`]): with auth enabled, the node checks
//! the caller's permissions.
//!
//! What differs from etcd is marked `Deviation from etcd` where it happens; in short:
//! Defragment compacts RocksDB online, alarms are per member, Snapshot streams
//! keel's snapshot format (not a bolt database), and Downgrade is not supported.

mod auth;
mod cluster;
mod kv;
mod lease;
mod maintenance;
mod watch;

pub use auth::AuthService;
pub use cluster::ClusterService;
pub use kv::KvService;
pub use lease::LeaseService;
pub use maintenance::MaintenanceService;
pub use watch::WatchService;

use crate::pb::etcdserverpb::{
    auth_server::AuthServer, cluster_server::ClusterServer, kv_server::KvServer,
    lease_server::LeaseServer, maintenance_server::MaintenanceServer, watch_server::WatchServer,
    ResponseHeader,
};
use keel::Node;
use std::sync::Arc;
use std::time::Duration;
use tonic::Status;

/// The etcd API version keel speaks (etcdctl 3.4 and 3.5 parse it and enable their 3.5
/// features by it).
pub const ETCD_VERSION: &str = etcd_api_version!();

/// The version Maintenance Status reports: the etcd API version with keel's version as
/// semver build metadata (`3.5.0+keel.0.1.0`), which version comparisons ignore, so clients
/// that gate features on the server version see 3.5.0.
pub const STATUS_VERSION: &str = concat!(etcd_api_version!(), "+keel.", env!("CARGO_PKG_VERSION"));

/// Room for gRPC framing and protobuf envelope on top of the request limit (etcd grants the
/// same 512 KiB: its gRPC receive limit is `--max-request-bytes` plus this).
pub const GRPC_OVERHEAD_BYTES: usize = 512 * 1024;

/// Limits of the API layer (etcd's defaults).
///
/// # Examples
/// ```
/// let limits = keel_server::api::ApiLimits { txn_ops_max: 64, ..Default::default() };
/// assert_eq!(limits.request_bytes_max, 1536 * 1024);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ApiLimits {
    /// Most compares, and most operations per branch, in one txn (etcd: `--max-txn-ops`, 128).
    pub txn_ops_max: usize,
    /// Largest request (etcd: `--max-request-bytes`, 1.5 MiB); also the size a fragmenting
    /// watcher's responses are split to.
    pub request_bytes_max: usize,
    /// Period of the progress notifications sent to watchers that asked for them (etcd's
    /// default: 10 minutes).
    pub watch_progress_interval: Duration,
    /// Most watchers on one Watch stream (`--max-watchers-per-stream`).
    pub watchers_per_stream_max: usize,
    /// Most distinct leases renewed over one keep-alive stream
    /// (`--max-leases-per-keepalive-stream`).
    pub keep_alive_leases_per_stream_max: usize,
}

impl Default for ApiLimits {
    fn default() -> Self {
        ApiLimits {
            txn_ops_max: keel_storage::limits::TXN_OPS_MAX,
            request_bytes_max: keel_storage::limits::REQUEST_BYTES_MAX,
            watch_progress_interval: Duration::from_secs(600),
            watchers_per_stream_max: 100_000,
            keep_alive_leases_per_stream_max: 100_000,
        }
    }
}

/// The five etcd services on `node`, ready to serve with tonic (e.g.
/// `tonic::transport::Server::builder().add_routes(routes)`). Requests larger than
/// `limits.request_bytes_max` plus [`GRPC_OVERHEAD_BYTES`] are refused by gRPC itself.
///
/// # Examples
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use std::sync::Arc;
/// let node = keel::NodeBuilder::new(keel_types::MemberId::new(1)).start().await?;
/// let routes = keel_server::api::routes(Arc::new(node), Default::default());
/// tonic::transport::Server::builder()
///     .add_routes(routes)
///     .serve("127.0.0.1:2379".parse()?)
///     .await?;
/// # Ok(())
/// # }
/// ```
pub fn routes(node: Arc<Node>, limits: ApiLimits) -> tonic::service::Routes {
    let decode_max = limits.request_bytes_max.saturating_add(GRPC_OVERHEAD_BYTES);
    let kv = KvServer::new(KvService::new(Arc::clone(&node), limits))
        .max_decoding_message_size(decode_max);
    let watch = WatchServer::new(WatchService::new(Arc::clone(&node), limits))
        .max_decoding_message_size(decode_max);
    let lease = LeaseServer::new(LeaseService::new(Arc::clone(&node), limits))
        .max_decoding_message_size(decode_max);
    let cluster = ClusterServer::new(ClusterService::new(Arc::clone(&node)))
        .max_decoding_message_size(decode_max);
    let maintenance = MaintenanceServer::new(MaintenanceService::new(Arc::clone(&node)))
        .max_decoding_message_size(decode_max);
    let auth = AuthServer::new(AuthService::new(node)).max_decoding_message_size(decode_max);
    tonic::service::Routes::new(kv)
        .add_service(watch)
        .add_service(lease)
        .add_service(cluster)
        .add_service(maintenance)
        .add_service(auth)
}

/// The status for a node error (see [`crate::status`]).
fn to_status(e: keel::NodeError) -> Status {
    crate::status::from_node_error(&e)
}

/// A header describing the member's current state, for answers that have no write or read of
/// their own (membership, alarms, watch control messages).
async fn current_header(node: &Node) -> Result<ResponseHeader, Status> {
    let header = node.current_header().map_err(to_status)?;
    Ok(crate::convert::header(&header))
}

/// The node handle acting for the caller of `request`, named by the token etcd's clients
/// send in the `token` metadata after Authenticate (see [`keel::Node::with_token`]).
///
/// # Errors
/// `Unauthenticated` "etcdserver: invalid auth token" for an unknown or expired token.
/// Without a token, the common name of a verified client certificate names the user, as in
/// etcd.
pub(crate) async fn caller<T>(node: &Node, request: &tonic::Request<T>) -> Result<Node, Status> {
    let token = request
        .metadata()
        .get(TOKEN_METADATA)
        .and_then(|v| v.to_str().ok());
    if token.is_none() {
        if let Some(cn) = crate::tls::peer_common_name(request) {
            return Ok(node.with_verified_user(&cn));
        }
    }
    node.with_token(token).await.map_err(to_status)
}

/// The gRPC metadata key of the auth token (etcd's).
pub const TOKEN_METADATA: &str = "token";
