//! The in-memory engine: what the deterministic simulation and the model tests run on.
//!
//! It keeps two images of every column family: *written* (what reads see) and *synced*
//! (what survives a crash). A [`Durability::Buffered`] write changes only the written image;
//! a [`Durability::Synced`] write or [`Engine::sync`] makes the whole written image durable,
//! like an fsync of RocksDB's WAL covers every write before it. [`MemEngine::crash`] returns
//! the engine a restart would find: exactly the synced data.
//!
//! Maps are persistent (`imbl::OrdMap`), so a read view is an O(1) clone.

use super::{
    BatchOp, ColumnFamily, Durability, Engine, Poison, ReadView, ScanBounds, Visitor, WriteBatch,
};
use crate::error::{Result, StorageError};
use imbl::OrdMap;
use parking_lot::Mutex;
use std::ops::{Bound, ControlFlow};
use std::sync::Arc;

type Map = OrdMap<Vec<u8>, Vec<u8>>;

/// Both images. Invariant: every key of `synced` reflects a write that also reached `written`.
#[derive(Clone, Debug, Default)]
struct Images {
    written: Vec<Map>,
    synced: Vec<Map>,
}

/// Faults a test can arm.
#[derive(Debug, Default)]
struct Faults {
    fail_writes: bool,
    fail_syncs: bool,
    /// Writes still allowed before the armed failpoint ([`MemEngine::fail_after_writes`]).
    writes_left: Option<u64>,
}

/// In-memory [`Engine`] (see the module docs).
///
/// # Examples
/// ```
/// use keel_storage::engine::{Durability, Engine, MemEngine, WriteBatch};
/// let engine = MemEngine::new(&["kv"]);
/// let kv = engine.column_family("kv")?;
/// let mut b = WriteBatch::default();
/// b.put(kv, b"durable", b"1");
/// engine.write(b, Durability::Synced)?;
/// let mut b = WriteBatch::default();
/// b.put(kv, b"lost", b"2");
/// engine.write(b, Durability::Buffered)?;
/// let restarted = engine.crash();
/// let view = restarted.view()?;
/// assert_eq!(view.get(kv, b"durable")?, Some(b"1".to_vec()));
/// assert_eq!(view.get(kv, b"lost")?, None);
/// # Ok::<(), keel_storage::StorageError>(())
/// ```
#[derive(Debug)]
pub struct MemEngine {
    names: Arc<Vec<String>>,
    /// Guards both images; held only for the duration of one write, sync or view clone.
    images: Mutex<Images>,
    faults: Mutex<Faults>,
    poison: Poison,
}

impl MemEngine {
    /// A new, empty engine with the given column families.
    pub fn new(column_families: &[&str]) -> Self {
        let names: Vec<String> = column_families.iter().map(|s| (*s).to_string()).collect();
        let empty = vec![Map::new(); names.len()];
        MemEngine {
            names: Arc::new(names),
            images: Mutex::new(Images {
                written: empty.clone(),
                synced: empty,
            }),
            faults: Mutex::new(Faults::default()),
            poison: Poison::default(),
        }
    }

    /// The engine a restart after a crash finds: the synced image only. Column families
    /// listed in `extra` are added (as an open with more registered families would).
    pub fn crash(&self) -> MemEngine {
        self.crash_with(&[])
    }

    /// Like [`MemEngine::crash`], registering more column families on "reopen".
    pub fn crash_with(&self, extra: &[&str]) -> MemEngine {
        let synced = self.images.lock().synced.clone();
        Self::from_image(&self.names, synced, extra)
    }

    /// A copy of this engine including unsynced writes (a clean shutdown and reopen).
    pub fn reopen(&self, extra: &[&str]) -> MemEngine {
        let written = self.images.lock().written.clone();
        Self::from_image(&self.names, written, extra)
    }

    fn from_image(names: &[String], mut maps: Vec<Map>, extra: &[&str]) -> MemEngine {
        let mut names = names.to_vec();
        for name in extra {
            if !names.iter().any(|n| n == name) {
                names.push((*name).to_string());
                maps.push(Map::new());
            }
        }
        MemEngine {
            names: Arc::new(names),
            images: Mutex::new(Images {
                written: maps.clone(),
                synced: maps,
            }),
            faults: Mutex::new(Faults::default()),
            poison: Poison::default(),
        }
    }

