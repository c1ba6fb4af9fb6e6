//! Writes a member forwards to the leader share peer calls.
//!
//! A follower serving many clients sent one peer call per forwarded write: one gRPC exchange
//! (stream set-up, header compression, a task on each side) per client write, which cost
//! about 30% of put throughput on a 3-member cluster. etcd sends a follower's proposals down
//! its Raft stream to the leader instead. Here the writes a member forwards to one leader
//! queue: while a call to that leader is out, new writes wait, and when it returns everything
//! queued (up to [`FORWARD_BATCH_MAX`] writes and [`FORWARD_BATCH_BYTES_MAX`] bytes) leaves
//! as one [`Message::ForwardBatch`], which the leader hands to its engine in one call
//! ([`Consensus::write_many`]). A lone write leaves at once, as a plain [`Message::Forward`],
//! so batching adds no latency when writes do not overlap.
//!
//! Invariants:
//! 1. A leader has an entry in `queues` exactly while a flush task runs for it; the task
//!    removes the entry only under the lock and only when it is empty, so no write is left
//!    waiting without a task to send it.
//! 2. Every queued write gets exactly one answer. If the flush task itself is dropped (the
//!    runtime stops), the dropped answer reads as [`NodeError::Stopped`].
//! 3. A call that has not returned within `send_max` answers its writes with
//!    [`NodeError::Timeout`] (their outcome is unknown) and the task goes on with the queue:
//!    a leader that stopped answering holds this member's writes for at most that long, and
//!    writes to another leader never wait for it (each leader has its own task).
//! 4. A write whose caller stopped waiting (its deadline passed, or the node is shutting
//!    down) before it left is not sent: as before batching, dropping the call before the
//!    send cancels it.
//! 5. If a flush task ends any other way than by emptying its queue (a panic in a user's
//!    `Network`, the runtime cancelling it), its queue goes with it: the waiting writes read
//!    as [`NodeError::Stopped`], and the next write to that leader starts a new task.

use super::consensus::{fatal, Consensus};
use super::network::{Forwarded, Message, Network, PeerMessage, PeerReply, Reply};
use super::{rt, term_of};
use crate::error::NodeError;
use crate::limits::{FORWARD_BATCH_BYTES_MAX, FORWARD_BATCH_MAX};
use crate::request::Request;
use futures::StreamExt as _;
use keel_types::MemberId;
use openraft::errors::{ClientWriteError, Fatal};
use parking_lot::Mutex;
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;

/// The leader's reply to one forwarded write, as [`super::network::Network::send`] would
/// return it for a [`Message::Forward`].
type Answer = Result<Reply, NodeError>;

/// A write waiting to be forwarded.
struct Waiting {
    request: Request,
    /// Its encoded size (bounds a batch's size).
    len_bytes: usize,
    answer: oneshot::Sender<Answer>,
}

/// The writes this member forwards, queued per leader; see the module docs.
pub(super) struct ForwardBatcher {
    network: Arc<dyn Network>,
    /// How long one call to the leader may take (invariant 3).
    send_max: Duration,
    /// The lock guards the queues only; it is never held across an `.await`.
    queues: Mutex<BTreeMap<MemberId, VecDeque<Waiting>>>,
}

impl std::fmt::Debug for ForwardBatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ForwardBatcher")
            .field("send_max", &self.send_max)
            .finish_non_exhaustive()
    }
}

impl ForwardBatcher {
    pub(super) fn new(network: Arc<dyn Network>, send_max: Duration) -> Arc<Self> {
        Arc::new(ForwardBatcher {
            network,
            send_max,
            queues: Mutex::new(BTreeMap::new()),
        })
    }

