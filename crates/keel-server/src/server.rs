//! Running a member: bootstrap from flags (new cluster, joining an existing one, or a restart
//! where the data directory wins), the peer and client gRPC servers, and graceful shutdown.

use crate::config::ServerConfig;
use crate::peer::{GrpcNetwork, HandlerSlot, PeerServer, PeerTraffic};
use keel::{MemberStatus, Node, NodeBuilder, NodeError, Timings};
use keel_membership::{ClusterState, Member, MemberName, MemberUrl};
use keel_types::{ClusterId, MemberId};
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;

/// The file in the data directory that records this member's id (written after the first
/// successful start; its presence means "restart: the data directory wins over the flags").
pub const MEMBER_FILE: &str = "keel-member";
/// The RocksDB directory inside the data directory.
pub const DB_DIR: &str = "member";
/// How often the peer links are re-read from the member records.
const PEER_REFRESH_INTERVAL: Duration = Duration::from_millis(500);
/// How long a joining member asks the cluster for its records.
const JOIN_DEADLINE: Duration = Duration::from_secs(30);

/// Why a member could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// The node refused to start or failed.
    #[error(transparent)]
    Node(#[from] NodeError),
    /// The joining member does not match the running cluster's records.
    #[error(transparent)]
    Membership(#[from] keel_membership::MembershipError),
    /// A listener or the data directory failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A gRPC server failed.
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// This member's network: its traffic counters, TLS to `https://` peers, the address its
/// connections leave from.
fn peer_network(config: &ServerConfig, id: MemberId, traffic: &PeerTraffic) -> GrpcNetwork {
    GrpcNetwork::with_traffic(id, traffic.clone())
        .with_client_tls(config.peer_tls.as_ref().map(crate::tls::TlsFiles::client))
        .with_source_address(config.peer_source_address)
}

/// A server builder, with TLS when `tls` is given.
fn server_builder(
    tls: Option<&crate::tls::TlsFiles>,
    max_concurrent_streams: u32,
) -> Result<tonic::transport::Server, ServerError> {
    let builder =
        tonic::transport::Server::builder().max_concurrent_streams(max_concurrent_streams);
    Ok(match tls {
        Some(t) => builder.tls_config(t.server())?,
        None => builder,
    })
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ServerError {
    let what = what.into();
    move |source| ServerError::Io { what, source }
}

/// A running member: its node, its bound addresses and the handle to stop it.
#[derive(Debug)]
pub struct RunningServer {
    /// The node.
    pub node: Node,
    /// The addresses clients are served on.
    pub client_addrs: Vec<SocketAddr>,
    /// The addresses peers are served on.
    pub peer_addrs: Vec<SocketAddr>,
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<ServeTask>,
}

impl RunningServer {
    /// Stop serving, then stop the node (storage released when this returns).
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
        self.node.shutdown().await;
    }
}

/// Bind every address before anything else happens, so a port in use fails fast.
async fn bind_all(addrs: &[SocketAddr], what: &str) -> Result<Vec<TcpListener>, ServerError> {
    let mut listeners = Vec::with_capacity(addrs.len());
    for addr in addrs {
        let l = TcpListener::bind(addr)
            .await
            .map_err(io(format!("listen for {what} on {addr}")))?;
        listeners.push(l);
    }
    Ok(listeners)
}

/// Accepted connections with TCP_NODELAY: without it, Nagle's algorithm and delayed ACKs
/// add ~40 ms to small gRPC responses (measured: p50 of a serializable get at 41 ms).
fn incoming(listener: TcpListener) -> TcpIncoming {
    TcpIncoming::from(listener).with_nodelay(Some(true))
}

fn local_addrs(listeners: &[TcpListener]) -> Result<Vec<SocketAddr>, ServerError> {
    listeners
        .iter()
        .map(|l| l.local_addr().map_err(io("local address")))
        .collect()
}

/// Start a member as `config` says and serve until [`RunningServer::shutdown`].
///
/// # Errors
/// [`ServerError`]: a port in use, a data directory of another cluster, a joining member the
/// cluster does not list, a node that fails to start.
pub async fn start(config: &ServerConfig) -> Result<RunningServer, ServerError> {
    let peer_listeners = bind_all(&config.peer_addrs, "peers").await?;
    let client_listeners = bind_all(&config.client_addrs, "clients").await?;
    let metrics_listeners = bind_all(&config.metrics_addrs, "metrics").await?;
    let peer_addrs = local_addrs(&peer_listeners)?;
    let client_addrs = local_addrs(&client_listeners)?;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::new();

    // Peers can reach this member (and are told "starting") before the node runs.
    let slot = HandlerSlot::default();
    let traffic = PeerTraffic::default();
    // TLS material is checked before anything is served.
    // Members open a handful of streams each; clients are bounded by the flag.
    let peer_server = server_builder(config.peer_tls.as_ref(), u32::MAX)?;
    let client_server = server_builder(config.client_tls.as_ref(), config.max_concurrent_streams)?;
    let peer_service = PeerServer::new(slot.clone())
        .with_traffic(traffic.clone())
        .with_allowed_cn(config.peer_cert_allowed_cn.clone())
        .into_service();
    serve_peers(
        peer_server,
        peer_listeners,
        &peer_service,
        &stopped,
        &mut tasks,
    );

    let (node, network) = match start_node(config, &traffic).await {
        Ok(started) => started,
        Err(e) => {
            let _ = stop.send(true);
            return Err(e);
        }
    };
    slot.set(node.id(), node.peer_handler());
    traffic.register(&node.metrics());
    spawn_peer_refresh(node.clone(), Arc::clone(&network), stopped.clone());
    if let Some(retention) = config.auto_compaction {
        crate::compactor::spawn(
            node.clone(),
            retention,
            Arc::new(keel_types::SystemClock::new()),
        );
    }

    serve_clients(
        config,
        &node,
        client_listeners,
        metrics_listeners,
        client_server,
        &stopped,
        &mut tasks,
    );
    tracing::info!(
        name = %config.bootstrap.name(),
        member_id = %node.id(),
        cluster_id = %node.cluster_id(),
        client_urls = ?client_addrs,
        peer_urls = ?peer_addrs,
        "ready to serve client requests"
    );
    Ok(RunningServer {
        node,
        client_addrs,
        peer_addrs,
        stop,
        tasks,
    })
}

type ServeTask = tokio::task::JoinHandle<Result<(), tonic::transport::Error>>;

/// Serve etcd's gRPC API and the HTTP endpoints on the client listeners, and the HTTP
/// endpoints alone on the metrics listeners.
fn serve_clients(
    config: &ServerConfig,
    node: &Node,
    client_listeners: Vec<TcpListener>,
    metrics_listeners: Vec<TcpListener>,
    client_server: tonic::transport::Server,
    stopped: &tokio::sync::watch::Receiver<bool>,
    tasks: &mut Vec<ServeTask>,
) {
    let limits = crate::api::ApiLimits {
        request_bytes_max: config.max_request_bytes,
        txn_ops_max: config.max_txn_ops,
        watchers_per_stream_max: config.max_watchers_per_stream,
        keep_alive_leases_per_stream_max: config.max_leases_per_keepalive_stream,
        ..crate::api::ApiLimits::default()
    };
    let shared = Arc::new(node.clone());
    // gRPC and the HTTP endpoints share the client port (HTTP/1.1 is accepted for the latter).
    let client_routes = crate::http::with_grpc(
        crate::api::routes(Arc::clone(&shared), limits),
        Arc::clone(&shared),
    );
    let metrics_routes = crate::http::router(Arc::clone(&shared));
    let plain_server = tonic::transport::Server::builder();
    let serve = client_listeners
        .into_iter()
        .map(|l| (l, client_routes.clone(), client_server.clone()))
        .chain(
            metrics_listeners
                .into_iter()
                .map(|l| (l, metrics_routes.clone(), plain_server.clone())),
        );
    for (l, routes, server) in serve {
        let mut stopped = stopped.clone();
        tasks.push(tokio::spawn(async move {
            server
                .accept_http1(true)
                .add_routes(tonic::service::Routes::from(routes))
                .serve_with_incoming_shutdown(incoming(l), async move {
                    let _ = stopped.wait_for(|s| *s).await;
                })
                .await
        }));
    }
}

/// Serve the peer protocol on `listeners` with the node's handler once `slot` holds it.
fn serve_peers(
    server: tonic::transport::Server,
    listeners: Vec<TcpListener>,
    peer_service: &crate::pb::keelpeer::peer_server::PeerServer<PeerServer>,
    stopped: &tokio::sync::watch::Receiver<bool>,
    tasks: &mut Vec<ServeTask>,
) {
    for l in listeners {
        let mut stopped = stopped.clone();
        let service = peer_service.clone();
        let mut server = server.clone();
        tasks.push(tokio::spawn(async move {
            server
                .add_service(service)
                .serve_with_incoming_shutdown(incoming(l), async move {
                    let _ = stopped.wait_for(|s| *s).await;
                })
                .await
        }));
    }
}

/// Run until `signal` completes, then shut down gracefully.
///
/// # Errors
/// As [`start`].
pub async fn run(
    config: &ServerConfig,
    signal: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    let server = start(config).await?;
    signal.await;
    tracing::info!("received stop signal, shutting down");
    server.shutdown().await;
    Ok(())
}

/// Keep the peer links equal to the member records (members added, updated, removed).
fn spawn_peer_refresh(
    node: Node,
    network: Arc<GrpcNetwork>,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) {
    tokio::spawn(async move {
        loop {
            match node.members().await {
                Ok(members) => {
                    if let Err(e) = network.set_peers(&members) {
                        tracing::warn!(error = %e, "a member's peer URL is unusable");
                    }
                }
                Err(NodeError::Stopped) => return,
                Err(e) => tracing::debug!(error = %e, "reading member records"),
            }
            tokio::select! {
                _ = stopped.wait_for(|s| *s) => return,
                () = tokio::time::sleep(PEER_REFRESH_INTERVAL) => {}
            }
        }
    });
}

fn member_file(data_dir: &Path) -> PathBuf {
    data_dir.join(MEMBER_FILE)
}

/// The member id recorded by a previous start, if any.
fn recorded_id(data_dir: &Path) -> Result<Option<MemberId>, ServerError> {
    let path = member_file(data_dir);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(format!("read {}", path.display()))(e)),
    };
    let id = text
        .lines()
        .find_map(|l| l.strip_prefix("member_id="))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .filter(|v| *v != 0)
        .ok_or_else(|| ServerError::Io {
            what: format!("read {}", path.display()),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, "no member_id line"),
        })?;
    Ok(Some(MemberId::new(id)))
}

