//! The storage engine seam: one key-value database with named column families, atomic
//! cross-family write batches, point-in-time read views and poisoning.
//!
//! Two implementations: [`RocksEngine`] (the real one, one RocksDB instance with one WAL) and
//! [`MemEngine`] (in memory, keeping *written* and *synced* data apart, so that a simulated
//! crash loses exactly the unsynced writes). Everything above this module (MVCC keyspace,
//! durable log, watch hub, lease and member records) runs unchanged on both.
//!
//! No RocksDB type appears in this API.

mod memory;
mod poison;
#[cfg(feature = "rocksdb")]
mod rocks;

pub use memory::MemEngine;
#[cfg(feature = "rocksdb")]
pub use rocks::{RocksEngine, RocksOptions};

pub(crate) use poison::Poison;

use crate::error::Result;
use std::ops::ControlFlow;

/// A column family registered with an engine, as a small copyable handle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ColumnFamily(u32);

impl ColumnFamily {
    pub(crate) fn index(self) -> usize {
        self.0 as usize
    }
    pub(crate) fn from_index(index: usize) -> Self {
        ColumnFamily(u32::try_from(index).unwrap_or(u32::MAX))
    }
}

/// How durable a write must be before [`Engine::write`] returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// Written to the engine's log but not fsynced: survives a process crash only if the
    /// OS flushes it; lost by a simulated crash of [`MemEngine`].
    Buffered,
    /// Fsynced (together with every buffered write before it) before returning.
    Synced,
}

/// One operation of a [`WriteBatch`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BatchOp {
    /// Set `key` to `value`.
    Put {
        /// Column family.
        cf: ColumnFamily,
        /// Key.
        key: Vec<u8>,
        /// Value.
        value: Vec<u8>,
    },
    /// Remove `key`.
    Delete {
        /// Column family.
        cf: ColumnFamily,
        /// Key.
        key: Vec<u8>,
    },
    /// Remove every key in `[start, end)`.
    DeleteRange {
        /// Column family.
        cf: ColumnFamily,
        /// First key removed.
        start: Vec<u8>,
        /// First key kept after the range.
        end: Vec<u8>,
    },
}

/// Operations across column families that commit atomically: all or none.
///
/// # Examples
/// ```
/// use keel_storage::engine::{Durability, Engine, MemEngine, WriteBatch};
/// let engine = MemEngine::new(&["a", "b"]);
/// let (a, b) = (engine.column_family("a")?, engine.column_family("b")?);
/// let mut batch = WriteBatch::default();
/// batch.put(a, b"k", b"1");
/// batch.put(b, b"k", b"2");
/// engine.write(batch, Durability::Synced)?;
/// assert_eq!(engine.view()?.get(b, b"k")?, Some(b"2".to_vec()));
/// # Ok::<(), keel_storage::StorageError>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WriteBatch {
    ops: Vec<BatchOp>,
    size_bytes: usize,
}

impl WriteBatch {
    /// Set `key` to `value` in `cf`.
    pub fn put(&mut self, cf: ColumnFamily, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        let (key, value) = (key.into(), value.into());
        self.size_bytes += key.len() + value.len();
        self.ops.push(BatchOp::Put { cf, key, value });
    }

    /// Remove `key` from `cf`.
    pub fn delete(&mut self, cf: ColumnFamily, key: impl Into<Vec<u8>>) {
        let key = key.into();
        self.size_bytes += key.len();
        self.ops.push(BatchOp::Delete { cf, key });
    }

    /// Remove every key of `cf` in `[start, end)`.
    pub fn delete_range(
        &mut self,
        cf: ColumnFamily,
        start: impl Into<Vec<u8>>,
        end: impl Into<Vec<u8>>,
    ) {
        let (start, end) = (start.into(), end.into());
        self.size_bytes += start.len() + end.len();
        self.ops.push(BatchOp::DeleteRange { cf, start, end });
    }

    /// Append every operation of `other` after this batch's.
    pub fn extend(&mut self, other: WriteBatch) {
        self.size_bytes += other.size_bytes;
        self.ops.extend(other.ops);
    }

    /// The operations, in order.
    pub fn ops(&self) -> &[BatchOp] {
        &self.ops
    }