    /// Make the next writes fail with an i/o error (poisoning the engine).
    pub fn fail_writes(&self) {
        self.faults.lock().fail_writes = true;
    }

    /// Make the next fsyncs fail with an i/o error (poisoning the engine).
    pub fn fail_syncs(&self) {
        self.faults.lock().fail_syncs = true;
    }

    /// Arm a failpoint: `n` more writes succeed, then every write fails with an i/o error
    /// (poisoning the engine), as if the process died just before its `n`-th write from now.
    /// [`MemEngine::crash`] then gives the disk a restart would find. Counting every write
    /// lets a test crash an operation at each of its steps in turn.
    ///
    /// # Examples
    /// ```
    /// use keel_storage::engine::{Durability, Engine, MemEngine, WriteBatch};
    /// let engine = MemEngine::new(&["kv"]);
    /// let kv = engine.column_family("kv")?;
    /// engine.fail_after_writes(1);
    /// let mut b = WriteBatch::default();
    /// b.put(kv, b"first", b"1");
    /// engine.write(b.clone(), Durability::Synced)?;
    /// assert!(engine.write(b, Durability::Synced).is_err());
    /// assert!(engine.view().is_err(), "poisoned");
    /// assert_eq!(engine.crash().view()?.get(kv, b"first")?, Some(b"1".to_vec()));
    /// # Ok::<(), keel_storage::StorageError>(())
    /// ```
    pub fn fail_after_writes(&self, n: u64) {
        self.faults.lock().writes_left = Some(n);
    }

    /// Whether some written data is not yet synced.
    pub fn has_unsynced(&self) -> bool {
        let images = self.images.lock();
        images.written != images.synced
    }
}

fn apply(maps: &mut [Map], batch: &WriteBatch) {
    for op in batch.ops() {
        match op {
            BatchOp::Put { cf, key, value } => {
                if let Some(m) = maps.get_mut(cf.index()) {
                    m.insert(key.to_vec(), value.to_vec());
                }
            }
            BatchOp::Delete { cf, key } => {
                if let Some(m) = maps.get_mut(cf.index()) {
                    m.remove(key);
                }
            }
            BatchOp::DeleteRange { cf, start, end } => {
                if let Some(m) = maps.get_mut(cf.index()) {
                    if start < end {
                        let doomed: Vec<Vec<u8>> = m
                            .range::<_, Vec<u8>>((
                                Bound::Included(start.to_vec()),
                                Bound::Excluded(end.to_vec()),
                            ))
                            .map(|(k, _)| k.clone())
                            .collect();
                        for k in doomed {
                            m.remove(&k);
                        }
                    }
                }
            }
        }
    }
}

impl Engine for MemEngine {
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
        for op in batch.ops() {
            let cf = op.column_family();
            if cf.index() >= self.names.len() {
                return Err(StorageError::UnknownColumnFamily {
                    name: format!("#{}", cf.index()),
                });
            }
        }
        {
            let mut faults = self.faults.lock();
            match faults.writes_left {
                Some(0) => faults.fail_writes = true,
                Some(n) => faults.writes_left = Some(n - 1),
                None => {}
            }
            if faults.fail_writes {
                return Err(self.poison.poison(StorageError::Io {
                    op: "write",
                    message: "injected write failure".into(),
                }));
            }
            if durability == Durability::Synced && faults.fail_syncs {
                return Err(self.poison.poison(StorageError::Io {
                    op: "fsync",
                    message: "injected fsync failure".into(),
                }));
            }
        }
        let mut images = self.images.lock();
        apply(&mut images.written, &batch);
        if durability == Durability::Synced {
            images.synced = images.written.clone();
        }
        Ok(())
    }

    /// Nothing to do: the written image is what a crash of the process would keep; a
    /// simulated crash ([`MemEngine::crash`]) is a machine crash and keeps only what was
    /// synced.
    fn flush_buffered(&self) -> Result<()> {
        self.poison.check()
    }

    fn sync(&self) -> Result<()> {
        self.poison.check()?;
        if self.faults.lock().fail_syncs {
            return Err(self.poison.poison(StorageError::Io {
                op: "fsync",
                message: "injected fsync failure".into(),
            }));
        }
        let mut images = self.images.lock();
        images.synced = images.written.clone();
        Ok(())
    }

    fn view(&self) -> Result<Box<dyn ReadView + '_>> {
        self.poison.check()?;
        let maps = self.images.lock().written.clone();
        Ok(Box::new(MemView {
            maps,
            poison: &self.poison,
        }))
    }

    fn size_bytes_of(&self, column_families: &[&str]) -> Result<u64> {
        self.poison.check()?;
        let indexes = (column_families.iter())
            .map(|n| self.column_family(n).map(ColumnFamily::index))
            .collect::<Result<Vec<_>>>()?;
        let images = self.images.lock();
        let total: usize = indexes
            .iter()
            .filter_map(|i| images.written.get(*i))
            .flat_map(|m| m.iter())
            .map(|(k, v)| k.len() + v.len())
            .sum();
        Ok(total as u64)
    }

    /// Nothing to reclaim in memory.
    fn compact_all(&self) -> Result<()> {
        self.poison.check()
    }

    /// Nothing is garbage in memory: the live size is the size.
    fn live_bytes(&self) -> Result<u64> {
        self.size_bytes()
    }

    fn size_bytes(&self) -> Result<u64> {
        let names: Vec<&str> = self.names.iter().map(String::as_str).collect();
        self.size_bytes_of(&names)
    }

    fn check_healthy(&self) -> Result<()> {
        self.poison.check()
    }
}