    /// Forward `request` (`len_bytes` encoded) to `leader` in the next call to it, and return
    /// the leader's reply. Errors mean what [`Network::send`]'s mean: only
    /// [`NodeError::Unreachable`] says the write was certainly not served.
    pub(super) async fn forward(
        self: &Arc<Self>,
        leader: MemberId,
        request: Request,
        len_bytes: usize,
    ) -> Answer {
        let (answer, reply) = oneshot::channel();
        let waiting = Waiting {
            request,
            len_bytes,
            answer,
        };
        let start = {
            let mut queues = self.queues.lock();
            match queues.get_mut(&leader) {
                Some(queue) => {
                    queue.push_back(waiting);
                    false
                }
                None => {
                    queues.insert(leader, VecDeque::from([waiting]));
                    true
                }
            }
        };
        if start {
            let this = Arc::clone(self);
            // Detached: it ends when the leader's queue is empty (invariant 1).
            let _task = rt::spawn(async move { this.flush(leader).await });
        }
        reply.await.map_err(|_| NodeError::Stopped)?
    }

    /// Send `leader`'s queued writes, one call at a time, until its queue is empty.
    async fn flush(&self, leader: MemberId) {
        let mut guard = FlushGuard {
            batcher: self,
            leader,
            emptied: false,
        };
        loop {
            let batch = {
                let mut queues = self.queues.lock();
                let Some(queue) = queues.get_mut(&leader) else {
                    guard.emptied = true;
                    return;
                };
                let batch = take_batch(queue);
                if batch.is_empty() {
                    queues.remove(&leader);
                    guard.emptied = true;
                    return;
                }
                batch
            };
            self.send(leader, batch).await;
        }
    }

    /// One call to `leader` carrying `batch` (never empty); answers every write in it.
    async fn send(&self, leader: MemberId, mut batch: Vec<Waiting>) {
        if batch.len() == 1 {
            if let Some(one) = batch.pop() {
                let message = PeerMessage(Message::Forward(one.request));
                let sent = rt::timeout(self.send_max, self.network.send(leader, message)).await;
                let _ = one.answer.send(match sent {
                    Some(reply) => reply.map(|r| r.0),
                    None => Err(NodeError::Timeout),
                });
            }
            return;
        }
        let (requests, answers): (Vec<_>, Vec<_>) =
            batch.into_iter().map(|w| (w.request, w.answer)).unzip();
        let count = requests.len();
        let message = PeerMessage(Message::ForwardBatch(requests));
        let sent = rt::timeout(self.send_max, self.network.send(leader, message)).await;
        match sent {
            Some(Ok(PeerReply(Reply::Batch(replies)))) if replies.len() == count => {
                for (answer, reply) in answers.into_iter().zip(replies) {
                    // a caller that gave up (its deadline passed) dropped its receiver
                    let _ = answer.send(item_answer(reply));
                }
            }
            other => {
                let error = match other {
                    Some(Err(e)) => e,
                    None => NodeError::Timeout,
                    Some(Ok(reply)) => NodeError::Network {
                        detail: format!("unexpected reply to {count} forwarded writes: {reply:?}"),
                    },
                };
                for answer in answers {
                    let _ = answer.send(Err(error.clone()));
                }
            }
        }
    }
}

/// Invariant 5: removes the leader's queue unless the flush emptied it.
struct FlushGuard<'a> {
    batcher: &'a ForwardBatcher,
    leader: MemberId,
    emptied: bool,
}

impl Drop for FlushGuard<'_> {
    fn drop(&mut self) {
        if !self.emptied {
            self.batcher.queues.lock().remove(&self.leader);
        }
    }
}

/// The writes at the head of `queue` that go in one call: at least one if any still has a
/// caller, then while the count and size bounds allow. Writes nobody waits for any more are
/// dropped, not sent (invariant 4).
fn take_batch(queue: &mut VecDeque<Waiting>) -> Vec<Waiting> {
    let mut batch = Vec::new();
    let mut bytes = 0usize;
    while let Some(next) = queue.front() {
        if next.answer.is_closed() {
            queue.pop_front();
            continue;
        }
        let full = batch.len() >= FORWARD_BATCH_MAX
            || bytes.saturating_add(next.len_bytes) > FORWARD_BATCH_BYTES_MAX;
        if full && !batch.is_empty() {
            break;
        }
        bytes = bytes.saturating_add(next.len_bytes);
        if let Some(waiting) = queue.pop_front() {
            batch.push(waiting);
        }
    }
    batch
}