/// Record this member's id durably (write, fsync, rename, fsync the directory).
fn record_id(data_dir: &Path, id: MemberId, cluster: ClusterId) -> Result<(), ServerError> {
    let path = member_file(data_dir);
    let tmp = path.with_extension("tmp");
    let text = format!("member_id={:x}\ncluster_id={:x}\n", id.get(), cluster.get());
    let what = format!("write {}", path.display());
    {
        use std::io::Write as _;
        let mut f = std::fs::File::create(&tmp).map_err(io(what.clone()))?;
        f.write_all(text.as_bytes()).map_err(io(what.clone()))?;
        f.sync_all().map_err(io(what.clone()))?;
    }
    std::fs::rename(&tmp, &path).map_err(io(what.clone()))?;
    std::fs::File::open(data_dir)
        .and_then(|d| d.sync_all())
        .map_err(io(what))?;
    Ok(())
}

fn builder(config: &ServerConfig, id: MemberId, network: &Arc<GrpcNetwork>) -> NodeBuilder {
    let urls = |u: &[MemberUrl]| u.iter().map(|u| u.as_str().to_owned()).collect::<Vec<_>>();
    NodeBuilder::new(id)
        .name(config.bootstrap.name().as_str())
        .data_dir(config.data_dir.join(DB_DIR))
        .peer_urls(urls(config.bootstrap.peer_urls()))
        .client_urls(urls(config.bootstrap.client_urls()))
        .network(Arc::clone(network) as Arc<dyn keel::Network>)
        .slow_request_threshold(config.slow_request)
        .quota_backend_bytes(config.quota_backend_bytes)
        .auth(config.auth.clone())
        .mvcc_limits(keel_storage::MvccLimits {
            key_bytes_max: config.max_request_bytes,
            value_bytes_max: config.max_request_bytes,
            request_bytes_max: config.max_request_bytes,
            txn_ops_max: config.max_txn_ops,
        })
        .timings(Timings {
            heartbeat_interval: config.heartbeat_interval,
            election_timeout: config.election_timeout,
            ..Timings::default()
        })
}

