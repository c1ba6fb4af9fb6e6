//! The gRPC implementation of keel's [`keel::Network`] trait: member-to-member traffic
//! (Raft RPCs, snapshots, forwarded writes and member changes) over HTTP/2.
//!
//! - **Client side** ([`GrpcNetwork`]): one lazily connected tonic channel per member,
//!   reused by every message to it; tonic reconnects a broken channel on the next call, and
//!   openraft backs off between retries to an unreachable member. Messages larger than
//!   [`STREAM_FRAME_BYTES_MAX`] (large batches of log entries, snapshot chunks) travel as a
//!   client stream of frames of at most that size. Calls in flight per member
//!   are bounded ([`IN_FLIGHT_PER_PEER_MAX`]).
//! - **Server side** ([`PeerServer`]): decodes frames and hands each message to the local
//!   node's [`keel::PeerHandler`]. Until the node has started it answers `Unavailable`
//!   ([`NOT_SERVED`]), which the sender treats as "not delivered" and retries. A call that
//!   fails after it may have been served (connection reset mid-call) is never reported as
//!   "not delivered", so a forwarded write is not applied twice.
//!
//! Deviation from etcd: etcd's peer protocol is HTTP (rafthttp streams); keel's is its own
//! gRPC service (`keelpeer.Peer`), so keel and etcd members cannot be mixed in one cluster.

use crate::pb::keelpeer::peer_client::PeerClient;
use crate::pb::keelpeer::peer_server::{Peer, PeerServer as GeneratedServer};
use crate::pb::keelpeer::Frame;
use bytes::Bytes;
use keel::{Network, NodeError, PeerHandler, PeerMessage, PeerReply, SendFuture};
use keel_types::MemberId;
use parking_lot::RwLock;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio_stream::StreamExt;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use tonic::{Request, Response, Status, Streaming};

/// Largest frame on the wire; bigger messages are streamed in frames of this size.
pub const STREAM_FRAME_BYTES_MAX: usize = 1024 * 1024;
/// Largest message a peer accepts: 2 GiB. The receiver assembles a message in memory before
/// handing it to the node, so this bounds what one peer stream can make a member allocate.
/// Snapshots do not come near it: the node sends them one chunk (about 1 MiB) per message
/// and keeps the chunks on disk. The largest messages are batches of log entries.
pub const MESSAGE_BYTES_MAX: usize = 2 * 1024 * 1024 * 1024;
/// Calls in flight to one member at a time; further calls wait.
pub const IN_FLIGHT_PER_PEER_MAX: usize = 64;
/// How long connecting to a member may take before the message counts as undelivered.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Label set of the peer traffic counters (`To` or `From`, the member id).
type PeerLabel = Vec<(&'static str, String)>;

/// Bytes exchanged with each member, both directions and both roles (caller and server):
/// etcd's `etcd_network_peer_sent_bytes_total{To}` and `..._received_bytes_total{From}`.
/// Clones share the counters.
///
/// # Examples
/// ```
/// use keel_server::peer::PeerTraffic;
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let node = keel::NodeBuilder::new(keel_types::MemberId::new(1)).start().await?;
/// PeerTraffic::default().register(&node.metrics());
/// // One series per member, once messages flow (a single member sends none).
/// assert!(!node.metrics_text()?.contains("etcd_network_peer_sent_bytes_total{"));
/// # Ok::<(), keel::NodeError>(())
/// # }).unwrap();
/// ```
#[derive(Clone, Debug, Default)]
pub struct PeerTraffic {
    sent: Family<PeerLabel, Counter>,
    received: Family<PeerLabel, Counter>,
}

impl PeerTraffic {
    /// Add the counters to a node's registry.
    pub fn register(&self, metrics: &keel::Metrics) {
        metrics.register(
            "etcd_network_peer_sent_bytes",
            "Bytes sent to each member.",
            self.sent.clone(),
        );
        metrics.register(
            "etcd_network_peer_received_bytes",
            "Bytes received from each member.",
            self.received.clone(),
        );
    }

    fn count_sent(&self, to: MemberId, bytes: usize) {
        (self.sent.get_or_create(&vec![("To", to.to_string())])).inc_by(bytes as u64);
    }

    fn count_received(&self, from: MemberId, bytes: usize) {
        (self
            .received
            .get_or_create(&vec![("From", from.to_string())]))
        .inc_by(bytes as u64);
    }
}

/// One member's address and connection.
#[derive(Clone)]
struct Link {
    url: String,
    /// `true` for an address known only as a contact (before the member's id is known to
    /// match it): frames carry `to = 0` and the receiver serves them whoever it is.
    contact: bool,
    client: PeerClient<Channel>,
}

/// keel's [`Network`] over gRPC: delivers messages to members by id, at the peer URLs the
/// member records give (kept current with [`GrpcNetwork::set_peers`]).
///
/// # Examples
/// ```
/// use keel_server::peer::GrpcNetwork;
/// use keel_types::MemberId;
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let net = GrpcNetwork::new(MemberId::new(1));
/// net.set_peer(MemberId::new(2), "http://127.0.0.1:2380")?;
/// assert_eq!(net.peer_url(MemberId::new(2)).as_deref(), Some("http://127.0.0.1:2380"));
/// # Ok::<(), keel::NodeError>(())
/// # }).unwrap();
/// ```
pub struct GrpcNetwork {
    me: MemberId,
    /// The links by member id. Guards only the map; never held across an await.
    links: RwLock<BTreeMap<MemberId, Link>>,
    traffic: PeerTraffic,
    /// TLS for `https://` peer URLs.
    tls: Option<ClientTlsConfig>,
    /// The local address connections to members leave from (the system's choice if `None`).
    source: Option<IpAddr>,
}

impl std::fmt::Debug for GrpcNetwork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let links = self.links.read();
        let urls: BTreeMap<&MemberId, &str> =
            links.iter().map(|(id, l)| (id, l.url.as_str())).collect();
        f.debug_struct("GrpcNetwork")
            .field("me", &self.me)
            .field("links", &urls)
            .finish()
    }
}

