//! A generic durable log: index -> bytes, a vote record, truncate suffix, purge prefix.
//!
//! It knows nothing of Raft; the node adapts it to openraft's log storage. It lives in its
//! own column family of the same engine as the keyspace, so a synced append also orders
//! every state write before it (one WAL).
//!
//! Layout of [`LOG_CF`]:
//!
//! ```text
//! 'e' ++ index (8 BE)  -> entry bytes
//! 'v'                  -> vote bytes (opaque)
//! 'p'                  -> last purged index (8 BE)
//! 'm' ++ name          -> small opaque records the adapter keeps (e.g. committed index)
//! ```

use crate::codec::be_u64;
use crate::engine::{ColumnFamily, Durability, Engine, ScanBounds, WriteBatch};
use crate::error::{Result, StorageError};
use parking_lot::Mutex;
use std::ops::ControlFlow;
use std::sync::Arc;

/// Column family of the durable log.
pub const LOG_CF: &str = "log";

const ENTRY: u8 = b'e';
const VOTE: &[u8] = b"v";
const PURGED: &[u8] = b"p";
const META: u8 = b'm';

fn entry_key(index: u64) -> [u8; 9] {
    let mut k = [ENTRY; 9];
    k[1..].copy_from_slice(&index.to_be_bytes());
    k
}

fn meta_key(name: &str) -> Vec<u8> {
    let mut k = vec![META];
    k.extend_from_slice(name.as_bytes());
    k
}

/// Bounds of the log. Invariant: `purged < first <= last` when entries exist; entries are
/// exactly the indexes `first..=last`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogBounds {
    /// Last purged index.
    pub purged: Option<u64>,
    /// First index present.
    pub first: Option<u64>,
    /// Last index present.
    pub last: Option<u64>,
}

/// The durable log (see the module docs).
///
/// # Examples
/// ```
/// use keel_storage::{engine::{Durability, MemEngine}, DurableLog, LOG_CF};
/// use std::sync::Arc;
/// let log = DurableLog::open(Arc::new(MemEngine::new(&[LOG_CF])))?;
/// log.append(vec![(1, b"a".to_vec()), (2, b"b".to_vec())], Durability::Synced)?;
/// log.truncate_from(2)?;
/// log.append(vec![(2, b"c".to_vec())], Durability::Synced)?;
/// log.purge_to(1)?;
/// assert_eq!(log.entries(1, 10)?, vec![(2, b"c".to_vec())]);
/// assert_eq!(log.bounds().purged, Some(1));
/// # Ok::<(), keel_storage::StorageError>(())
/// ```
pub struct DurableLog {
    engine: Arc<dyn Engine>,
    cf: ColumnFamily,
    /// Guards the bounds; held across each write so appends, truncates and purges are
    /// serialized against each other.
    bounds: Mutex<LogBounds>,
}

impl std::fmt::Debug for DurableLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DurableLog")
            .field("bounds", &*self.bounds.lock())
            .finish_non_exhaustive()
    }
}

impl DurableLog {
    /// Open the log in `engine` (which must have [`LOG_CF`] registered). Reads three keys.
    ///
    /// # Errors
    /// Missing column family, corruption, storage failure.
    pub fn open(engine: Arc<dyn Engine>) -> Result<Self> {
        let cf = engine.column_family(LOG_CF)?;
        let bounds = {
            let view = engine.view()?;
            let purged = view.get(cf, PURGED)?.map(|b| be_u64(&b)).transpose()?;
            let lo = entry_key(0);
            let hi = [ENTRY + 1];
            let mut first = None;
            let mut last = None;
            view.scan(cf, ScanBounds::forward(&lo, Some(&hi)), &mut |k, _| {
                first = Some(be_u64(&k[1..])?);
                Ok(ControlFlow::Break(()))
            })?;
            view.scan(cf, ScanBounds::backward(&lo, Some(&hi)), &mut |k, _| {
                last = Some(be_u64(&k[1..])?);
                Ok(ControlFlow::Break(()))
            })?;
            LogBounds {
                purged,
                first,
                last,
            }
        };
        Ok(DurableLog {
            engine,
            cf,
            bounds: Mutex::new(bounds),
        })
    }

    /// Current bounds.
    pub fn bounds(&self) -> LogBounds {
        *self.bounds.lock()
    }