/// Start the node: restart from the data directory if it has been started before, else
/// bootstrap a new cluster or join an existing one as the flags say.
async fn start_node(
    config: &ServerConfig,
    traffic: &PeerTraffic,
) -> Result<(Node, Arc<GrpcNetwork>), ServerError> {
    std::fs::create_dir_all(&config.data_dir)
        .map_err(io(format!("create {}", config.data_dir.display())))?;
    if let Some(id) = recorded_id(&config.data_dir)? {
        tracing::info!(member_id = %id, "restarting from the data directory (bootstrap flags ignored)");
        let network = Arc::new(peer_network(config, id, traffic));
        if config.force_new_cluster {
            tracing::warn!(member_id = %id, "--force-new-cluster: membership rewritten to this member alone");
        }
        let node = builder(config, id, &network)
            .join_existing(Vec::new())
            .force_new_cluster(config.force_new_cluster)
            .start()
            .await?;
        network.set_peers(&node.members().await?)?;
        return Ok((node, network));
    }
    let (node, network) = match (config.bootstrap.state(), &config.discovery) {
        (ClusterState::New, Some(d)) => {
            let discovered = discover(config, d).await?;
            bootstrap_new(&discovered, traffic).await?
        }
        (ClusterState::New, None) => bootstrap_new(config, traffic).await?,
        (ClusterState::Existing, _) => join_existing(config, traffic).await?,
    };
    record_id(&config.data_dir, node.id(), node.cluster_id())?;
    Ok((node, network))
}

