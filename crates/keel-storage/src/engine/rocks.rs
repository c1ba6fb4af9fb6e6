//! The RocksDB engine: one database, one WAL, column families registered at open.

use super::{
    BatchOp, ColumnFamily, Durability, Engine, Poison, ReadView, ScanBounds, Visitor, WriteBatch,
};
use crate::error::{Result, StorageError};
use rocksdb::{BlockBasedOptions, Cache, Options, ReadOptions, WriteOptions, DB};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

/// Options of [`RocksEngine::open`].
#[derive(Clone, Debug)]
pub struct RocksOptions {
    /// Column families every caller needs; created when missing. Families found on disk but
    /// not listed are opened too (RocksDB requires it) and stay reachable by name.
    pub column_families: Vec<String>,
    /// Create the database when the directory holds none.
    pub create_if_missing: bool,
    /// Shared block cache size.
    pub block_cache_bytes: usize,
    /// Background flush/compaction threads.
    pub background_jobs: i32,
    /// Keep [`Durability::Buffered`] writes in the process (RocksDB's `manual_wal_flush`)
    /// until [`Engine::flush_buffered`], [`Engine::sync`] or a synced write: a buffered
    /// write then costs no system call, and a crash of the process loses the writes still
    /// held, as a machine crash loses unsynced ones. Off by default.
    pub manual_wal_flush: bool,
}

impl RocksOptions {
    /// Defaults with the given column families.
    pub fn new<S: AsRef<str>>(column_families: &[S]) -> Self {
        RocksOptions {
            column_families: column_families
                .iter()
                .map(|s| s.as_ref().to_string())
                .collect(),
            create_if_missing: true,
            block_cache_bytes: 64 << 20,
            background_jobs: 2,
            manual_wal_flush: false,
        }
    }
}

/// [`Engine`] on one RocksDB instance.
///
/// # Examples
/// ```
/// use keel_storage::engine::{Durability, Engine, RocksEngine, RocksOptions, WriteBatch};
/// let dir = tempfile::tempdir().unwrap();
/// let engine = RocksEngine::open(dir.path(), &RocksOptions::new(&["kv"]))?;
/// let kv = engine.column_family("kv")?;
/// let mut b = WriteBatch::default();
/// b.put(kv, b"k", b"v");
/// engine.write(b, Durability::Synced)?;
/// assert_eq!(engine.view()?.get(kv, b"k")?, Some(b"v".to_vec()));
/// # Ok::<(), keel_storage::StorageError>(())
/// ```
pub struct RocksEngine {
    db: DB,
    /// Index = [`ColumnFamily`] handle.
    names: Vec<String>,
    path: PathBuf,
    poison: Poison,
}

impl std::fmt::Debug for RocksEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RocksEngine")
            .field("path", &self.path)
            .field("column_families", &self.names)
            .finish_non_exhaustive()
    }
}

fn io(op: &'static str, e: &rocksdb::Error) -> StorageError {
    StorageError::Io {
        op,
        message: e.to_string(),
    }
}

impl RocksEngine {
    /// Open (or create) the database in `path`.
    ///
    /// # Errors
    /// [`StorageError::Io`] when RocksDB cannot open the directory (missing without
    /// `create_if_missing`, locked by another process, unreadable).
    pub fn open(path: impl AsRef<Path>, options: &RocksOptions) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let mut db_opts = Options::default();
        db_opts.create_if_missing(options.create_if_missing);
        db_opts.create_missing_column_families(true);
        db_opts.set_max_background_jobs(options.background_jobs);
        db_opts.set_bytes_per_sync(1 << 20);
        db_opts.set_manual_wal_flush(options.manual_wal_flush);
        let cache = Cache::new_lru_cache(options.block_cache_bytes);
        let mut table = BlockBasedOptions::default();
        table.set_block_cache(&cache);
        table.set_bloom_filter(10.0, false);
        db_opts.set_block_based_table_factory(&table);

