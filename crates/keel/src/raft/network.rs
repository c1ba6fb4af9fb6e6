//! The pluggable network: one small async trait that delivers messages between members, and
//! its adapter to openraft's network traits.
//!
//! A message is opaque to the transport ([`PeerMessage`], [`PeerReply`]): Raft RPCs (append,
//! vote, pre-vote, full snapshot) and forwarded client requests (writes, read-index), with
//! [`PeerMessage::to_bytes`]/[`PeerMessage::from_bytes`] for transports that cross process
//! boundaries. The receiving side hands every message to its node's [`PeerHandler`].

use super::state_machine::SnapshotData;
use super::{LogId, SnapshotMeta, TypeConfig, Vote};
use crate::codec;
use crate::error::NodeError;
use crate::request::{Applied, Request};
use keel_types::MemberId;
use openraft::errors::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft::{RaftNetworkV2, Snapshot};
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Weak};

/// A boxed future returned by [`Network::send`].
pub type SendFuture<'a> = Pin<Box<dyn Future<Output = Result<PeerReply, NodeError>> + Send + 'a>>;

/// Delivers messages from this member to others, by member id.
///
/// An implementation returns [`NodeError::Unreachable`] only when the message was certainly
/// not served (never sent, connection refused, receiver not started): the node resends such a
/// message, a forwarded write included. When the exchange failed after the message may have
/// arrived (connection reset mid-call, reply lost), it returns [`NodeError::Network`]: the
/// node does not resend a write then, since the receiver may have applied it.
/// The receiving process passes each message to the target node's [`PeerHandler`].
///
/// # Examples
/// A network that relays straight to in-process handlers (what [`crate::InMemoryNetwork`]
/// does, minus fault injection):
/// ```
/// use keel::{Network, NodeError, PeerHandler, PeerMessage};
/// use keel_types::MemberId;
/// use std::collections::BTreeMap;
/// use std::sync::Mutex;
/// #[derive(Default)]
/// struct Direct(Mutex<BTreeMap<MemberId, PeerHandler>>);
/// impl Network for Direct {
///     fn send(&self, to: MemberId, message: PeerMessage) -> keel::SendFuture<'_> {
///         let handler = self.0.lock().unwrap().get(&to).cloned();
///         Box::pin(async move {
///             match handler {
///                 Some(h) => h.handle(message).await,
///                 None => Err(NodeError::Unreachable { member: to }),
///             }
///         })
///     }
/// }
/// ```
pub trait Network: Send + Sync + 'static {
    /// Deliver `message` to member `to` and return its reply.
    fn send(&self, to: MemberId, message: PeerMessage) -> SendFuture<'_>;
}

/// A message between members (opaque; see [`PeerMessage::to_bytes`]).
#[derive(Debug, Serialize, Deserialize)]
pub struct PeerMessage(pub(crate) Message);

/// The reply to a [`PeerMessage`].
#[derive(Debug, Serialize, Deserialize)]
pub struct PeerReply(pub(crate) Reply);

#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Message {
    Append(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<TypeConfig>),
    PreVote(VoteRequest<TypeConfig>),
    /// Chunk `index` of the `count` chunks of a snapshot (sent in order, one at a time).
    SnapshotChunk {
        vote: Vote,
        meta: SnapshotMeta,
        index: u64,
        count: u64,
        chunk: Vec<u8>,
    },
    /// A client write forwarded to the leader.
    Forward(Request),
    /// A follower asks the leader for a linearizable read index.
    ReadIndex,
    /// A joining member asks for the cluster id and member records.
    Members,
    /// The leader hands leadership to the receiver (openraft's transfer-leader RPC).
    TransferLeader(TransferLeaderRequest<TypeConfig>),
    /// A membership change received by a follower, for the leader.
    Reconfigure(super::forward::RemoteChange),
    /// Client writes forwarded to the leader together (answered by [`Reply::Batch`]).
    ForwardBatch(Vec<Request>),
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Reply {
    Append(AppendEntriesResponse<TypeConfig>),
    Vote(VoteResponse<TypeConfig>),
    /// A snapshot chunk other than the last was kept.
    ChunkStored,
    /// The answer to the last chunk of a snapshot.
    Snapshot(SnapshotResponse<TypeConfig>),
    Applied {
        applied: Applied,
        term: u64,
    },
    ReadIndex(LogId),
    NotLeader {
        leader: Option<u64>,
    },
    Members {
        cluster_id: keel_types::ClusterId,
        members: Vec<crate::response::MemberStatus>,
    },
    TransferLeader(TransferLeaderResponse<TypeConfig>),
    /// The leader refused a forwarded change, with its message; `by_rules` when its
    /// reconfiguration rules refused it (not retryable), else the engine was busy.
    Refused {
        detail: String,
        by_rules: bool,
    },
    /// The answers to a [`Message::ForwardBatch`], one per write, in its order.
    Batch(Vec<Forwarded>),
}

