//! One watcher: its specification, its buffer and its catch-up.

use super::hub::{filter, Waker, WatchId};
use crate::error::{Result, StorageError};
use crate::limits::CATCH_UP_EVENTS_MAX;
use crate::mvcc::{Event, EventKind, MvccStore};
use crossbeam::channel::{Receiver, RecvError, TryRecvError};
use keel_types::{KeyRange, Revision};
use std::sync::Arc;

/// What to watch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchSpec {
    /// Keys watched.
    pub range: KeyRange,
    /// First revision delivered; `None` = only changes after now. May lie in the future.
    pub start_revision: Option<Revision>,
    /// Include the previous version in each event.
    pub prev_kv: bool,
    /// Drop put events (etcd's NOPUT filter).
    pub no_put: bool,
    /// Drop delete events (etcd's NODELETE filter).
    pub no_delete: bool,
}

impl WatchSpec {
    /// Watch `range` from now on, no options.
    pub fn new(range: KeyRange) -> Self {
        WatchSpec {
            range,
            start_revision: None,
            prev_kv: false,
            no_put: false,
            no_delete: false,
        }
    }

    pub(crate) fn wants(&self, e: &Event) -> bool {
        self.range.contains(&e.kv.key)
            && !(self.no_put && e.kind == EventKind::Put)
            && !(self.no_delete && e.kind == EventKind::Delete)
    }
}

/// Events of one or more whole revisions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchBatch {
    /// The events, in revision then sub order.
    pub events: Vec<Event>,
    /// The watcher has now seen every revision up to this one.
    pub revision: Revision,
}

/// A registered watcher; dropping it cancels the watch.
///
/// # Examples
/// ```
/// use keel_storage::{engine::MemEngine, mvcc::PutRequest, watch::WatchSpec, MvccStore};
/// use keel_types::{KeyRange, Revision};
/// use std::sync::Arc;
/// let store = Arc::new(MvccStore::open(Arc::new(MemEngine::new(&MvccStore::COLUMN_FAMILIES)))?);
/// store.put(PutRequest::new(&b"cfg/a"[..], &b"1"[..]))?;          // revision 2
/// let mut w = store.watch(WatchSpec {
///     start_revision: Some(Revision::new(2)),                     // from the past
///     ..WatchSpec::new(KeyRange::prefix(&b"cfg/"[..]))
/// })?;
/// store.put(PutRequest::new(&b"cfg/b"[..], &b"2"[..]))?;          // revision 3
/// let mut seen = Vec::new();
/// while let Some(batch) = w.poll()? {
///     seen.extend(batch.events.into_iter().map(|e| e.kv.mod_revision.get()));
/// }
/// assert_eq!(seen, vec![2, 3]);
/// # Ok::<(), keel_storage::StorageError>(())
/// ```
pub struct Watcher {
    id: WatchId,
    store: Arc<MvccStore>,
    rx: Receiver<WatchBatch>,
    spec: WatchSpec,
    cancelled: bool,
}

impl std::fmt::Debug for Watcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watcher")
            .field("id", &self.id)
            .field("spec", &self.spec)
            .finish_non_exhaustive()
    }
}

impl MvccStore {
    /// Register a watcher.
    ///
    /// # Errors
    /// `Compacted` when the start revision was compacted; too many watchers; empty key.
    pub fn watch(self: &Arc<Self>, spec: WatchSpec) -> Result<Watcher> {
        if spec.range.start().is_empty() {
            return Err(StorageError::EmptyKey);
        }
        let compacted = self.compacted_revision()?;
        let (id, rx) = self.hub().register(spec.clone(), compacted)?;
        Ok(Watcher {
            id,
            store: Arc::clone(self),
            rx,
            spec,
            cancelled: false,
        })
    }
}

impl Watcher {
    /// This watcher's id.
    pub fn id(&self) -> WatchId {
        self.id
    }

    /// What this watcher watches.
    pub fn spec(&self) -> &WatchSpec {
        &self.spec
    }

    /// Call `waker` whenever new live data arrives (it must not block).
    pub fn set_waker(&self, waker: Waker) {
        self.store.hub().set_waker(self.id, waker);
    }

