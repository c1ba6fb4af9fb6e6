//! Snapshot streams kept in the engine, one chunk per record, so that a member holds the
//! snapshot it built or received on disk rather than in memory, and reads it back one chunk
//! at a time to send or install it.
//!
//! Layout of [`STORE_CF`] (ids and indexes 8 bytes BE):
//!
//! ```text
//! 'c' id index -> chunk `index` of stream `id`
//! 's' id       -> chunk count (8 bytes BE): the stream is complete ("sealed")
//! ```
//!
//! The store knows nothing of what the chunks hold (they are [`crate::snapshot`] exports)
//! nor of what an id means; its caller picks ids so that one id always names the same
//! content (keel uses the index of the last entry the snapshot covers).

use crate::engine::{ColumnFamily, Durability, Engine, WriteBatch};
use crate::error::{Result, StorageError};
use std::sync::Arc;

/// The column family of stored snapshot streams (never part of an export).
pub const STORE_CF: &str = "snapshot_store";

const CHUNK: u8 = b'c';
const SEAL: u8 = b's';
/// Chunks written per engine batch by [`SnapshotStore::store`].
const CHUNKS_PER_BATCH: u64 = 8;

fn chunk_key(id: u64, index: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(17);
    key.push(CHUNK);
    key.extend_from_slice(&id.to_be_bytes());
    key.extend_from_slice(&index.to_be_bytes());
    key
}

fn seal_key(id: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(9);
    key.push(SEAL);
    key.extend_from_slice(&id.to_be_bytes());
    key
}

/// A complete stream: `count` chunks under `id`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoredStream {
    /// The caller's id of the stream.
    pub id: u64,
    /// Its number of chunks.
    pub count: u64,
}

/// Snapshot streams in [`STORE_CF`] of an engine.
///
/// # Examples
/// ```
/// use keel_storage::engine::{Engine, MemEngine};
/// use keel_storage::snapshot_store::{SnapshotStore, STORE_CF};
/// use std::sync::Arc;
/// let engine: Arc<dyn Engine> = Arc::new(MemEngine::new(&["meta", STORE_CF]));
/// let store = SnapshotStore::open(Arc::clone(&engine))?;
/// // Whole, from an iterator of chunks (what a member does with the snapshot it builds)...
/// let built = store.store(7, [Ok(b"one".to_vec()), Ok(b"two".to_vec())])?;
/// // ...or one chunk at a time, sealed once all are there (what a receiving member does).
/// store.put_chunk(9, 0, b"only")?;
/// let received = store.seal(9, 1)?;
/// let back: Vec<Vec<u8>> = store.chunks(built).collect::<Result<_, _>>()?;
/// assert_eq!(back, [b"one".to_vec(), b"two".to_vec()]);
/// store.remove(built.id)?;
/// assert_eq!(store.sealed(7)?, None);
/// assert_eq!(store.sealed(9)?, Some(received));
/// # Ok::<(), keel_storage::StorageError>(())
/// ```
pub struct SnapshotStore {
    engine: Arc<dyn Engine>,
    cf: ColumnFamily,
}

impl std::fmt::Debug for SnapshotStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotStore").finish_non_exhaustive()
    }
}

impl SnapshotStore {
    /// The store of `engine`, which must have [`STORE_CF`] registered.
    ///
    /// # Errors
    /// [`StorageError::UnknownColumnFamily`] without it.
    pub fn open(engine: Arc<dyn Engine>) -> Result<Self> {
        let cf = engine.column_family(STORE_CF)?;
        Ok(SnapshotStore { engine, cf })
    }

    /// Write chunk `index` of stream `id` (not synced; [`SnapshotStore::seal`] syncs).
    ///
    /// # Errors
    /// Storage failure.
    pub fn put_chunk(&self, id: u64, index: u64, chunk: &[u8]) -> Result<()> {
        let mut batch = WriteBatch::default();
        batch.put(self.cf, chunk_key(id, index), chunk);
        self.engine.write(batch, Durability::Buffered)
    }

    /// Mark stream `id` complete with `count` chunks, synced.
    ///
    /// # Errors
    /// [`StorageError::InvalidSnapshot`] when `count` is 0 or its last chunk is missing;
    /// storage failure.
    pub fn seal(&self, id: u64, count: u64) -> Result<StoredStream> {
        let last = count
            .checked_sub(1)
            .ok_or_else(|| invalid(id, "has no chunk"))?;
        if self
            .engine
            .view()?
            .get(self.cf, &chunk_key(id, last))?
            .is_none()
        {
            return Err(invalid(id, &format!("lacks its last chunk ({last})")));
        }
        let mut batch = WriteBatch::default();
        batch.put(self.cf, seal_key(id), count.to_be_bytes());
        self.engine.write(batch, Durability::Synced)?;
        Ok(StoredStream { id, count })
    }

    /// Store a whole stream under `id` (replacing one of the same id), sealed and synced.
    ///
    /// # Errors
    /// The stream's own errors; storage failure. The stream is then not sealed.
    pub fn store(
        &self,
        id: u64,
        chunks: impl IntoIterator<Item = Result<Vec<u8>>>,
    ) -> Result<StoredStream> {
        let mut batch = WriteBatch::default();
        batch.delete(self.cf, seal_key(id));
        let mut count = 0u64;
        for chunk in chunks {
            batch.put(self.cf, chunk_key(id, count), chunk?);
            count += 1;
            if count % CHUNKS_PER_BATCH == 0 {
                self.engine
                    .write(std::mem::take(&mut batch), Durability::Buffered)?;
            }
        }
        if !batch.is_empty() {
            self.engine.write(batch, Durability::Buffered)?;
        }
        self.seal(id, count)
    }