/// What became of one write of a [`Message::ForwardBatch`]. A type of its own, not a
/// [`Reply`]: a reply nested in a reply would let a peer's bytes nest without bound.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Forwarded {
    /// Applied (as [`Reply::Applied`]).
    Applied { applied: Applied, term: u64 },
    /// Refused before it was appended: it may be sent elsewhere (as [`Reply::NotLeader`]).
    NotLeader { leader: Option<u64> },
    /// It failed after the leader handed it to its engine; `timeout` when it was appended
    /// and may still be applied (a new leader truncated it, or the engine stopped), else
    /// another error of the engine. Either way it is not resent.
    Failed { detail: String, timeout: bool },
}

impl PeerMessage {
    /// A query for the receiver's cluster id and member records (what a joining member asks
    /// its contacts). Read-only, so a network implementation can use it as a probe.
    pub fn members_query() -> Self {
        PeerMessage(Message::Members)
    }

    /// The versioned binary encoding of the message.
    ///
    /// # Errors
    /// [`NodeError::Codec`].
    pub fn to_bytes(&self) -> Result<Vec<u8>, NodeError> {
        codec::encode("peer message", self)
    }

    /// Decode [`PeerMessage::to_bytes`]'s output.
    ///
    /// # Errors
    /// [`NodeError::Codec`] on bad input.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, NodeError> {
        codec::decode("peer message", bytes)
    }
}

impl PeerReply {
    /// The versioned binary encoding of the reply.
    ///
    /// # Errors
    /// [`NodeError::Codec`].
    pub fn to_bytes(&self) -> Result<Vec<u8>, NodeError> {
        codec::encode("peer reply", self)
    }

    /// Decode [`PeerReply::to_bytes`]'s output.
    ///
    /// # Errors
    /// [`NodeError::Codec`] on bad input.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, NodeError> {
        codec::decode("peer reply", bytes)
    }
}

/// What a [`PeerHandler`] dispatches to (the node).
pub(crate) trait PeerService: Send + Sync + 'static {
    fn handle(&self, message: PeerMessage) -> SendFuture<'_>;
}

/// The receiving end of a node: pass it every message addressed to that node. Holds the node
/// weakly: after shutdown it answers [`NodeError::Unreachable`] (not served).
#[derive(Clone)]
pub struct PeerHandler {
    member: MemberId,
    service: Weak<dyn PeerService>,
}

impl std::fmt::Debug for PeerHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerHandler").finish_non_exhaustive()
    }
}

impl PeerHandler {
    pub(crate) fn new(member: MemberId, service: Weak<dyn PeerService>) -> Self {
        PeerHandler { member, service }
    }

    /// Handle one message from another member.
    ///
    /// # Errors
    /// [`NodeError::Unreachable`] (this member) when the node no longer runs, so the message
    /// was not served (a sender may resend it elsewhere); [`NodeError::Stopped`] when shutdown
    /// began while the message was being served (its effect is unknown); fatal node errors.
    pub async fn handle(&self, message: PeerMessage) -> Result<PeerReply, NodeError> {
        let Some(service) = self.service.upgrade() else {
            return Err(NodeError::Unreachable {
                member: self.member,
            });
        };
        service.handle(message).await
    }
}