fn endpoint(
    url: &str,
    tls: Option<&ClientTlsConfig>,
    source: Option<IpAddr>,
) -> Result<Endpoint, NodeError> {
    let invalid = |e: &dyn std::fmt::Display| NodeError::Config {
        detail: format!("invalid peer URL {url:?}: {e}"),
    };
    let mut endpoint = Endpoint::from_shared(url.to_owned()).map_err(|e| invalid(&e))?;
    if url.starts_with("https://") {
        let Some(tls) = tls else {
            return Err(NodeError::Config {
                detail: format!(
                    "peer URL {url:?} is https:// but no peer certificate is configured"
                ),
            });
        };
        endpoint = endpoint.tls_config(tls.clone()).map_err(|e| invalid(&e))?;
    }
    Ok(endpoint
        .local_address(source)
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .concurrency_limit(IN_FLIGHT_PER_PEER_MAX)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(5)))
}

fn client(
    url: &str,
    tls: Option<&ClientTlsConfig>,
    source: Option<IpAddr>,
) -> Result<PeerClient<Channel>, NodeError> {
    let channel = endpoint(url, tls, source)?.connect_lazy();
    // A reply is one frame, as large as the receiver may encode (`MESSAGE_BYTES_MAX`): the
    // answers to a batch of forwarded writes can carry many previous values.
    Ok(PeerClient::new(channel)
        .max_decoding_message_size(MESSAGE_BYTES_MAX)
        .max_encoding_message_size(STREAM_FRAME_BYTES_MAX * 2))
}

impl GrpcNetwork {
    /// A network for member `me` that knows no other member yet.
    pub fn new(me: MemberId) -> Self {
        GrpcNetwork::with_traffic(me, PeerTraffic::default())
    }

    /// As [`GrpcNetwork::new`], counting the bytes exchanged in `traffic`.
    pub fn with_traffic(me: MemberId, traffic: PeerTraffic) -> Self {
        GrpcNetwork {
            me,
            links: RwLock::new(BTreeMap::new()),
            traffic,
            tls: None,
            source: None,
        }
    }

    /// Dial `https://` peer URLs with `tls` (this member's certificate and the peer CA).
    #[must_use]
    pub fn with_client_tls(mut self, tls: Option<ClientTlsConfig>) -> Self {
        self.tls = tls;
        self
    }

    /// Dial members from the local address `source` (`--peer-source-address`): on a host
    /// with several addresses, the one member traffic leaves from. Set it before adding
    /// peers; the system picks the address when `None`.
    #[must_use]
    pub fn with_source_address(mut self, source: Option<IpAddr>) -> Self {
        self.source = source;
        self
    }