struct MemView<'a> {
    maps: Vec<Map>,
    poison: &'a Poison,
}

impl ReadView for MemView<'_> {
    fn get(&self, cf: ColumnFamily, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.poison.check()?;
        Ok(self.maps.get(cf.index()).and_then(|m| m.get(key).cloned()))
    }

    fn scan(
        &self,
        cf: ColumnFamily,
        bounds: ScanBounds<'_>,
        visit: &mut Visitor<'_>,
    ) -> Result<()> {
        self.poison.check()?;
        let Some(map) = self.maps.get(cf.index()) else {
            return Ok(());
        };
        if let Some(upper) = bounds.upper {
            if upper <= bounds.lower {
                return Ok(());
            }
        }
        let lower = Bound::Included(bounds.lower.to_vec());
        let upper = bounds
            .upper
            .map_or(Bound::Unbounded, |u| Bound::Excluded(u.to_vec()));
        let range = map.range::<_, Vec<u8>>((lower, upper));
        if bounds.reverse {
            for (k, v) in range.rev() {
                if visit(k, v)?.is_break() {
                    break;
                }
            }
        } else {
            for (k, v) in range {
                if let ControlFlow::Break(()) = visit(k, v)? {
                    break;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(e: &MemEngine, key: &[u8], d: Durability) {
        let cf = e.column_family("a").unwrap();
        let mut b = WriteBatch::default();
        b.put(cf, key, b"v");
        e.write(b, d).unwrap();
    }

    #[test]
    fn crash_keeps_exactly_synced() {
        let e = MemEngine::new(&["a"]);
        put(&e, b"1", Durability::Buffered);
        put(&e, b"2", Durability::Synced);
        put(&e, b"3", Durability::Buffered);
        assert!(e.has_unsynced());
        let r = e.crash();
        let cf = r.column_family("a").unwrap();
        let v = r.view().unwrap();
        assert!(
            v.get(cf, b"1").unwrap().is_some(),
            "synced write covers earlier ones"
        );
        assert!(v.get(cf, b"2").unwrap().is_some());
        assert!(v.get(cf, b"3").unwrap().is_none());
    }

    #[test]
    fn write_failure_poisons() {
        let e = MemEngine::new(&["a"]);
        e.fail_writes();
        let cf = e.column_family("a").unwrap();
        let mut b = WriteBatch::default();
        b.put(cf, b"k", b"v");
        assert!(matches!(
            e.write(b.clone(), Durability::Buffered),
            Err(StorageError::Io { .. })
        ));
        assert!(matches!(e.view(), Err(StorageError::Poisoned { .. })));
        assert!(matches!(
            e.write(b, Durability::Buffered),
            Err(StorageError::Poisoned { .. })
        ));
    }

    #[test]
    fn view_is_point_in_time() {
        let e = MemEngine::new(&["a"]);
        put(&e, b"1", Durability::Buffered);
        let v = e.view().unwrap();
        put(&e, b"2", Durability::Buffered);
        let cf = e.column_family("a").unwrap();
        assert!(v.get(cf, b"2").unwrap().is_none());
        assert!(e.view().unwrap().get(cf, b"2").unwrap().is_some());
    }
}