    /// Append entries with consecutive indexes right after the last one (or after the purged
    /// index of an empty log; any index when the log never held an entry).
    ///
    /// # Errors
    /// `LogOrder` for a gap or overlap (nothing written); storage failure.
    pub fn append(&self, entries: Vec<(u64, Vec<u8>)>, durability: Durability) -> Result<()> {
        let mut bounds = self.bounds.lock();
        let mut expected = bounds.last.or(bounds.purged).map(|i| i + 1);
        let mut batch = WriteBatch::default();
        let mut first_new = None;
        for (index, bytes) in entries {
            if let Some(e) = expected {
                if index != e {
                    return Err(StorageError::LogOrder {
                        detail: format!("append of index {index}, expected {e}"),
                    });
                }
            }
            first_new.get_or_insert(index);
            batch.put(self.cf, entry_key(index), bytes);
            expected = Some(index + 1);
        }
        let Some(first_new) = first_new else {
            return Ok(());
        };
        self.engine.write(batch, durability)?;
        bounds.first.get_or_insert(first_new);
        bounds.last = expected.map(|e| e - 1);
        Ok(())
    }

    /// The entry at `index`.
    ///
    /// # Errors
    /// Storage failure.
    pub fn get(&self, index: u64) -> Result<Option<Vec<u8>>> {
        self.engine.view()?.get(self.cf, &entry_key(index))
    }

    /// Entries with index in `[from, to)`.
    ///
    /// # Errors
    /// Storage failure.
    pub fn entries(&self, from: u64, to: u64) -> Result<Vec<(u64, Vec<u8>)>> {
        let view = self.engine.view()?;
        let (lo, hi) = (entry_key(from), entry_key(to));
        let mut out = Vec::new();
        view.scan(self.cf, ScanBounds::forward(&lo, Some(&hi)), &mut |k, v| {
            out.push((be_u64(&k[1..])?, v.to_vec()));
            Ok(ControlFlow::Continue(()))
        })?;
        Ok(out)
    }

    /// Remove every entry at or after `index` (conflicting suffix). Synced.
    ///
    /// # Errors
    /// Storage failure.
    pub fn truncate_from(&self, index: u64) -> Result<()> {
        let mut bounds = self.bounds.lock();
        let mut batch = WriteBatch::default();
        batch.delete_range(self.cf, entry_key(index), vec![ENTRY + 1]);
        self.engine.write(batch, Durability::Synced)?;
        match bounds.first {
            Some(f) if index <= f => {
                bounds.first = None;
                bounds.last = None;
            }
            _ => {
                bounds.last = bounds.last.map(|l| l.min(index.saturating_sub(1)));
            }
        }
        Ok(())
    }

    /// Remove every entry at or before `index` and remember `index` as purged. Synced.
    ///
    /// # Errors
    /// `LogOrder` when `index` is below the last purge; storage failure.
    pub fn purge_to(&self, index: u64) -> Result<()> {
        self.purge_to_with_meta(index, None)
    }

    /// As [`DurableLog::purge_to`], saving a named record (see [`DurableLog::save_meta`]) in
    /// the same atomic batch: a caller that keeps its own account of the purge (openraft's
    /// purged log id) can never find it ahead of, or behind, the entries after a crash.
    ///
    /// # Errors
    /// `LogOrder` when `index` is below the last purge; storage failure.
    pub fn purge_to_with_meta(&self, index: u64, meta: Option<(&str, &[u8])>) -> Result<()> {
        let mut bounds = self.bounds.lock();
        if bounds.purged.is_some_and(|p| index < p) {
            return Err(StorageError::LogOrder {
                detail: format!("purge to {index} below earlier purge {:?}", bounds.purged),
            });
        }
        let mut batch = WriteBatch::default();
        batch.delete_range(self.cf, entry_key(0), entry_key(index + 1));
        batch.put(self.cf, PURGED, index.to_be_bytes());
        if let Some((name, value)) = meta {
            batch.put(self.cf, meta_key(name), value);
        }
        self.engine.write(batch, Durability::Synced)?;
        bounds.purged = Some(index);
        match bounds.last {
            Some(l) if l > index => {
                bounds.first = Some(bounds.first.map_or(index + 1, |f| f.max(index + 1)))
            }
            _ => {
                bounds.first = None;
                bounds.last = None;
            }
        }
        Ok(())
    }