        let mut names: Vec<String> = options.column_families.clone();
        if let Ok(existing) = DB::list_cf(&db_opts, &path) {
            for name in existing {
                if name != rocksdb::DEFAULT_COLUMN_FAMILY_NAME && !names.contains(&name) {
                    names.push(name);
                }
            }
        }
        let descriptors = names
            .iter()
            .map(|n| rocksdb::ColumnFamilyDescriptor::new(n, db_opts.clone()));
        let db =
            DB::open_cf_descriptors(&db_opts, &path, descriptors).map_err(|e| io("open", &e))?;
        Ok(RocksEngine {
            db,
            names,
            path,
            poison: Poison::default(),
        })
    }

    /// Flush every memtable to SST files (so the next open replays no WAL).
    ///
    /// # Errors
    /// Engine failure (which poisons it).
    pub fn flush(&self) -> Result<()> {
        self.poison.check()?;
        for name in &self.names {
            if let Some(cf) = self.db.cf_handle(name) {
                self.db
                    .flush_cf(cf)
                    .map_err(|e| self.poison.poison(io("flush", &e)))?;
            }
        }
        Ok(())
    }

    /// The directory this engine lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn handle(&self, cf: ColumnFamily) -> Result<&rocksdb::ColumnFamily> {
        let name = self
            .names
            .get(cf.index())
            .ok_or_else(|| StorageError::UnknownColumnFamily {
                name: format!("#{}", cf.index()),
            })?;
        self.db
            .cf_handle(name)
            .ok_or_else(|| StorageError::UnknownColumnFamily { name: name.clone() })
    }

    fn to_rocks_batch(&self, batch: &WriteBatch) -> Result<rocksdb::WriteBatch> {
        // Sized up front (12-byte header, up to 16 bytes of tag, family and lengths per op),
        // so RocksDB does not grow the batch buffer op by op.
        let mut out =
            rocksdb::WriteBatch::with_capacity_bytes(12 + batch.size_bytes() + 16 * batch.len());
        for op in batch.ops() {
            match op {
                BatchOp::Put { cf, key, value } => out.put_cf(self.handle(cf)?, key, value),
                BatchOp::Delete { cf, key } => out.delete_cf(self.handle(cf)?, key),
                BatchOp::DeleteRange { cf, start, end } => {
                    if start < end {
                        out.delete_range_cf(self.handle(cf)?, start, end);
                    }
                }
            }
        }
        Ok(out)
    }

    fn handle_by_name(&self, name: &str) -> Result<&rocksdb::ColumnFamily> {
        self.db
            .cf_handle(name)
            .ok_or_else(|| crate::StorageError::UnknownColumnFamily {
                name: name.to_owned(),
            })
    }

    /// The sum of integer properties over every column family.
    fn sum_property(&self, props: &[&str]) -> Result<u64> {
        self.poison.check()?;
        let mut total = 0u64;
        for name in &self.names {
            let Some(cf) = self.db.cf_handle(name) else {
                continue;
            };
            for prop in props {
                let v = self
                    .db
                    .property_int_value_cf(cf, *prop)
                    .map_err(|e| io("size", &e))?;
                total = total.saturating_add(v.unwrap_or(0));
            }
        }
        Ok(total)
    }
}

impl Engine for RocksEngine {
    fn column_family(&self, name: &str) -> Result<ColumnFamily> {
        self.names
            .iter()
            .position(|n| n == name)
            .map(ColumnFamily::from_index)
            .ok_or_else(|| StorageError::UnknownColumnFamily {
                name: name.to_string(),
            })
    }

    fn write(&self, batch: WriteBatch, durability: Durability) -> Result<()> {
        self.poison.check()?;
        let rocks_batch = self.to_rocks_batch(&batch)?;
        let mut opts = WriteOptions::default();
        opts.set_sync(durability == Durability::Synced);
        self.db
            .write_opt(rocks_batch, &opts)
            .map_err(|e| self.poison.poison(io("write", &e)))
    }

    fn sync(&self) -> Result<()> {
        self.poison.check()?;
        self.db
            .flush_wal(true)
            .map_err(|e| self.poison.poison(io("fsync", &e)))
    }

    fn flush_buffered(&self) -> Result<()> {
        self.poison.check()?;
        self.db
            .flush_wal(false)
            .map_err(|e| self.poison.poison(io("flush the WAL", &e)))
    }

    fn view(&self) -> Result<Box<dyn ReadView + '_>> {
        self.poison.check()?;
        Ok(Box::new(RocksView {
            engine: self,
            snapshot: self.db.snapshot(),
        }))
    }

    fn size_bytes(&self) -> Result<u64> {
        self.sum_property(&[
            "rocksdb.total-sst-files-size",
            "rocksdb.cur-size-all-mem-tables",
        ])
    }

    fn size_bytes_of(&self, column_families: &[&str]) -> Result<u64> {
        self.poison.check()?;
        let mut total = 0u64;
        for name in column_families {
            let cf = self.handle_by_name(name)?;
            for prop in [
                "rocksdb.total-sst-files-size",
                "rocksdb.cur-size-all-mem-tables",
            ] {
                let v = self
                    .db
                    .property_int_value_cf(cf, prop)
                    .map_err(|e| io("size", &e))?;
                total = total.saturating_add(v.unwrap_or(0));
            }
        }
        Ok(total)
    }

    fn compact_all(&self) -> Result<()> {
        self.poison.check()?;
        for name in &self.names {
            let cf = self.handle_by_name(name)?;
            self.db.compact_range_cf(cf, None::<&[u8]>, None::<&[u8]>);
        }
        Ok(())
    }

    fn live_bytes(&self) -> Result<u64> {
        self.sum_property(&[
            "rocksdb.estimate-live-data-size",
            "rocksdb.cur-size-all-mem-tables",
        ])
    }

    fn check_healthy(&self) -> Result<()> {
        self.poison.check()
    }
}