    /// The next batch, without blocking: buffered live events first, then (if the watcher
    /// lags) a bounded step of catch-up from history. `Ok(None)` = nothing new right now.
    ///
    /// # Errors
    /// `Compacted` when the revisions this watcher still needs were compacted (the watcher
    /// is cancelled); `Watch` after cancellation; storage failure.
    pub fn poll(&mut self) -> Result<Option<WatchBatch>> {
        if self.cancelled {
            return Err(StorageError::Watch {
                detail: "watcher cancelled".into(),
            });
        }
        match self.rx.try_recv() {
            Ok(b) => return Ok(Some(b)),
            Err(TryRecvError::Disconnected) => return Err(self.closed()),
            Err(TryRecvError::Empty) => {}
        }
        // Bounded: each step either returns events, finishes catch-up, or advances at least
        // one revision; revisions are finite, and we stop after a fixed number of steps.
        for _ in 0..64 {
            match self.catch_up_step()? {
                Step::Batch(b) => return Ok(Some(b)),
                Step::Synced => return Ok(self.rx.try_recv().ok()),
                Step::Advanced => {}
            }
        }
        Ok(None)
    }

    /// The next batch, blocking until one is available.
    ///
    /// # Errors
    /// As [`Watcher::poll`]; `Watch` when the store is gone.
    pub fn recv(&mut self) -> Result<WatchBatch> {
        loop {
            if let Some(b) = self.poll()? {
                return Ok(b);
            }
            if self.is_synced() {
                return self.rx.recv().map_err(|RecvError| self.closed());
            }
        }
    }

    /// True when the watcher has caught up with history and receives live batches (and
    /// its waker fires on them); false while it still has history to read through
    /// [`Watcher::poll`].
    pub fn is_synced(&self) -> bool {
        let state = self.store.hub().state.lock();
        state.watchers.get(&self.id).is_some_and(|s| s.synced)
    }

    fn closed(&self) -> StorageError {
        StorageError::Watch {
            detail: "watcher closed".into(),
        }
    }

    fn catch_up_step(&mut self) -> Result<Step> {
        let (next_rev, upto) = {
            let state = self.store.hub().state.lock();
            let Some(slot) = state.watchers.get(&self.id) else {
                return Err(self.closed());
            };
            if slot.synced {
                return Ok(Step::Synced);
            }
            (slot.next_rev, state.last_notified)
        };
        let (events, covered) = if next_rev > upto {
            (Vec::new(), upto)
        } else {
            match self.store.history(
                &self.spec.range,
                next_rev,
                upto,
                self.spec.prev_kv,
                CATCH_UP_EVENTS_MAX,
            ) {
                Ok(r) => r,
                Err(e @ StorageError::Compacted { .. }) => {
                    self.cancelled = true;
                    self.store.hub().unregister(self.id);
                    return Err(e);
                }
                Err(e) => return Err(e),
            }
        };
        let mut state = self.store.hub().state.lock();
        let last = state.last_notified;
        let Some(slot) = state.watchers.get_mut(&self.id) else {
            return Err(self.closed());
        };
        // Never back: a watcher waiting for a future revision (`next_rev > upto`) keeps
        // waiting for it, even when the state under it was replaced by an older one.
        slot.next_rev = covered.next().max(next_rev);
        if covered >= last {
            slot.synced = true;
        }
        let synced = slot.synced;
        drop(state);
        #[allow(unused_mut, reason = "mutated only with the planted-bugs feature")]
        let mut events = filter(&self.spec, &events);
        #[cfg(feature = "planted-bugs")]
        if crate::planted::on(&crate::planted::WATCH_SKIPS_ON_CATCH_UP) && !events.is_empty() {
            events.remove(0);
        }
        if !events.is_empty() {
            return Ok(Step::Batch(WatchBatch {
                events,
                revision: covered,
            }));
        }
        Ok(if synced { Step::Synced } else { Step::Advanced })
    }
}

enum Step {
    Batch(WatchBatch),
    Synced,
    Advanced,
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.store.hub().unregister(self.id);
    }
}