    /// Persist the vote (synced: a vote must never be forgotten).
    ///
    /// # Errors
    /// Storage failure.
    pub fn save_vote(&self, vote: &[u8]) -> Result<()> {
        self.put_raw(VOTE.to_vec(), vote.to_vec(), Durability::Synced)
    }

    /// The persisted vote.
    ///
    /// # Errors
    /// Storage failure.
    pub fn vote(&self) -> Result<Option<Vec<u8>>> {
        self.engine.view()?.get(self.cf, VOTE)
    }

    /// Persist a small named record next to the log.
    ///
    /// # Errors
    /// Storage failure.
    pub fn save_meta(&self, name: &str, value: &[u8], durability: Durability) -> Result<()> {
        self.put_raw(meta_key(name), value.to_vec(), durability)
    }

    /// A named record saved with [`DurableLog::save_meta`].
    ///
    /// # Errors
    /// Storage failure.
    pub fn meta(&self, name: &str) -> Result<Option<Vec<u8>>> {
        self.engine.view()?.get(self.cf, &meta_key(name))
    }

    fn put_raw(&self, key: Vec<u8>, value: Vec<u8>, durability: Durability) -> Result<()> {
        let _bounds = self.bounds.lock();
        let mut batch = WriteBatch::default();
        batch.put(self.cf, key, value);
        self.engine.write(batch, durability)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::MemEngine;

    fn log() -> (Arc<MemEngine>, DurableLog) {
        let e = Arc::new(MemEngine::new(&[LOG_CF]));
        let l = DurableLog::open(e.clone()).unwrap();
        (e, l)
    }

    #[test]
    fn gaps_and_overlaps_are_refused() {
        let (_, l) = log();
        l.append(vec![(5, b"a".to_vec())], Durability::Synced)
            .unwrap();
        assert!(matches!(
            l.append(vec![(7, b"x".to_vec())], Durability::Synced),
            Err(StorageError::LogOrder { .. })
        ));
        assert!(matches!(
            l.append(vec![(5, b"x".to_vec())], Durability::Synced),
            Err(StorageError::LogOrder { .. })
        ));
        assert_eq!(l.get(5).unwrap(), Some(b"a".to_vec()));
    }

    #[test]
    fn bounds_survive_crash_of_synced_entries_only() {
        let (e, l) = log();
        l.append(
            (1..=3).map(|i| (i, vec![i as u8])).collect(),
            Durability::Synced,
        )
        .unwrap();
        l.append(vec![(4, vec![4])], Durability::Buffered).unwrap();
        l.save_vote(b"term=3").unwrap();
        l.append(vec![(5, vec![5])], Durability::Buffered).unwrap();
        let l2 = DurableLog::open(Arc::new(e.crash())).unwrap();
        // the vote's fsync also made entry 4 durable; 5 was never synced
        assert_eq!(
            l2.bounds(),
            LogBounds {
                purged: None,
                first: Some(1),
                last: Some(4)
            }
        );
        assert_eq!(l2.vote().unwrap(), Some(b"term=3".to_vec()));
    }

    #[test]
    fn purge_then_truncate_then_append() {
        let (e, l) = log();
        l.append(
            (1..=10).map(|i| (i, vec![i as u8])).collect(),
            Durability::Synced,
        )
        .unwrap();
        l.purge_to(4).unwrap();
        l.truncate_from(8).unwrap();
        assert_eq!(l.bounds().first, Some(5));
        assert_eq!(l.bounds().last, Some(7));
        l.append(vec![(8, b"new".to_vec())], Durability::Synced)
            .unwrap();
        let l2 = DurableLog::open(Arc::new(e.crash())).unwrap();
        assert_eq!(
            l2.bounds(),
            LogBounds {
                purged: Some(4),
                first: Some(5),
                last: Some(8)
            }
        );
        assert_eq!(l2.entries(0, 100).unwrap().len(), 4);
        // purge everything: an empty log continues after the purged index
        l2.purge_to(8).unwrap();
        assert!(l2.append(vec![(10, vec![])], Durability::Synced).is_err());
        l2.append(vec![(9, vec![])], Durability::Synced).unwrap();
    }
}