    /// Number of operations.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Whether the batch holds no operation.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Bytes of keys and values in the batch.
    pub fn size_bytes(&self) -> usize {
        self.size_bytes
    }
}

/// A bound of a scan over one column family: keys in `[lower, upper)`, `upper` unbounded
/// when `None`.
#[derive(Clone, Copy, Debug)]
pub struct ScanBounds<'a> {
    /// First key visited (inclusive).
    pub lower: &'a [u8],
    /// First key not visited (exclusive); `None` = to the end.
    pub upper: Option<&'a [u8]>,
    /// Visit from the upper end down.
    pub reverse: bool,
}

impl<'a> ScanBounds<'a> {
    /// Keys in `[lower, upper)`, ascending.
    pub fn forward(lower: &'a [u8], upper: Option<&'a [u8]>) -> Self {
        ScanBounds {
            lower,
            upper,
            reverse: false,
        }
    }

    /// Keys in `[lower, upper)`, descending.
    pub fn backward(lower: &'a [u8], upper: Option<&'a [u8]>) -> Self {
        ScanBounds {
            lower,
            upper,
            reverse: true,
        }
    }
}

/// The visitor of [`ReadView::scan`]: return `ControlFlow::Break` to stop early.
pub type Visitor<'v> = dyn FnMut(&[u8], &[u8]) -> Result<ControlFlow<()>> + 'v;

/// A consistent point-in-time view of every column family.
pub trait ReadView {
    /// The value of `key` in `cf`.
    ///
    /// # Errors
    /// Poisoned store or engine failure.
    fn get(&self, cf: ColumnFamily, key: &[u8]) -> Result<Option<Vec<u8>>>;

    /// Visit the entries of `cf` inside `bounds` in key order (or reverse order).
    ///
    /// # Errors
    /// Poisoned store, engine failure, or the first error the visitor returns.
    fn scan(&self, cf: ColumnFamily, bounds: ScanBounds<'_>, visit: &mut Visitor<'_>)
        -> Result<()>;
}

/// The engine: see the module documentation.
pub trait Engine: Send + Sync + 'static {
    /// The handle of a column family registered at open.
    ///
    /// # Errors
    /// [`crate::StorageError::UnknownColumnFamily`].
    fn column_family(&self, name: &str) -> Result<ColumnFamily>;

    /// Commit `batch` atomically. Any failure poisons the engine.
    ///
    /// # Errors
    /// Poisoned store or engine failure (which poisons it).
    fn write(&self, batch: WriteBatch, durability: Durability) -> Result<()>;

    /// Fsync every buffered write. A failure poisons the engine.
    ///
    /// # Errors
    /// Poisoned store or engine failure (which poisons it).
    fn sync(&self) -> Result<()>;

    /// A point-in-time view of the whole database.
    ///
    /// # Errors
    /// Poisoned store.
    fn view(&self) -> Result<Box<dyn ReadView + '_>>;

    /// Approximate bytes the database uses (live data plus what compaction has not reclaimed).
    ///
    /// # Errors
    /// Poisoned store or engine failure.
    fn size_bytes(&self) -> Result<u64>;

    /// Approximate bytes of live data (what [`Engine::size_bytes`] would shrink to after a
    /// full compaction): etcd's "in use" size.
    ///
    /// # Errors
    /// Poisoned store or engine failure.
    fn live_bytes(&self) -> Result<u64>;

    /// As [`Engine::size_bytes`], for the named column families only (a quota on the state
    /// without the log).
    ///
    /// # Errors
    /// Poisoned store, unknown column family or engine failure.
    fn size_bytes_of(&self, column_families: &[&str]) -> Result<u64>;

    /// Compact everything now so deleted data stops taking space (etcd's defragment): flushes
    /// write buffers and rewrites the files. Blocks; can take long on a large store.
    ///
    /// # Errors
    /// Poisoned store or engine failure.
    fn compact_all(&self) -> Result<()>;

    /// `Err(Poisoned)` once any write or fsync has failed.
    ///
    /// # Errors
    /// [`crate::StorageError::Poisoned`].
    fn check_healthy(&self) -> Result<()>;
}
