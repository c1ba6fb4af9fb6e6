//! Linearizable reads on one member share their read-index requests.
//!
//! A linearizable read needs a read index that the leader confirmed *after the read began*
//! (the leader's commit index at a moment it still held a quorum). One request answers every
//! read that was already waiting when it left, so the reads of a member queue here and a
//! single task asks the leader for all of them at once: it takes every waiting read, asks
//! once (locally on the leader, else through the network), answers them all, and repeats
//! while reads wait. A read that arrives while a request is out waits for the next one,
//! which leaves after it arrived, so every answer still postdates its read's start.
//!
//! On a follower this turns one peer call per read into one per batch; on the leader it
//! saves a trip through the engine per read (openraft already shares the quorum
//! confirmation between concurrent requests).

use super::consensus::{first_target, follow_hint, raft_error, ConsensusConfig};
use super::network::{Message, Network, PeerMessage, Reply};
use super::{rt, Raft};
use crate::error::NodeError;
use keel_types::MemberId;
use openraft::ReadPolicy;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Where one waiting read gets its read index (the log index to wait to have applied).
type Waiter = oneshot::Sender<Result<u64, NodeError>>;

/// The queue of reads waiting for a read index; see the module docs.
#[derive(Debug)]
pub(super) struct ReadIndexBatcher {
    queue: mpsc::UnboundedSender<Waiter>,
}

impl ReadIndexBatcher {
    /// Start the task that serves the queue. It ends when the batcher is dropped. A leader
    /// that has not answered within an election timeout is asked again (after a fresh look
    /// at who leads), so one stalled peer cannot hold up this member's reads for longer.
    pub(super) fn start(raft: Raft, network: Arc<dyn Network>, config: &ConsensusConfig) -> Self {
        let (id, send_max) = (config.id, config.election_timeout);
        let (queue, mut waiting) = mpsc::unbounded_channel::<Waiter>();
        // Detached: the task ends when the queue's sender (this batcher) is dropped.
        let _task = rt::spawn(async move {
            let mut batch = Vec::new();
            while let Some(first) = waiting.recv().await {
                batch.push(first);
                // every read already queued shares this request: they all began before it
                while let Ok(next) = waiting.try_recv() {
                    batch.push(next);
                }
                let answer = read_index(&raft, network.as_ref(), id, send_max).await;
                for waiter in batch.drain(..) {
                    // a read that gave up (its deadline passed) dropped its receiver
                    let _ = waiter.send(answer.clone());
                }
            }
        });
        ReadIndexBatcher { queue }
    }

    /// A read index confirmed by the leader after this call began.
    ///
    /// # Errors
    /// [`NodeError::Stopped`] when the member is shutting down; the leader's errors.
    pub(super) async fn read_index(&self) -> Result<u64, NodeError> {
        let (tx, rx) = oneshot::channel();
        self.queue.send(tx).map_err(|_| NodeError::Stopped)?;
        rx.await.map_err(|_| NodeError::Stopped)?
    }
}

/// One read-index request: to the leader this member knows of (its own engine when it knows
/// none or leads itself), following "not leader" hints until a leader answers. Every failure
/// and every send unanswered after `send_max` is retried (asking for a read index changes
/// nothing), except an error of this member's engine.
async fn read_index(
    raft: &Raft,
    network: &dyn Network,
    id: MemberId,
    send_max: Duration,
) -> Result<u64, NodeError> {
    let mut target = first_target(raft, id);
    loop {
        let reply = match target {
            None => local_read_index(raft).await?,
            Some(leader) => {
                let send = network.send(leader, PeerMessage(Message::ReadIndex));
                tokio::select! {
                    sent = send => sent.map_or(Reply::NotLeader { leader: None }, |r| r.0),
                    () = rt::sleep(send_max) => Reply::NotLeader { leader: None },
                }
            }
        };
        match reply {
            Reply::ReadIndex(log_id) => return Ok(log_id.index),
            Reply::NotLeader { leader } => target = follow_hint(leader, target, id).await,
            other => {
                return Err(NodeError::Network {
                    detail: format!("unexpected reply to read index: {other:?}"),
                })
            }
        }
    }
}

/// The read index on this member if it is the leader (quorum-confirmed), else a hint.
pub(super) async fn local_read_index(raft: &Raft) -> Result<Reply, NodeError> {
    match raft.get_read_linearizer(ReadPolicy::ReadIndex).await {
        Ok(linearizer) => Ok(Reply::ReadIndex(*linearizer.read_log_id().log_id())),
        Err(e) => match e.forward_to_leader() {
            Some(f) => Ok(Reply::NotLeader {
                leader: f.leader_id,
            }),
            None if e.fatal().is_some() => Err(raft_error(&e)),
            // No quorum acknowledged the leader yet: retry.
            None => Ok(Reply::NotLeader { leader: None }),
        },
    }
}