    /// Reach member `id` at `url` (replacing its previous address).
    ///
    /// # Errors
    /// [`NodeError::Config`] for a URL that is not a valid `http://host:port` endpoint.
    pub fn set_peer(&self, id: MemberId, url: &str) -> Result<(), NodeError> {
        self.insert(id, url, false)
    }

    /// Reach a contact at `url` under a provisional `id`: messages are served by whoever
    /// answers at that address (used only to ask a running cluster for its member records).
    ///
    /// # Errors
    /// As [`GrpcNetwork::set_peer`].
    pub fn set_contact(&self, id: MemberId, url: &str) -> Result<(), NodeError> {
        self.insert(id, url, true)
    }

    fn insert(&self, id: MemberId, url: &str, contact: bool) -> Result<(), NodeError> {
        let mut links = self.links.write();
        if let Some(l) = links.get(&id) {
            if l.url == url && l.contact == contact {
                return Ok(());
            }
        }
        let link = Link {
            url: url.to_owned(),
            contact,
            client: client(url, self.tls.as_ref(), self.source)?,
        };
        links.insert(id, link);
        Ok(())
    }

    /// Make the links match the member records: one link per member (its first peer URL),
    /// none for members no longer listed. Contacts are dropped.
    ///
    /// # Errors
    /// As [`GrpcNetwork::set_peer`]; earlier members are still applied.
    pub fn set_peers(&self, members: &[keel::MemberStatus]) -> Result<(), NodeError> {
        let mut result = Ok(());
        for m in members.iter().filter(|m| m.id != self.me) {
            if let Some(url) = m.peer_urls.first() {
                if let Err(e) = self.set_peer(m.id, url) {
                    result = Err(e);
                }
            }
        }
        self.links
            .write()
            .retain(|id, l| !l.contact && members.iter().any(|m| m.id == *id));
        result
    }

    /// The URL member `id` is reached at, if known.
    pub fn peer_url(&self, id: MemberId) -> Option<String> {
        self.links.read().get(&id).map(|l| l.url.clone())
    }

    async fn deliver(&self, to: MemberId, message: PeerMessage) -> Result<PeerReply, NodeError> {
        let Some(link) = self.links.read().get(&to).cloned() else {
            return Err(NodeError::Unreachable { member: to });
        };
        let payload = Bytes::from(message.to_bytes()?);
        let frame_to = if link.contact { 0 } else { to.get() };
        self.traffic.count_sent(to, payload.len());
        let mut client = link.client;
        let reply = if payload.len() <= STREAM_FRAME_BYTES_MAX {
            let frame = Frame {
                from: self.me.get(),
                to: frame_to,
                payload,
            };
            client.send(frame).await
        } else {
            let from = self.me.get();
            let frames: Vec<Frame> = payload
                .chunks(STREAM_FRAME_BYTES_MAX)
                .map(|c| Frame {
                    from,
                    to: frame_to,
                    payload: payload.slice_ref(c),
                })
                .collect();
            client.send_stream(tokio_stream::iter(frames)).await
        };
        match reply {
            Ok(frame) => {
                let payload = frame.into_inner().payload;
                self.traffic.count_received(to, payload.len());
                PeerReply::from_bytes(&payload)
            }
            Err(status) => Err(status_error(to, &status)),
        }
    }
}

/// A failed call. Only a call that certainly was not served is [`NodeError::Unreachable`]
/// (which the node resends, forwarded writes included): the connection could not be made
/// (tonic's `ConnectError` in the error's source chain), or the receiver answered
/// [`NOT_SERVED`]. tonic also reports `Unavailable` for a connection reset or a keep-alive
/// timeout in the middle of a call, when the message may have been served: that is
/// [`NodeError::Network`] (outcome unknown, not resent), as is every other failure.
fn status_error(to: MemberId, status: &Status) -> NodeError {
    let not_served = status.code() == tonic::Code::Unavailable
        && (status.message() == NOT_SERVED || caused_by_connect_error(status));
    if not_served {
        return NodeError::Unreachable { member: to };
    }
    match status.code() {
        // The peer timed out or lost track of a write it had accepted: the outcome is
        // unknown (it may still apply), which callers must not take for "not delivered".
        tonic::Code::DeadlineExceeded => NodeError::Timeout,
        code => NodeError::Network {
            detail: format!("member {to}: {code:?}: {}", status.message()),
        },
    }
}