/// Run discovery and return the configuration with the discovered initial cluster (and the
/// discovery token as the cluster token, so every member derives the same ids).
async fn discover(
    config: &ServerConfig,
    d: &crate::config::DiscoveryConfig,
) -> Result<ServerConfig, ServerError> {
    let discovery = keel_membership::Discovery::new(
        d.token.clone(),
        config.bootstrap.name().clone(),
        config.bootstrap.peer_urls().to_vec(),
    )?;
    let runtime = tokio::runtime::Handle::current();
    let endpoints = d.endpoints.clone();
    tracing::info!(endpoints = %endpoints, token = %d.token, "discovering the initial cluster");
    let initial = tokio::task::spawn_blocking(move || {
        let kv = crate::discovery::GrpcDiscoveryKv::new(runtime, &endpoints)?;
        crate::discovery::discover(&kv, &discovery, &keel_types::SystemClock::new())
    })
    .await
    .map_err(|e| ServerError::Io {
        what: "discovery".into(),
        source: std::io::Error::other(e.to_string()),
    })??;
    let mut flags = config.bootstrap_flags.clone();
    flags.initial_cluster = initial.to_string();
    flags.initial_cluster_token = d.token.as_str().to_owned();
    let mut discovered = config.clone();
    discovered.bootstrap = keel_membership::BootstrapConfig::from_flags(&flags)?;
    Ok(discovered)
}

async fn bootstrap_new(
    config: &ServerConfig,
    traffic: &PeerTraffic,
) -> Result<(Node, Arc<GrpcNetwork>), ServerError> {
    let cluster = config.bootstrap.new_cluster()?;
    let id = config.bootstrap.local_member_id()?;
    let network = Arc::new(peer_network(config, id, traffic));
    let mut initial = Vec::new();
    for m in cluster.members() {
        let urls: Vec<String> = m
            .peer_urls()
            .iter()
            .map(|u| u.as_str().to_owned())
            .collect();
        if m.id() != id {
            if let Some(url) = urls.first() {
                network.set_peer(m.id(), url)?;
            }
        }
        let name = m.name().map(|n| n.as_str().to_owned()).unwrap_or_default();
        initial.push((m.id(), name, urls));
    }
    tracing::info!(member_id = %id, cluster_id = %cluster.id(), "bootstrapping a new cluster");
    let node = builder(config, id, &network)
        .initial_cluster(initial)
        .start()
        .await?;
    Ok((node, network))
}

/// etcd's `--initial-cluster-state existing`: ask the members named in `--initial-cluster`
/// for the records, find this member among them by its peer URLs (it must have been added
/// with `member add`), verify name and cluster, then join under the id it was added with.
async fn join_existing(
    config: &ServerConfig,
    traffic: &PeerTraffic,
) -> Result<(Node, Arc<GrpcNetwork>), ServerError> {
    let me = config.bootstrap.name();
    let contacts = GrpcNetwork::new(MemberId::new(u64::MAX))
        .with_client_tls(config.peer_tls.as_ref().map(crate::tls::TlsFiles::client));
    let mut contact_ids = Vec::new();
    for (i, (name, urls)) in config.bootstrap.initial_cluster().members().enumerate() {
        if name == me {
            continue;
        }
        if let Some(url) = urls.first() {
            let id = MemberId::new(i as u64 + 1);
            contacts.set_contact(id, url.as_str())?;
            contact_ids.push(id);
        }
    }
    let (cluster_id, members) =
        keel::cluster_members(&contacts, &contact_ids, JOIN_DEADLINE).await?;
    let records = to_members(&members)?;
    let plan = keel_membership::verify_join(&config.bootstrap, cluster_id, &records, None)?;
    let id = plan.member_id;
    tracing::info!(member_id = %id, cluster_id = %cluster_id, "joining an existing cluster");
    let network = Arc::new(peer_network(config, id, traffic));
    network.set_peers(&members)?;
    let peers: Vec<MemberId> = members.iter().map(|m| m.id).filter(|m| *m != id).collect();
    let node = builder(config, id, &network)
        .join_existing(peers)
        .start()
        .await?;
    Ok((node, network))
}

fn to_members(members: &[MemberStatus]) -> Result<Vec<Member>, keel_membership::MembershipError> {
    members
        .iter()
        .map(|m| {
            let peer = m
                .peer_urls
                .iter()
                .map(|u| MemberUrl::parse(u))
                .collect::<Result<Vec<_>, _>>()?;
            let client = m
                .client_urls
                .iter()
                .map(|u| MemberUrl::parse(u))
                .collect::<Result<Vec<_>, _>>()?;
            let mut member = Member::new(m.id, peer, m.is_learner)?.with_client_urls(client)?;
            if !m.name.is_empty() {
                member = member.with_name(MemberName::new(m.name.clone())?);
            }
            Ok(member)
        })
        .collect()
}