/// One write's outcome inside a [`Reply::Batch`], as the caller sees it.
fn item_answer(outcome: Forwarded) -> Answer {
    match outcome {
        Forwarded::Applied { applied, term } => Ok(Reply::Applied { applied, term }),
        Forwarded::NotLeader { leader } => Ok(Reply::NotLeader { leader }),
        Forwarded::Failed {
            timeout: true,
            detail: _,
        } => Err(NodeError::Timeout),
        Forwarded::Failed {
            timeout: false,
            detail,
        } => Err(NodeError::Network { detail }),
    }
}

impl Consensus {
    /// Serve a [`Message::ForwardBatch`]: propose every write in one call into the engine and
    /// answer each as [`Consensus::write_local`] would, in order, in a [`Reply::Batch`].
    pub(super) async fn write_many(&self, requests: Vec<Request>) -> Result<Reply, NodeError> {
        let count = requests.len();
        let mut results = match self.raft.client_write_many(requests).await {
            Ok(results) => results,
            // The engine stopped; as in `write_local`, the outcome is unknown to the sender.
            Err(Fatal::Stopped) => return Err(NodeError::Timeout),
            Err(e) => return Err(fatal(&e)),
        };
        let mut replies = Vec::with_capacity(count);
        while let Some(Ok(result)) = results.next().await {
            replies.push(match result {
                Ok(written) => Forwarded::Applied {
                    applied: written.response,
                    term: term_of(&written.log_id),
                },
                // Refused before anything was appended: the sender may send it elsewhere.
                Err(ClientWriteError::ForwardToLeader(f)) => Forwarded::NotLeader {
                    leader: f.leader_id,
                },
                // Appended, then truncated by a new leader: it may still commit elsewhere.
                Err(e @ ClientWriteError::LogEntryDiscarded(_)) => Forwarded::Failed {
                    detail: e.to_string(),
                    timeout: true,
                },
                Err(e) => Forwarded::Failed {
                    detail: e.to_string(),
                    timeout: false,
                },
            });
        }
        // The stream ends early only when the engine stopped with these writes in flight.
        replies.resize_with(count, || Forwarded::Failed {
            detail: "the engine stopped with the write in flight".to_owned(),
            timeout: true,
        });
        Ok(Reply::Batch(replies))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]
    use super::*;
    use crate::request::Applied;
    use crate::{Node, NodeBuilder, SendFuture};
    use keel_storage::mvcc::PutRequest;

    fn put(key: &str) -> Request {
        Request::Put(PutRequest::new(key.as_bytes().to_vec(), &b"v"[..]))
    }

    /// The key length of a forwarded put (how the fake leader below tells them apart).
    fn key_len(request: &Request) -> u64 {
        match request {
            Request::Put(p) => p.key.len() as u64,
            other => panic!("unexpected request {other:?}"),
        }
    }

    /// A leader that records what it receives, holds its first call until `gate` opens, and
    /// answers every write with a "not leader" hint naming the write's key length.
    struct HeldLeader {
        received: Mutex<Vec<Vec<u64>>>,
        gate: tokio::sync::Semaphore,
    }

