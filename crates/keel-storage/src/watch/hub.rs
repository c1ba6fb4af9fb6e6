//! Registry of watchers and live delivery.

use super::watcher::{WatchBatch, WatchSpec};
use crate::error::{Result, StorageError};
use crate::limits::{WATCHERS_MAX, WATCHER_BUFFER_BATCHES};
use crate::mvcc::{Committed, Event};
use crossbeam::channel::{self, Receiver, Sender, TrySendError};
use keel_types::Revision;
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Identifier of a watcher, unique within a hub.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WatchId(pub u64);

/// Called after new data became available for a watcher (e.g. to wake an async task).
pub type Waker = Arc<dyn Fn() + Send + Sync>;

pub(crate) struct Slot {
    pub spec: WatchSpec,
    tx: Sender<WatchBatch>,
    /// First revision this watcher has not received.
    pub next_rev: Revision,
    pub synced: bool,
    waker: Option<Waker>,
}

pub(crate) struct HubState {
    next_id: u64,
    /// Last revision whose events went through `notify`.
    pub last_notified: Revision,
    pub watchers: BTreeMap<WatchId, Slot>,
}

/// The registry of watchers of one store (see the module docs).
///
/// Lock: `state` guards every watcher slot and `last_notified`; taken after the store's
/// writer lock when notifying, alone when registering or catching up.
pub struct WatchHub {
    pub(crate) state: Mutex<HubState>,
}

impl std::fmt::Debug for WatchHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.state.lock();
        f.debug_struct("WatchHub")
            .field("watchers", &s.watchers.len())
            .field("last_notified", &s.last_notified)
            .finish()
    }
}

impl WatchHub {
    pub(crate) fn new(current: Revision) -> Self {
        WatchHub {
            state: Mutex::new(HubState {
                next_id: 1,
                last_notified: current,
                watchers: BTreeMap::new(),
            }),
        }
    }

    /// Number of registered watchers.
    pub fn len(&self) -> usize {
        self.state.lock().watchers.len()
    }

    /// Whether no watcher is registered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of watchers currently catching up from history.
    pub fn unsynced_count(&self) -> usize {
        self.state
            .lock()
            .watchers
            .values()
            .filter(|s| !s.synced)
            .count()
    }

    pub(crate) fn register(
        &self,
        spec: WatchSpec,
        compacted: Revision,
    ) -> Result<(WatchId, Receiver<WatchBatch>)> {
        let mut state = self.state.lock();
        if state.watchers.len() >= WATCHERS_MAX {
            return Err(StorageError::Watch {
                detail: "too many watchers".into(),
            });
        }
        let last = state.last_notified;
        let (next_rev, synced) = match spec.start_revision {
            None => (last.next(), true),
            Some(start) if start > last => (start, true),
            Some(start) => {
                if start < compacted {
                    return Err(StorageError::Compacted {
                        requested: start,
                        compacted,
                    });
                }
                (start, false)
            }
        };
        let (tx, rx) = channel::bounded(WATCHER_BUFFER_BATCHES);
        let id = WatchId(state.next_id);
        state.next_id += 1;
        state.watchers.insert(
            id,
            Slot {
                spec,
                tx,
                next_rev,
                synced,
                waker: None,
            },
        );
        Ok((id, rx))
    }

    pub(crate) fn set_waker(&self, id: WatchId, waker: Waker) {
        if let Some(slot) = self.state.lock().watchers.get_mut(&id) {
            slot.waker = Some(waker);
        }
    }

    pub(crate) fn unregister(&self, id: WatchId) {
        self.state.lock().watchers.remove(&id);
    }

    /// After the state was replaced (snapshot install): every watcher catches up from
    /// history from where it was, against the new state.
    pub(crate) fn reset(&self, current: Revision) {
        let mut state = self.state.lock();
        state.last_notified = current;
        for slot in state.watchers.values_mut() {
            slot.synced = false;
        }
    }

    /// Deliver a committed revision to every synced watcher; never blocks.
    pub(crate) fn notify(&self, committed: &Committed, _compacted: Revision) {
        let mut state = self.state.lock();
        let rev = committed.revision;
        if rev <= state.last_notified {
            return;
        }
        let mut closed = Vec::new();
        for (id, slot) in state.watchers.iter_mut() {
            if !slot.synced || rev < slot.next_rev {
                continue;
            }
            let events = filter(&slot.spec, &committed.events);
            if events.is_empty() {
                slot.next_rev = rev.next();
                continue;
            }
            let batch = WatchBatch {
                events,
                revision: rev,
            };
            match slot.tx.try_send(batch) {
                Ok(()) => slot.next_rev = rev.next(),
                Err(TrySendError::Full(_)) => slot.synced = false,
                Err(TrySendError::Disconnected(_)) => {
                    closed.push(*id);
                    continue;
                }
            }
            if let Some(w) = &slot.waker {
                w();
            }
        }
        for id in closed {
            state.watchers.remove(&id);
        }
        state.last_notified = rev;
    }
}

/// The events of `events` a watcher with `spec` receives.
pub(crate) fn filter(spec: &WatchSpec, events: &[Event]) -> Vec<Event> {
    events
        .iter()
        .filter(|e| spec.wants(e))
        .map(|e| {
            let mut e = e.clone();
            if !spec.prev_kv {
                e.prev_kv = None;
            }
            e
        })
        .collect()
}
