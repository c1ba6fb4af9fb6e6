//! Group commit for the Raft log: appends are written to the engine at once (buffered, in WAL
//! order) and their openraft IO callbacks are handed to one syncer thread, which fsyncs once
//! for every callback waiting and then completes them in append order.
//!
//! Why a thread: an fsync takes milliseconds; done inside `append` it held a tokio worker (2
//! on 2 cores, shared by every node in a process) for each batch, and appends arriving
//! meanwhile could not share that fsync. Here one fsync covers every append written before
//! it, and the async workers never wait on the disk.
//!
//! Durability argument (log_store invariant 1 still holds): a callback is completed only after
//! an `Engine::sync` that started after its entries were written; the engine's WAL is one
//! ordered stream, so a sync persists every earlier write. After a crash the WAL keeps a
//! prefix: entries whose callback never fired may be lost, and nothing written after them
//! (applied state included) survives without them.

use super::TypeConfig;
use keel_storage::engine::Engine;
use openraft::storage::IOFlushed;
use std::io;
use std::sync::Arc;

/// Callbacks that may wait for the syncer before `append` blocks (back-pressure).
#[cfg(not(feature = "sim"))]
const PENDING_CALLBACKS_MAX: usize = 4096;

/// The sending side of the syncer thread; the thread ends when the last handle is dropped.
/// With the `sim` feature there is no thread: the deterministic simulation runtime has one
/// thread and virtual time, so each callback is completed right after its own sync, inline
/// (the in-memory engine's sync costs nothing, and durability is argued the same way).
#[derive(Clone)]
pub(crate) struct LogSyncer {
    #[cfg(not(feature = "sim"))]
    tx: crossbeam::channel::Sender<IOFlushed<TypeConfig>>,
    #[cfg(feature = "sim")]
    engine: Arc<dyn Engine>,
    #[cfg(feature = "sim")]
    metrics: Arc<crate::metrics::Metrics>,
}

/// Sync `engine` once for every callback of `batch`, then complete them in order.
fn sync_then_complete(
    engine: &dyn Engine,
    metrics: &crate::metrics::Metrics,
    batch: Vec<IOFlushed<TypeConfig>>,
) {
    let started = metrics.now();
    let result = engine.sync();
    metrics.observe_since(&metrics.wal_fsync, started);
    metrics.log_sync_batch.observe(batch.len() as f64);
    for callback in batch {
        let signal = match &result {
            Ok(()) => Ok(()),
            Err(e) => Err(io::Error::other(e.to_string())),
        };
        callback.io_completed(signal);
    }
}

impl LogSyncer {
    /// Start the syncer thread for `engine`.
    ///
    /// # Errors
    /// The thread could not be spawned.
    #[cfg(not(feature = "sim"))]
    pub(crate) fn start(
        engine: Arc<dyn Engine>,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> io::Result<Self> {
        let (tx, rx) = crossbeam::channel::bounded::<IOFlushed<TypeConfig>>(PENDING_CALLBACKS_MAX);
        std::thread::Builder::new()
            .name("keel-log-sync".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    let mut batch = vec![first];
                    batch.extend(rx.try_iter());
                    sync_then_complete(engine.as_ref(), &metrics, batch);
                }
            })?;
        Ok(LogSyncer { tx })
    }

    /// The inline syncer of the simulation (see the type).
    ///
    /// # Errors
    /// None; the signature matches the threaded syncer's.
    #[cfg(feature = "sim")]
    pub(crate) fn start(
        engine: Arc<dyn Engine>,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> io::Result<Self> {
        Ok(LogSyncer { engine, metrics })
    }

    /// Complete `callback` after the next fsync.
    ///
    /// # Errors
    /// The syncer thread is gone (the engine failed or the node is stopping).
    #[cfg(not(feature = "sim"))]
    pub(crate) fn after_sync(&self, callback: IOFlushed<TypeConfig>) -> io::Result<()> {
        self.tx
            .send(callback)
            .map_err(|_| io::Error::other("log syncer stopped"))
    }

    /// Sync now, then complete `callback`.
    ///
    /// # Errors
    /// None; the sync's outcome goes to the callback.
    #[cfg(feature = "sim")]
    pub(crate) fn after_sync(&self, callback: IOFlushed<TypeConfig>) -> io::Result<()> {
        sync_then_complete(self.engine.as_ref(), &self.metrics, vec![callback]);
        Ok(())
    }
}