    /// Stream `id` if it is sealed.
    ///
    /// # Errors
    /// Storage failure; a malformed seal record.
    pub fn sealed(&self, id: u64) -> Result<Option<StoredStream>> {
        let Some(value) = self.engine.view()?.get(self.cf, &seal_key(id))? else {
            return Ok(None);
        };
        let count = <[u8; 8]>::try_from(value.as_slice())
            .map(u64::from_be_bytes)
            .map_err(|_| StorageError::corrupted("snapshot store", "bad chunk count"))?;
        Ok(Some(StoredStream { id, count }))
    }

    /// Chunk `index` of stream `id`.
    ///
    /// # Errors
    /// [`StorageError::InvalidSnapshot`] when it is not there (the stream was removed or
    /// replaced meanwhile); storage failure.
    pub fn chunk(&self, id: u64, index: u64) -> Result<Vec<u8>> {
        self.engine
            .view()?
            .get(self.cf, &chunk_key(id, index))?
            .ok_or_else(|| invalid(id, &format!("lacks chunk {index}")))
    }

    /// The chunks of `stream`, read one at a time.
    pub fn chunks(&self, stream: StoredStream) -> impl Iterator<Item = Result<Vec<u8>>> + '_ {
        (0..stream.count).map(move |index| self.chunk(stream.id, index))
    }

    /// Remove stream `id`, complete or not.
    ///
    /// # Errors
    /// Storage failure.
    pub fn remove(&self, id: u64) -> Result<()> {
        let mut batch = WriteBatch::default();
        batch.delete(self.cf, seal_key(id));
        let start = chunk_key(id, 0);
        match id.checked_add(1) {
            Some(next) => batch.delete_range(self.cf, start, chunk_key(next, 0)),
            None => batch.delete_range(self.cf, start, vec![CHUNK + 1]),
        }
        self.engine.write(batch, Durability::Buffered)
    }

    /// Remove every stream, complete or not.
    ///
    /// # Errors
    /// Storage failure.
    pub fn clear(&self) -> Result<()> {
        let mut batch = WriteBatch::default();
        for prefix in [CHUNK, SEAL] {
            batch.delete_range(self.cf, vec![prefix], vec![prefix + 1]);
        }
        self.engine.write(batch, Durability::Buffered)
    }
}

fn invalid(id: u64, what: &str) -> StorageError {
    StorageError::InvalidSnapshot {
        detail: format!("stored snapshot {id} {what}"),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;
    use crate::engine::MemEngine;

    fn store() -> SnapshotStore {
        SnapshotStore::open(Arc::new(MemEngine::new(&["meta", STORE_CF]))).unwrap()
    }

    fn chunks(n: u8) -> Vec<Result<Vec<u8>>> {
        (0..n).map(|i| Ok(vec![i; usize::from(i) + 1])).collect()
    }

    #[test]
    fn a_stored_stream_reads_back_chunk_by_chunk() {
        let s = store();
        let stream = s.store(3, chunks(20)).unwrap();
        assert_eq!(stream, StoredStream { id: 3, count: 20 });
        let back: Vec<Vec<u8>> = s.chunks(stream).collect::<Result<_>>().unwrap();
        let want: Vec<Vec<u8>> = chunks(20).into_iter().map(Result::unwrap).collect();
        assert_eq!(back, want);
        assert_eq!(s.sealed(3).unwrap(), Some(stream));
    }

    #[test]
    fn a_stream_missing_its_last_chunk_or_empty_is_not_sealed() {
        let s = store();
        s.put_chunk(5, 0, b"a").unwrap();
        assert!(matches!(
            s.seal(5, 2),
            Err(StorageError::InvalidSnapshot { .. })
        ));
        assert!(matches!(
            s.seal(5, 0),
            Err(StorageError::InvalidSnapshot { .. })
        ));
        assert_eq!(s.sealed(5).unwrap(), None);
        assert!(s.store(6, Vec::new()).is_err());
    }

    #[test]
    fn a_failing_stream_is_left_unsealed() {
        let s = store();
        let mut items = chunks(3);
        items.push(Err(StorageError::corrupted("test", "boom")));
        assert!(s.store(4, items).is_err());
        assert_eq!(s.sealed(4).unwrap(), None);
    }

    #[test]
    fn clear_removes_every_stream_complete_or_not() {
        let s = store();
        for id in [0, 1, u64::MAX] {
            s.store(id, chunks(3)).unwrap();
        }
        s.put_chunk(7, 0, b"partial").unwrap();
        s.clear().unwrap();
        for gone in [0, 1, u64::MAX] {
            assert_eq!(s.sealed(gone).unwrap(), None);
            assert!(s.chunk(gone, 0).is_err());
        }
        assert!(s.chunk(7, 0).is_err());
    }

    #[test]
    fn remove_takes_one_stream_only() {
        let s = store();
        for id in [4, 5, 6, u64::MAX] {
            s.store(id, chunks(2)).unwrap();
        }
        s.remove(5).unwrap();
        s.remove(u64::MAX).unwrap();
        assert_eq!(s.sealed(5).unwrap(), None);
        assert!(s.chunk(5, 1).is_err());
        assert_eq!(s.sealed(u64::MAX).unwrap(), None);
        for kept in [4, 6] {
            let stream = s.sealed(kept).unwrap().unwrap();
            assert_eq!(s.chunks(stream).count(), 2);
            assert!(s.chunks(stream).all(|c| c.is_ok()));
        }
    }

    #[test]
    fn a_removed_stream_reports_its_missing_chunk() {
        let s = store();
        let stream = s.store(8, chunks(2)).unwrap();
        s.clear().unwrap();
        let err = s.chunks(stream).next().unwrap().unwrap_err();
        assert!(err.to_string().contains("lacks chunk 0"), "{err}");
    }
}
