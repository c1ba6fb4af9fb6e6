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
    /// Written to the engine's log but not fsynced: survives a process crash once it
    /// reached the OS (at once, unless the engine keeps its log buffer in the process:
    /// `RocksOptions::manual_wal_flush`, [`Engine::flush_buffered`]), and a machine crash
    /// only once synced; lost by a simulated crash of [`MemEngine`].
    Buffered,
    /// Fsynced (together with every buffered write before it) before returning.
    Synced,
}

/// One operation of a [`WriteBatch`], borrowing the batch's bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BatchOp<'a> {
    /// Set `key` to `value`.
    Put {
        /// Column family.
        cf: ColumnFamily,
        /// Key.
        key: &'a [u8],
        /// Value.
        value: &'a [u8],
    },
    /// Remove `key`.
    Delete {
        /// Column family.
        cf: ColumnFamily,
        /// Key.
        key: &'a [u8],
    },
    /// Remove every key in `[start, end)`.
    DeleteRange {
        /// Column family.
        cf: ColumnFamily,
        /// First key removed.
        start: &'a [u8],
        /// First key kept after the range.
        end: &'a [u8],
    },
}

impl BatchOp<'_> {
    /// The column family the operation writes.
    pub fn column_family(&self) -> ColumnFamily {
        match *self {
            BatchOp::Put { cf, .. } | BatchOp::Delete { cf, .. } => cf,
            BatchOp::DeleteRange { cf, .. } => cf,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum OpKind {
    Put,
    Delete,
    DeleteRange,
}

/// Where one operation's two byte strings (key and value, or start and end) lie in the
/// batch's buffer: `data[start..mid]` and `data[mid..end]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct OpSpan {
    kind: OpKind,
    cf: ColumnFamily,
    start: usize,
    mid: usize,
    end: usize,
}

/// Operations across column families that commit atomically: all or none.
///
/// Every key and value is copied into one growing buffer, so adding an operation allocates
/// nothing once the buffer has grown to the batch's size.
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
    data: Vec<u8>,
    ops: Vec<OpSpan>,
}

impl WriteBatch {
    fn push(&mut self, kind: OpKind, cf: ColumnFamily, start: usize, mid: usize) {
        let end = self.data.len();
        self.ops.push(OpSpan {
            kind,
            cf,
            start,
            mid,
            end,
        });
    }

    /// Set `key` to `value` in `cf`.
    pub fn put(&mut self, cf: ColumnFamily, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) {
        let start = self.data.len();
        self.data.extend_from_slice(key.as_ref());
        let mid = self.data.len();
        self.data.extend_from_slice(value.as_ref());
        self.push(OpKind::Put, cf, start, mid);
    }

    /// Make room for `ops` more operations holding `bytes` more bytes of keys and values,
    /// so that adding them does not grow the buffers step by step.
    pub fn reserve(&mut self, ops: usize, bytes: usize) {
        self.ops.reserve(ops);
        self.data.reserve(bytes);
    }

    /// Remove `key` from `cf`.
    pub fn delete(&mut self, cf: ColumnFamily, key: impl AsRef<[u8]>) {
        let start = self.data.len();
        self.data.extend_from_slice(key.as_ref());
        let mid = self.data.len();
        self.push(OpKind::Delete, cf, start, mid);
    }

    /// Remove every key of `cf` in `[start, end)`.
    pub fn delete_range(
        &mut self,
        cf: ColumnFamily,
        start: impl AsRef<[u8]>,
        end: impl AsRef<[u8]>,
    ) {
        let first = self.data.len();
        self.data.extend_from_slice(start.as_ref());
        let mid = self.data.len();
        self.data.extend_from_slice(end.as_ref());
        self.push(OpKind::DeleteRange, cf, first, mid);
    }

    /// Append every operation of `other` after this batch's.
    pub fn extend(&mut self, other: WriteBatch) {
        let shift = self.data.len();
        self.data.extend_from_slice(&other.data);
        self.ops.extend(other.ops.into_iter().map(|op| OpSpan {
            start: op.start + shift,
            mid: op.mid + shift,
            end: op.end + shift,
            ..op
        }));
    }

    /// The operations, in order.
    pub fn ops(&self) -> impl ExactSizeIterator<Item = BatchOp<'_>> + '_ {
        self.ops.iter().map(|op| {
            let first = self.data.get(op.start..op.mid).unwrap_or_default();
            let second = self.data.get(op.mid..op.end).unwrap_or_default();
            match op.kind {
                OpKind::Put => BatchOp::Put {
                    cf: op.cf,
                    key: first,
                    value: second,
                },
                OpKind::Delete => BatchOp::Delete {
                    cf: op.cf,
                    key: first,
                },
                OpKind::DeleteRange => BatchOp::DeleteRange {
                    cf: op.cf,
                    start: first,
                    end: second,
                },
            }
        })
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
        self.data.len()
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

    /// Hand every buffered write to the operating system, without fsync: once this returns,
    /// they survive a crash of this process (not of the machine). Only an engine that keeps
    /// buffered writes in the process (`RocksOptions::manual_wal_flush`) does anything
    /// here. A failure poisons the engine.
    ///
    /// # Errors
    /// Poisoned store or engine failure (which poisons it).
    fn flush_buffered(&self) -> Result<()>;

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

#[cfg(test)]
mod tests {
    use super::*;

    fn cf(i: usize) -> ColumnFamily {
        ColumnFamily::from_index(i)
    }

    #[test]
    fn batch_ops_come_back_in_order_with_their_bytes() {
        let mut a = WriteBatch::default();
        a.put(cf(0), b"k1", b"v1");
        a.put(cf(1), b"k2", [7]);
        a.put(cf(2), b"k3", [7]);
        a.delete(cf(0), b"gone");
        a.put(cf(2), b"k4", b"");
        let mut b = WriteBatch::default();
        b.reserve(2, 16);
        b.delete_range(cf(3), b"a", b"z");
        b.put(cf(1), b"", b"");
        a.extend(b);
        let ops: Vec<BatchOp<'_>> = a.ops().collect();
        assert_eq!(
            ops,
            vec![
                BatchOp::Put {
                    cf: cf(0),
                    key: b"k1",
                    value: b"v1"
                },
                BatchOp::Put {
                    cf: cf(1),
                    key: b"k2",
                    value: &[7]
                },
                BatchOp::Put {
                    cf: cf(2),
                    key: b"k3",
                    value: &[7]
                },
                BatchOp::Delete {
                    cf: cf(0),
                    key: b"gone"
                },
                BatchOp::Put {
                    cf: cf(2),
                    key: b"k4",
                    value: b""
                },
                BatchOp::DeleteRange {
                    cf: cf(3),
                    start: b"a",
                    end: b"z"
                },
                BatchOp::Put {
                    cf: cf(1),
                    key: b"",
                    value: b""
                },
            ]
        );
        assert_eq!(a.len(), 7);
        assert_eq!(a.size_bytes(), 2 + 2 + 2 + 1 + 2 + 1 + 4 + 2 + 2);
        assert_eq!(ops[5].column_family(), cf(3));
    }
}