    impl Network for HeldLeader {
        fn send(&self, _to: MemberId, message: PeerMessage) -> SendFuture<'_> {
            Box::pin(async move {
                let (lens, batch) = match &message.0 {
                    Message::Forward(r) => (vec![key_len(r)], false),
                    Message::ForwardBatch(rs) => (rs.iter().map(key_len).collect(), true),
                    other => panic!("unexpected message {other:?}"),
                };
                let first = {
                    let mut received = self.received.lock();
                    received.push(lens.clone());
                    received.len() == 1
                };
                if first {
                    self.gate.acquire().await.expect("gate").forget();
                }
                Ok(PeerReply(if batch {
                    let hint = |len: u64| Forwarded::NotLeader { leader: Some(len) };
                    Reply::Batch(lens.into_iter().map(hint).collect())
                } else {
                    Reply::NotLeader {
                        leader: Some(lens[0]),
                    }
                }))
            })
        }
    }

    #[tokio::test]
    async fn writes_queued_behind_a_call_leave_together_and_each_gets_its_own_answer() {
        let leader = Arc::new(HeldLeader {
            received: Mutex::new(Vec::new()),
            gate: tokio::sync::Semaphore::new(0),
        });
        let batcher = ForwardBatcher::new(
            Arc::clone(&leader) as Arc<dyn Network>,
            Duration::from_secs(30),
        );
        let to = MemberId::new(9);
        let forward = |key: &'static str| {
            let batcher = Arc::clone(&batcher);
            tokio::spawn(async move { batcher.forward(to, put(key), 64).await })
        };
        let first = forward("k");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while leader.received.lock().is_empty() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the first call never left"
            );
            tokio::task::yield_now().await;
        }
        let keys = ["kk", "kkk", "kkkk", "kkkkk"];
        let queued: Vec<_> = keys.into_iter().map(forward).collect();
        // all four are queued behind the held call before it is released
        while batcher.queues.lock().get(&to).map_or(0, VecDeque::len) < keys.len() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the writes never queued"
            );
            tokio::task::yield_now().await;
        }
        leader.gate.add_permits(1);
        let answer = first.await.unwrap().unwrap();
        assert!(
            matches!(answer, Reply::NotLeader { leader: Some(1) }),
            "{answer:?}"
        );
        for (task, key) in queued.into_iter().zip(keys) {
            let answer = task.await.unwrap().unwrap();
            let want = key.len() as u64;
            assert!(
                matches!(answer, Reply::NotLeader { leader: Some(l) } if l == want),
                "{key}: {answer:?}"
            );
        }
        assert_eq!(*leader.received.lock(), vec![vec![1], vec![2, 3, 4, 5]]);
        // the queue is gone once empty: the next write starts a call of its own
        assert!(batcher.queues.lock().is_empty());
    }

    /// A transport whose first send panics; later sends answer "not leader" (no hint).
    struct PanicsOnce(std::sync::atomic::AtomicBool);

    impl Network for PanicsOnce {
        fn send(&self, _to: MemberId, _message: PeerMessage) -> SendFuture<'_> {
            let first = !self.0.swap(true, std::sync::atomic::Ordering::SeqCst);
            Box::pin(async move {
                assert!(!first, "the transport failed");
                Ok(PeerReply(Reply::NotLeader { leader: None }))
            })
        }
    }

    #[tokio::test]
    async fn a_flush_task_that_dies_takes_its_queue_and_the_next_write_starts_anew() {
        let network = Arc::new(PanicsOnce(std::sync::atomic::AtomicBool::new(false)));
        let batcher = ForwardBatcher::new(network, Duration::from_secs(30));
        let to = MemberId::new(9);
        let lost = batcher.forward(to, put("k"), 64).await;
        assert!(matches!(lost, Err(NodeError::Stopped)), "{lost:?}");
        assert!(
            batcher.queues.lock().is_empty(),
            "the dead task's queue stays"
        );
        let next = batcher.forward(to, put("k"), 64).await;
        assert!(
            matches!(next, Ok(Reply::NotLeader { leader: None })),
            "{next:?}"
        );
        assert!(batcher.queues.lock().is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_forwarded_batch_is_applied_in_order_with_one_answer_per_write() {
        let node: Node = NodeBuilder::new(MemberId::new(1)).start().await.unwrap();
        let before = node.status().await.unwrap().header.revision;
        let batch = PeerMessage(Message::ForwardBatch(vec![put("a"), put("b"), put("c")]));
        let reply = node.peer_handler().handle(batch).await.unwrap().0;
        let Reply::Batch(answers) = reply else {
            panic!("expected a batch reply, got {reply:?}");
        };
        let revisions: Vec<u64> = answers
            .iter()
            .map(|a| match a {
                Forwarded::Applied {
                    applied: Applied::Put(p),
                    ..
                } => p.revision.get(),
                other => panic!("unexpected answer {other:?}"),
            })
            .collect();
        let first = before.get() + 1;
        assert_eq!(revisions, vec![first, first + 1, first + 2]);
        for key in ["a", "b", "c"] {
            let got = node.get(key).await.unwrap().body.expect("applied");
            assert_eq!(got.value.as_ref(), b"v");
        }
        node.shutdown().await;
    }

    /// A queued write and the receiver its caller waits on.
    fn waiting(len_bytes: usize) -> (Waiting, oneshot::Receiver<Answer>) {
        let (answer, reply) = oneshot::channel();
        let waiting = Waiting {
            request: Request::Put(PutRequest::new(&b"k"[..], &b"v"[..])),
            len_bytes,
            answer,
        };
        (waiting, reply)
    }

    fn queue_of(lens: &[usize]) -> (VecDeque<Waiting>, Vec<oneshot::Receiver<Answer>>) {
        lens.iter().map(|&len| waiting(len)).unzip()
    }

    #[test]
    fn a_batch_takes_at_least_one_write_then_stays_within_its_bounds() {
        let (mut queue, _callers) = queue_of(&[1; FORWARD_BATCH_MAX + 5]);
        assert_eq!(take_batch(&mut queue).len(), FORWARD_BATCH_MAX);
        assert_eq!(take_batch(&mut queue).len(), 5);
        assert!(take_batch(&mut queue).is_empty());

        let half = FORWARD_BATCH_BYTES_MAX / 2;
        let (mut queue, _callers) = queue_of(&[FORWARD_BATCH_BYTES_MAX * 2, half, half, 1]);
        // an oversized write still goes, alone
        assert_eq!(take_batch(&mut queue).len(), 1);
        assert_eq!(take_batch(&mut queue).len(), 2);
        assert_eq!(take_batch(&mut queue).len(), 1);
    }

    #[test]
    fn a_write_whose_caller_gave_up_is_not_sent() {
        let (mut queue, mut callers) = queue_of(&[1, 2, 3, 4]);
        // the first and third callers stop waiting (their deadline passed)
        drop(callers.remove(2));
        drop(callers.remove(0));
        let sent: Vec<usize> = take_batch(&mut queue).iter().map(|w| w.len_bytes).collect();
        assert_eq!(sent, vec![2, 4]);
        assert!(queue.is_empty());
        drop(callers);
        let (mut queue, callers) = queue_of(&[1]);
        drop(callers);
        assert!(take_batch(&mut queue).is_empty());
        assert!(queue.is_empty());
    }

    #[test]
    fn failed_items_keep_what_their_outcome_is_known_to_be() {
        let timeout = item_answer(Forwarded::Failed {
            detail: "discarded".to_owned(),
            timeout: true,
        });
        assert!(matches!(timeout, Err(NodeError::Timeout)), "{timeout:?}");
        let failed = item_answer(Forwarded::Failed {
            detail: "storage".to_owned(),
            timeout: false,
        });
        assert!(
            matches!(&failed, Err(NodeError::Network { detail }) if detail == "storage"),
            "{failed:?}"
        );
        let hint = item_answer(Forwarded::NotLeader { leader: Some(3) });
        assert!(matches!(hint, Ok(Reply::NotLeader { leader: Some(3) })));
    }
}
