//! Group commit of keep-alives: concurrent [`Node::lease_keep_alive`] calls on one member
//! share one replicated renew entry.
//!
//! While one renew entry is in flight, new keep-alives queue; when it returns, everything
//! queued (up to [`RENEW_BATCH_MAX`] ids) goes out as the next entry. A lone keep-alive is
//! proposed at once, so batching adds no latency, only fewer entries under load.
//!
//! Invariants:
//! 1. `in_flight` is true exactly while a flush task runs; the task clears it only under the
//!    lock and only when the queue is empty, so no waiter is left behind.
//! 2. Every waiter gets exactly one reply; the flush runs in its own task, so a caller that
//!    gives up cannot stall the others.

use super::{unexpected, Node, Running};
use crate::error::NodeError;
use crate::lease::{LeaseApplied, LeaseRequest};
use crate::limits::RENEW_BATCH_MAX;
use crate::request::Applied;
use keel_types::LeaseId;
use parking_lot::Mutex;
use std::sync::Arc;
use tokio::sync::oneshot;

/// The TTL of a renewed lease (`None`: not found) and the term of the entry.
type RenewReply = Result<(Option<i64>, u64), NodeError>;

/// Keep-alives waiting for the next renew entry. The lock guards the queue only; it is never
/// held across an `.await`.
#[derive(Default)]
pub(super) struct RenewBatcher {
    queue: Mutex<Queue>,
}

#[derive(Default)]
struct Queue {
    in_flight: bool,
    waiting: Vec<(LeaseId, oneshot::Sender<RenewReply>)>,
}

impl Node {
    /// Renew `id` in the next renew entry; returns its TTL (`None`: not found) and the term.
    pub(super) async fn renew_batched(&self, running: &Arc<Running>, id: LeaseId) -> RenewReply {
        let (reply, answer) = oneshot::channel();
        let start = {
            let mut queue = running.renews.queue.lock();
            queue.waiting.push((id, reply));
            !std::mem::replace(&mut queue.in_flight, true)
        };
        if start {
            // Keep-alives are not permission-checked (as in etcd), and one batch carries the
            // renewals of many callers: it is proposed by the host's handle, not by whichever
            // caller happened to start it.
            let node = self.trusted();
            let running = Arc::clone(running);
            crate::raft::rt::spawn(async move { node.flush_renews(&running).await });
        }
        answer.await.map_err(|_| NodeError::Stopped)?
    }

    /// Propose queued renews, one entry at a time, until the queue is empty (invariant 1).
    async fn flush_renews(&self, running: &Running) {
        loop {
            let batch: Vec<_> = {
                let mut queue = running.renews.queue.lock();
                if queue.waiting.is_empty() {
                    queue.in_flight = false;
                    return;
                }
                let n = queue.waiting.len().min(RENEW_BATCH_MAX);
                queue.waiting.drain(..n).collect()
            };
            let ids = batch.iter().map(|(id, _)| *id).collect();
            match self.propose_lease(LeaseRequest::Renew { ids }).await {
                Ok((LeaseApplied::Renewed { ttls }, term)) => {
                    let ttls = ttls.into_iter().chain(std::iter::repeat(None));
                    for ((_, reply), ttl) in batch.into_iter().zip(ttls) {
                        let _ = reply.send(Ok((ttl, term)));
                    }
                }
                Ok((other, _)) => {
                    let e = unexpected(&Applied::Lease(other));
                    for (_, reply) in batch {
                        let _ = reply.send(Err(e.clone()));
                    }
                }
                Err(e) => {
                    for (_, reply) in batch {
                        let _ = reply.send(Err(e.clone()));
                    }
                }
            }
        }
    }
}