/// The network of a single-member cluster: nobody to talk to.
#[derive(Debug, Default)]
pub(crate) struct NoNetwork;

impl Network for NoNetwork {
    fn send(&self, to: MemberId, _message: PeerMessage) -> SendFuture<'_> {
        Box::pin(async move { Err(NodeError::Unreachable { member: to }) })
    }
}

/// openraft's network factory over a [`Network`].
pub(crate) struct NetworkFactory {
    pub(crate) network: Arc<dyn Network>,
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = PeerClient;

    async fn new_client(&mut self, target: u64, _node: &super::MemberNode) -> PeerClient {
        PeerClient {
            network: Arc::clone(&self.network),
            target: MemberId::new(target),
        }
    }
}

/// openraft's connection to one member.
pub(crate) struct PeerClient {
    network: Arc<dyn Network>,
    target: MemberId,
}

fn rpc_error(e: NodeError) -> RPCError<TypeConfig> {
    match e {
        NodeError::Unreachable { .. } | NodeError::Stopped => {
            RPCError::Unreachable(Unreachable::from_string(e))
        }
        other => RPCError::Network(NetworkError::from_string(other)),
    }
}

fn unexpected(reply: &Reply) -> RPCError<TypeConfig> {
    RPCError::Network(NetworkError::from_string(format!(
        "unexpected reply {reply:?}"
    )))
}

impl PeerClient {
    async fn call(&self, message: Message) -> Result<Reply, RPCError<TypeConfig>> {
        self.network
            .send(self.target, PeerMessage(message))
            .await
            .map(|r| r.0)
            .map_err(rpc_error)
    }
}

impl RaftNetworkV2<TypeConfig> for PeerClient {
    type SnapshotData = SnapshotData;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        match self.call(Message::Append(rpc)).await? {
            Reply::Append(r) => Ok(r),
            other => Err(unexpected(&other)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        match self.call(Message::Vote(rpc)).await? {
            Reply::Vote(r) => Ok(r),
            other => Err(unexpected(&other)),
        }
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        match self.call(Message::PreVote(rpc)).await? {
            Reply::Vote(r) => Ok(r),
            other => Err(unexpected(&other)),
        }
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        match self.call(Message::TransferLeader(req)).await? {
            Reply::TransferLeader(r) => Ok(r),
            other => Err(unexpected(&other)),
        }
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot<
            openraft::alias::CommittedLeaderIdOf<TypeConfig>,
            u64,
            super::MemberNode,
            SnapshotData,
        >,
        cancel: impl Future<Output = ReplicationClosed> + Send + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        // One chunk per message, read from the snapshot store as it goes: neither end holds
        // the whole snapshot in memory. openraft resends from the start after any failure.
        let mut cancel = std::pin::pin!(cancel);
        let data = snapshot.snapshot;
        let count = data.stream.count;
        for index in 0..count {
            let chunk = data
                .store
                .chunk(data.stream.id, index)
                .map_err(|e| StreamingError::Network(NetworkError::from_string(e)))?;
            let message = Message::SnapshotChunk {
                vote,
                meta: snapshot.meta.clone(),
                index,
                count,
                chunk,
            };
            let reply = tokio::select! {
                biased;
                closed = &mut cancel => return Err(StreamingError::Closed(closed)),
                reply = self.network.send(self.target, PeerMessage(message)) => reply,
            };
            match reply.map(|r| r.0) {
                Ok(Reply::ChunkStored) if index + 1 < count => {}
                Ok(Reply::Snapshot(r)) if index + 1 == count => return Ok(r),
                Ok(other) => {
                    return Err(StreamingError::Network(NetworkError::from_string(format!(
                        "unexpected reply {other:?}"
                    ))))
                }
                Err(e @ (NodeError::Unreachable { .. } | NodeError::Stopped)) => {
                    return Err(StreamingError::Unreachable(Unreachable::from_string(e)))
                }
                Err(e) => return Err(StreamingError::Network(NetworkError::from_string(e))),
            }
        }
        Err(StreamingError::Network(NetworkError::from_string(
            "a snapshot without chunks",
        )))
    }
}
