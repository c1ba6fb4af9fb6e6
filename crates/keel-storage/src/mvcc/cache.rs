//! The bounded cache of the latest version of recently written or read keys.
//!
//! Lives in [`super::store::Published`], next to the revision it describes. Invariant: for
//! every cached key, the entry equals the key's latest live version in `kv_history` at the
//! published revision (`None` = no live version: no entry, or a deletion newest). It is
//! maintained after every successful commit (the changed keys get their new version), filled
//! by single-key reads at the published revision, emptied when a commit fails and when a
//! snapshot is installed, and starts empty at open. The writer answers puts' "previous
//! version" from it and readers answer single-key reads at the latest revision from it.
//! Compaction removes only superseded versions and deletions, never a key's live newest
//! version, so it leaves the cache alone. Values are copied into the cache, so it never
//! pins a caller's larger buffer.

use crate::codec::Record;
use crate::limits::{LATEST_CACHE_BYTES_MAX, LATEST_CACHE_ENTRIES_MAX};
use bytes::Bytes;
use std::collections::HashMap;

/// Fixed per-entry overhead counted against the byte budget (map slot, record header).
const ENTRY_OVERHEAD: usize = 64;

/// Keys are the clients' keys, so the hasher is seeded per process (foldhash's
/// `RandomState`): fast, and no fixed set of keys collides on every member.
#[derive(Default)]
pub(crate) struct LatestCache {
    map: HashMap<Vec<u8>, Option<Record>, foldhash::fast::RandomState>,
    bytes: usize,
}

impl std::fmt::Debug for LatestCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LatestCache")
            .field("entries", &self.map.len())
            .field("bytes", &self.bytes)
            .finish()
    }
}

fn cost(key: &[u8], rec: Option<&Record>) -> usize {
    key.len() + rec.map_or(0, |r| r.value.len()) + ENTRY_OVERHEAD
}

impl LatestCache {
    /// `Some(latest)` when cached (`latest` is `None` for a key with no live version).
    pub(crate) fn get(&self, key: &[u8]) -> Option<Option<Record>> {
        self.map.get(key).cloned()
    }

    /// Record that `key`'s latest version is now `rec` (`None` = deleted). `key` must be
    /// the committed state.
    pub(crate) fn set(&mut self, key: &[u8], rec: Option<&Record>) {
        let add = cost(key, rec);
        if add > LATEST_CACHE_BYTES_MAX / 8 {
            self.remove(key);
            return;
        }
        let stored = rec.map(|r| Record {
            value: Bytes::copy_from_slice(&r.value),
            ..r.clone()
        });
        if let Some(old) = self.map.get_mut(key) {
            self.bytes = self
                .bytes
                .saturating_sub(cost(key, old.as_ref()))
                .saturating_add(add);
            *old = stored;
        } else {
            if self.map.len() >= LATEST_CACHE_ENTRIES_MAX {
                self.clear();
            }
            self.bytes = self.bytes.saturating_add(add);
            self.map.insert(key.to_vec(), stored);
        }
        if self.bytes > LATEST_CACHE_BYTES_MAX {
            self.clear();
        }
    }

    fn remove(&mut self, key: &[u8]) {
        if let Some(old) = self.map.remove(key) {
            self.bytes = self.bytes.saturating_sub(cost(key, old.as_ref()));
        }
    }

    /// Forget everything (the engine state was replaced or may differ from the cache).
    pub(crate) fn clear(&mut self) {
        self.map.clear();
        self.bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_types::Revision;

    fn rec(v: &[u8]) -> Record {
        Record {
            create_revision: Revision::new(2),
            mod_revision: Revision::new(3),
            sub: 0,
            version: 2,
            lease: None,
            value: Bytes::copy_from_slice(v),
            tombstone: false,
        }
    }

    #[test]
    fn set_get_and_bounds() {
        let mut c = LatestCache::default();
        assert_eq!(c.get(b"a"), None);
        c.set(b"a", Some(&rec(b"1")));
        assert_eq!(c.get(b"a"), Some(Some(rec(b"1"))));
        c.set(b"a", None);
        assert_eq!(c.get(b"a"), Some(None));
        // an oversized entry is dropped, not cached stale
        let big = vec![0u8; LATEST_CACHE_BYTES_MAX];
        c.set(b"a", Some(&rec(&big)));
        assert_eq!(c.get(b"a"), None);
        for i in 0..=LATEST_CACHE_ENTRIES_MAX {
            c.set(&(i as u64).to_be_bytes(), None);
        }
        assert!(c.map.len() <= LATEST_CACHE_ENTRIES_MAX);
        assert!(c.bytes <= LATEST_CACHE_BYTES_MAX);
    }
}