/// Whether `status` comes from a failure to connect (nothing was sent on the connection).
fn caused_by_connect_error(status: &Status) -> bool {
    let mut source = std::error::Error::source(status);
    while let Some(err) = source {
        if err.is::<tonic::ConnectError>() {
            return true;
        }
        source = err.source();
    }
    false
}

/// The message of the `Unavailable` status a peer server answers when its node did not serve
/// the message: not started yet, or shut down (the sender may resend it).
pub const NOT_SERVED: &str = "member is not running";

impl Network for GrpcNetwork {
    fn send(&self, to: MemberId, message: PeerMessage) -> SendFuture<'_> {
        Box::pin(self.deliver(to, message))
    }
}

/// Where a started node's [`PeerHandler`] is put once the node runs (the peer server
/// listens before the node starts, so that members starting together can reach each other).
#[derive(Clone, Default)]
pub struct HandlerSlot {
    slot: Arc<OnceLock<(MemberId, PeerHandler)>>,
}

impl std::fmt::Debug for HandlerSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HandlerSlot")
            .field("set", &self.slot.get().is_some())
            .finish()
    }
}

impl HandlerSlot {
    /// Serve messages for member `id` with `handler` from now on. Returns `false` if a
    /// handler was already set (the first one stays).
    pub fn set(&self, id: MemberId, handler: PeerHandler) -> bool {
        self.slot.set((id, handler)).is_ok()
    }
}

/// The receiving side: tonic's `keelpeer.Peer` service over a [`HandlerSlot`].
#[derive(Clone, Debug)]
pub struct PeerServer {
    handler: HandlerSlot,
    traffic: PeerTraffic,
    /// `--peer-cert-allowed-cn`: the only common name a member's certificate may carry.
    allowed_cn: Option<String>,
}

impl PeerServer {
    /// A server that answers `Unavailable` until `handler` is set.
    pub fn new(handler: HandlerSlot) -> Self {
        PeerServer {
            handler,
            traffic: PeerTraffic::default(),
            allowed_cn: None,
        }
    }

    /// Accept only members whose (verified) certificate has common name `cn`
    /// (`--peer-cert-allowed-cn`); others get `PermissionDenied`.
    #[must_use]
    pub fn with_allowed_cn(mut self, cn: Option<String>) -> Self {
        self.allowed_cn = cn;
        self
    }

    fn check_cn<T>(&self, request: &Request<T>) -> Result<(), Status> {
        let Some(allowed) = &self.allowed_cn else {
            return Ok(());
        };
        match crate::tls::peer_common_name(request) {
            Some(cn) if &cn == allowed => Ok(()),
            found => Err(Status::permission_denied(format!(
                "peer certificate common name {found:?} is not the allowed {allowed:?}"
            ))),
        }
    }

    /// Count the bytes served in `traffic`.
    #[must_use]
    pub fn with_traffic(mut self, traffic: PeerTraffic) -> Self {
        self.traffic = traffic;
        self
    }

    /// The tonic service, ready to add to a router.
    pub fn into_service(self) -> GeneratedServer<Self> {
        GeneratedServer::new(self)
            .max_decoding_message_size(STREAM_FRAME_BYTES_MAX * 2)
            .max_encoding_message_size(MESSAGE_BYTES_MAX)
    }

    async fn serve(&self, from: u64, to: u64, payload: &[u8]) -> Result<Response<Frame>, Status> {
        let from = MemberId::new(from);
        self.traffic.count_received(from, payload.len());
        let Some((me, handler)) = self.handler.slot.get().cloned() else {
            return Err(Status::unavailable(NOT_SERVED));
        };
        if to != 0 && to != me.get() {
            return Err(Status::failed_precondition(format!(
                "message for member {} delivered to member {me}",
                MemberId::new(to)
            )));
        }
        let message = PeerMessage::from_bytes(payload)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let reply = handler.handle(message).await.map_err(|e| match e {
            NodeError::Unreachable { .. } => Status::unavailable(NOT_SERVED),
            NodeError::Stopped => Status::unavailable(e.to_string()),
            NodeError::Timeout => Status::deadline_exceeded(e.to_string()),
            other => Status::internal(other.to_string()),
        })?;
        let payload = reply
            .to_bytes()
            .map_err(|e| Status::internal(e.to_string()))?;
        self.traffic.count_sent(from, payload.len());
        Ok(Response::new(Frame {
            from: me.get(),
            to: 0,
            payload: Bytes::from(payload),
        }))
    }
}

