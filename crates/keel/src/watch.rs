//! [`WatchStream`]: a member's watch as an async `Stream`.

use crate::error::NodeError;
use crate::response::{Response, ResponseHeader};
use futures::Stream;
use keel_storage::watch::{WatchBatch, Watcher};
use keel_types::{ClusterId, MemberId};
use parking_lot::Mutex;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll, Waker};

/// What the stream and the node share. Lock order: `waker` is never held while taking
/// `watcher`; the store's hub calls [`WatchShared::wake`] under its own lock, which only takes
/// `waker`.
pub(crate) struct WatchShared {
    /// The store watcher; `None` once the node shut down or the watch failed.
    watcher: Mutex<Option<Watcher>>,
    /// The task to wake when the watcher has something new.
    waker: Mutex<Option<Waker>>,
}

impl WatchShared {
    fn wake(&self) {
        if let Some(w) = self.waker.lock().as_ref() {
            w.wake_by_ref();
        }
    }

    fn close(&self) {
        let watcher = self.watcher.lock().take();
        drop(watcher);
        self.wake();
    }
}

/// The node's live watch streams (weakly held), to wake them when the store is replaced by a
/// snapshot and to close them at shutdown.
#[derive(Default)]
pub(crate) struct WatchRegistry {
    streams: Mutex<Vec<Weak<WatchShared>>>,
}

impl WatchRegistry {
    fn register(&self, shared: &Arc<WatchShared>) {
        let mut streams = self.streams.lock();
        streams.retain(|w| w.strong_count() > 0);
        streams.push(Arc::downgrade(shared));
    }

    /// How many streams are alive.
    pub(crate) fn live_count(&self) -> usize {
        (self.streams.lock().iter())
            .filter(|w| w.strong_count() > 0)
            .count()
    }

    fn live(&self) -> Vec<Arc<WatchShared>> {
        self.streams
            .lock()
            .iter()
            .filter_map(Weak::upgrade)
            .collect()
    }

    /// Wake every stream (they re-poll and catch up from history if needed).
    pub(crate) fn wake_all(&self) {
        for s in self.live() {
            s.wake();
        }
    }

    /// End every stream with [`NodeError::Stopped`] and release their store handles.
    pub(crate) fn close_all(&self) {
        for s in self.live() {
            s.close();
        }
    }
}

/// A watch on one member's store: batches of events in revision order, with no gap and no
/// duplicate, from the requested start revision (keel-storage's watch guarantees). Ends with
/// an error item when the revisions it needs were compacted ([`NodeError::Rejected`]) or the
/// node shuts down ([`NodeError::Stopped`]). Dropping it cancels the watch.
pub struct WatchStream {
    shared: Arc<WatchShared>,
    cluster_id: ClusterId,
    member_id: MemberId,
    term: Box<dyn Fn() -> u64 + Send + Sync>,
    ended: bool,
}

impl std::fmt::Debug for WatchStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchStream")
            .field("member_id", &self.member_id)
            .finish_non_exhaustive()
    }
}

impl WatchStream {
    pub(crate) fn new(
        watcher: Watcher,
        registry: &WatchRegistry,
        cluster_id: ClusterId,
        member_id: MemberId,
        term: Box<dyn Fn() -> u64 + Send + Sync>,
    ) -> Self {
        let shared = Arc::new(WatchShared {
            watcher: Mutex::new(None),
            waker: Mutex::new(None),
        });
        let weak = Arc::downgrade(&shared);
        watcher.set_waker(Arc::new(move || {
            if let Some(s) = weak.upgrade() {
                s.wake();
            }
        }));
        *shared.watcher.lock() = Some(watcher);
        registry.register(&shared);
        WatchStream {
            shared,
            cluster_id,
            member_id,
            term,
            ended: false,
        }
    }

    fn respond(&self, batch: WatchBatch) -> Response<WatchBatch> {
        Response {
            header: ResponseHeader {
                cluster_id: self.cluster_id,
                member_id: self.member_id,
                revision: batch.revision,
                raft_term: (self.term)(),
            },
            body: batch,
        }
    }
}

impl Stream for WatchStream {
    type Item = Result<Response<WatchBatch>, NodeError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.ended {
            return Poll::Ready(None);
        }
        // Register first, so a batch arriving between the poll below and our return wakes us.
        *this.shared.waker.lock() = Some(cx.waker().clone());
        let mut guard = this.shared.watcher.lock();
        let Some(watcher) = guard.as_mut() else {
            this.ended = true;
            return Poll::Ready(Some(Err(NodeError::Stopped)));
        };
        match watcher.poll() {
            Ok(Some(batch)) => {
                drop(guard);
                Poll::Ready(Some(Ok(this.respond(batch))))
            }
            Ok(None) => {
                if !watcher.is_synced() {
                    // Still catching up from history: nobody else will wake us for it.
                    cx.waker().wake_by_ref();
                }
                Poll::Pending
            }
            Err(e) => {
                *guard = None;
                this.ended = true;
                Poll::Ready(Some(Err(NodeError::from_storage(e))))
            }
        }
    }
}
