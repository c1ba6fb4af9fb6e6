//! An engine that kills its process at a chosen write, for the failpoint tests on real
//! RocksDB directories (keel-storage's `rocks_failpoints.rs`, keel's `failpoints.rs`).

use keel_storage::engine::{ColumnFamily, Durability, Engine, ReadView, WriteBatch};
use keel_storage::StorageError;
use std::sync::atomic::{AtomicU64, Ordering};

/// An engine that dies (`abort()`: no unwinding, no flush, the disk as SIGKILL leaves it) just
/// before its `k`-th write once armed with `k`.
pub struct AbortAt<E> {
    inner: E,
    writes_left: AtomicU64,
}

impl<E: Engine> AbortAt<E> {
    /// `inner`, unarmed.
    pub fn new(inner: E) -> Self {
        AbortAt {
            inner,
            writes_left: AtomicU64::new(u64::MAX),
        }
    }

    /// Die just before the `k`-th write from now (0: the next one).
    pub fn arm(&self, k: u64) {
        self.writes_left.store(k, Ordering::SeqCst);
    }
}

impl<E: Engine> Engine for AbortAt<E> {
    fn column_family(&self, name: &str) -> Result<ColumnFamily, StorageError> {
        self.inner.column_family(name)
    }
    fn write(&self, batch: WriteBatch, durability: Durability) -> Result<(), StorageError> {
        if self.writes_left.fetch_sub(1, Ordering::SeqCst) == 0 {
            std::process::abort();
        }
        self.inner.write(batch, durability)
    }
    fn sync(&self) -> Result<(), StorageError> {
        self.inner.sync()
    }
    fn flush_buffered(&self) -> Result<(), StorageError> {
        self.inner.flush_buffered()
    }
    fn view(&self) -> Result<Box<dyn ReadView + '_>, StorageError> {
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
        self.inner.compact_all()
    }
    fn check_healthy(&self) -> Result<(), StorageError> {
        self.inner.check_healthy()
    }
}