struct RocksView<'a> {
    engine: &'a RocksEngine,
    snapshot: rocksdb::Snapshot<'a>,
}

impl ReadView for RocksView<'_> {
    fn get(&self, cf: ColumnFamily, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.engine.poison.check()?;
        let handle = self.engine.handle(cf)?;
        self.snapshot
            .get_cf(handle, key)
            .map_err(|e| io("read", &e))
    }

    fn scan(
        &self,
        cf: ColumnFamily,
        bounds: ScanBounds<'_>,
        visit: &mut Visitor<'_>,
    ) -> Result<()> {
        self.engine.poison.check()?;
        if let Some(upper) = bounds.upper {
            if upper <= bounds.lower {
                return Ok(());
            }
        }
        let handle = self.engine.handle(cf)?;
        let mut opts = ReadOptions::default();
        opts.set_snapshot(&self.snapshot);
        opts.set_iterate_lower_bound(bounds.lower.to_vec());
        if let Some(upper) = bounds.upper {
            opts.set_iterate_upper_bound(upper.to_vec());
        }
        let mut it = self.engine.db.raw_iterator_cf_opt(handle, opts);
        if bounds.reverse {
            it.seek_to_last();
        } else {
            it.seek_to_first();
        }
        while it.valid() {
            let (Some(k), Some(v)) = (it.key(), it.value()) else {
                break;
            };
            if let ControlFlow::Break(()) = visit(k, v)? {
                return Ok(());
            }
            if bounds.reverse {
                it.prev();
            } else {
                it.next();
            }
        }
        it.status().map_err(|e| io("scan", &e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reopen_keeps_data_and_unlisted_families() {
        let dir = tempfile::tempdir().unwrap();
        {
            let e = RocksEngine::open(dir.path(), &RocksOptions::new(&["a", "b"])).unwrap();
            let b = e.column_family("b").unwrap();
            let mut batch = WriteBatch::default();
            batch.put(b, b"k", b"v");
            e.write(batch, Durability::Synced).unwrap();
        }
        let e = RocksEngine::open(dir.path(), &RocksOptions::new(&["a"])).unwrap();
        let b = e.column_family("b").unwrap();
        assert_eq!(e.view().unwrap().get(b, b"k").unwrap(), Some(b"v".to_vec()));
        assert!(e.column_family("zzz").is_err());
    }

    #[test]
    fn scan_bounds_and_reverse() {
        let dir = tempfile::tempdir().unwrap();
        let e = RocksEngine::open(dir.path(), &RocksOptions::new(&["a"])).unwrap();
        let a = e.column_family("a").unwrap();
        let mut batch = WriteBatch::default();
        for k in [b"a", b"b", b"c", b"d"] {
            batch.put(a, k, k);
        }
        batch.delete_range(a, b"d", b"e");
        e.write(batch, Durability::Buffered).unwrap();
        let view = e.view().unwrap();
        let mut seen = Vec::new();
        view.scan(a, ScanBounds::backward(b"a", Some(b"c")), &mut |k, _| {
            seen.push(k.to_vec());
            Ok(ControlFlow::Continue(()))
        })
        .unwrap();
        assert_eq!(seen, vec![b"b".to_vec(), b"a".to_vec()]);
        let mut all = 0;
        view.scan(a, ScanBounds::forward(b"", None), &mut |_, _| {
            all += 1;
            Ok(ControlFlow::Continue(()))
        })
        .unwrap();
        assert_eq!(all, 3);
    }

    #[test]
    fn second_open_of_locked_dir_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let _e = RocksEngine::open(dir.path(), &RocksOptions::new(&["a"])).unwrap();
        let err = RocksEngine::open(dir.path(), &RocksOptions::new(&["a"])).unwrap_err();
        assert!(matches!(err, StorageError::Io { op: "open", .. }));
    }
}