#[tonic::async_trait]
impl Peer for PeerServer {
    async fn send(&self, request: Request<Frame>) -> Result<Response<Frame>, Status> {
        self.check_cn(&request)?;
        let frame = request.into_inner();
        self.serve(frame.from, frame.to, &frame.payload).await
    }

    async fn send_stream(
        &self,
        request: Request<Streaming<Frame>>,
    ) -> Result<Response<Frame>, Status> {
        self.check_cn(&request)?;
        let mut stream = request.into_inner();
        let (mut from, mut to) = (0, 0);
        let mut payload: Vec<u8> = Vec::new();
        while let Some(frame) = stream.next().await {
            let frame = frame?;
            (from, to) = (frame.from, frame.to);
            if payload.len() + frame.payload.len() > MESSAGE_BYTES_MAX {
                return Err(Status::resource_exhausted("peer message too large"));
            }
            payload.extend_from_slice(&frame.payload);
        }
        self.serve(from, to, &payload).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// Beyond the keep-alive interval plus timeout (10 s + 5 s).
    const DEADLINE: Duration = Duration::from_secs(60);

    fn network_to(port: u16) -> GrpcNetwork {
        let net = GrpcNetwork::new(MemberId::new(1));
        net.set_peer(MemberId::new(2), &format!("http://127.0.0.1:{port}"))
            .expect("valid URL");
        net
    }

    async fn ask(net: &GrpcNetwork) -> Result<PeerReply, NodeError> {
        tokio::time::timeout(
            DEADLINE,
            net.send(MemberId::new(2), PeerMessage::members_query()),
        )
        .await
        .expect("the call ends")
    }

    #[tokio::test]
    async fn a_refused_connection_is_not_delivered() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        drop(listener);
        let err = ask(&network_to(port)).await.expect_err("nobody listens");
        assert!(matches!(err, NodeError::Unreachable { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn a_server_whose_node_has_not_started_did_not_serve_the_message() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let service = PeerServer::new(HandlerSlot::default()).into_service();
        let server = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        let err = ask(&network_to(port)).await.expect_err("no node yet");
        assert!(matches!(err, NodeError::Unreachable { .. }), "{err:?}");
        server.abort();
    }

    /// Accept one connection on `listener`, read until `payload` arrived, then either reset
    /// the connection (a killed member) or go silent, answering nothing, not even HTTP/2
    /// pings (a paused member), until the sender gives up.
    async fn receive_then_fail(listener: TcpListener, payload: Vec<u8>, reset: bool) {
        let (mut socket, _) = listener.accept().await.expect("accept");
        // An empty HTTP/2 SETTINGS frame, so the client sends its request at once.
        socket
            .write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0])
            .await
            .expect("settings");
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        while !seen.windows(payload.len()).any(|w| w == payload.as_slice()) {
            let n = socket.read(&mut buf).await.expect("read");
            assert!(n > 0, "the client closed before sending the message");
            seen.extend_from_slice(&buf[..n]);
        }
        if reset {
            socket.set_zero_linger().expect("linger");
            drop(socket);
        } else {
            while socket.read(&mut buf).await.is_ok_and(|n| n > 0) {}
        }
    }

    async fn fail_after_delivery(reset: bool) -> NodeError {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let payload = PeerMessage::members_query().to_bytes().expect("encode");
        let receiver = tokio::spawn(receive_then_fail(listener, payload, reset));
        let err = ask(&network_to(port)).await.expect_err("no reply");
        if reset {
            receiver.await.expect("the receiver saw the message");
        } else {
            receiver.abort();
        }
        err
    }

    /// A member killed while serving a forwarded write: the sender must not take the reset
    /// for "not delivered", or it would resend a write that may have been applied.
    #[tokio::test]
    async fn a_connection_reset_after_the_message_arrived_is_not_taken_for_undelivered() {
        let err = fail_after_delivery(true).await;
        assert!(matches!(err, NodeError::Network { .. }), "{err:?}");
    }

    /// A member paused while serving: tonic ends the call `Unavailable` when its keep-alive
    /// ping goes unanswered (about 15 s), the code it also uses for refused connections.
    #[tokio::test]
    async fn a_keep_alive_timeout_after_the_message_arrived_is_not_taken_for_undelivered() {
        let err = fail_after_delivery(false).await;
        assert!(matches!(err, NodeError::Network { .. }), "{err:?}");
    }
}
