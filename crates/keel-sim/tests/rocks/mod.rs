//! The RocksDB backing of the in-process battery: each member's data in a real RocksDB
//! directory, behind a fault layer that makes the battery's crashes and disk failures.
//!
//! A crash here is a *process* crash, not a power cut: every write that reached RocksDB
//! before the crash survives (RocksDB's WAL is written to the OS at once; only an fsync makes
//! it survive a power cut, and an in-process test cannot drop the page cache). Writes after
//! the crash point fail, so the dying node can acknowledge nothing more; the directory is then
//! closed and reopened by the restart. The in-memory backing is the one that models power
//! cuts (exactly the synced writes survive).

use crate::sim::cluster::{Backing, Backings, Disk};
use keel::Node;
use keel_storage::engine::{
    ColumnFamily, Durability, Engine, ReadView, RocksEngine, RocksOptions, WriteBatch,
};
use keel_storage::StorageError;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// RocksDB backings, each in its own temporary directory.
pub fn rocksdb() -> Backings {
    Arc::new(|| {
        Arc::new(RocksBacking {
            dir: tempfile::tempdir().expect("tempdir"),
            open: Mutex::new(None),
        })
    })
}

struct RocksBacking {
    dir: tempfile::TempDir,
    /// The engine of the member's current start (`None` after a crash, until the restart).
    open: Mutex<Option<Arc<Faulty>>>,
}

impl Backing for RocksBacking {
    fn engine(&self) -> Result<Arc<dyn Engine>, String> {
        let mut open = self.open.lock().unwrap();
        if let Some(engine) = open.as_ref() {
            return Ok(Arc::new(Disk(engine.clone())));
        }
        let options = RocksOptions::new(&Node::column_families());
        // The crashed node's shutdown may still hold the directory's lock for a moment.
        let mut last = String::new();
        for _ in 0..100 {
            match RocksEngine::open(self.dir.path(), &options) {
                Ok(engine) => {
                    let engine = Arc::new(Faulty::new(engine));
                    *open = Some(engine.clone());
                    return Ok(Arc::new(Disk(engine)));
                }
                Err(e) => last = e.to_string(),
            }
            #[allow(
                clippy::disallowed_methods,
                reason = "a brief wait for the crashed node's last handle to close the directory"
            )]
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(format!("reopening {}: {last}", self.dir.path().display()))
    }

    fn fail_syncs(&self) {
        if let Some(engine) = self.open.lock().unwrap().as_ref() {
            engine.fail_syncs.store(true, Ordering::SeqCst);
        }
    }

    fn crash(&self) {
        if let Some(engine) = self.open.lock().unwrap().take() {
            engine.fail_writes.store(true, Ordering::SeqCst);
            engine.fail_syncs.store(true, Ordering::SeqCst);
        }
    }
}

/// A RocksDB engine with injected failures: a failed write or fsync poisons it, as the
/// engine contract requires (every later call fails fast).
struct Faulty {
    inner: RocksEngine,
    fail_writes: AtomicBool,
    fail_syncs: AtomicBool,
    poisoned: AtomicBool,
}

impl Faulty {
    fn new(inner: RocksEngine) -> Self {
        Faulty {
            inner,
            fail_writes: AtomicBool::new(false),
            fail_syncs: AtomicBool::new(false),
            poisoned: AtomicBool::new(false),
        }
    }

    fn healthy(&self) -> Result<(), StorageError> {
        if self.poisoned.load(Ordering::SeqCst) {
            return Err(StorageError::Poisoned {
                cause: "injected i/o failure".into(),
            });
        }
        Ok(())
    }

    fn fail(&self, op: &'static str) -> StorageError {
        self.poisoned.store(true, Ordering::SeqCst);
        StorageError::Io {
            op,
            message: "injected failure".into(),
        }
    }
}

impl Engine for Faulty {
    fn column_family(&self, name: &str) -> Result<ColumnFamily, StorageError> {
        self.inner.column_family(name)
    }
    fn write(&self, batch: WriteBatch, durability: Durability) -> Result<(), StorageError> {
        self.healthy()?;
        let syncs = durability == Durability::Synced;
        if self.fail_writes.load(Ordering::SeqCst)
            || (syncs && self.fail_syncs.load(Ordering::SeqCst))
        {
            return Err(self.fail("write"));
        }
        self.inner.write(batch, durability)
    }
    fn flush_buffered(&self) -> Result<(), StorageError> {
        self.healthy()?;
        self.inner.flush_buffered()
    }
    fn sync(&self) -> Result<(), StorageError> {
        self.healthy()?;
        if self.fail_syncs.load(Ordering::SeqCst) {
            return Err(self.fail("fsync"));
        }
        self.inner.sync()
    }
    fn view(&self) -> Result<Box<dyn ReadView + '_>, StorageError> {
        self.healthy()?;
        self.inner.view()
    }
    fn size_bytes(&self) -> Result<u64, StorageError> {
        self.inner.size_bytes()
    }
    fn live_bytes(&self) -> Result<u64, StorageError> {
        self.inner.live_bytes()
    }
    fn size_bytes_of(&self, column_families: &[&str]) -> Result<u64, StorageError> {
        self.inner.size_bytes_of(column_families)
    }
    fn compact_all(&self) -> Result<(), StorageError> {
        self.healthy()?;
        self.inner.compact_all()
    }
    fn check_healthy(&self) -> Result<(), StorageError> {
        self.healthy()?;
        self.inner.check_healthy()
    }
}
