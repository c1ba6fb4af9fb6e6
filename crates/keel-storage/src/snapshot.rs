//! Snapshot export and install: the whole state of chosen column families as a stream of
//! bounded, checksummed chunks.
//!
//! Chunk format (every chunk):
//!
//! ```text
//! +---------+------+-----------------+-------------------+
//! | ver = 1 | kind | payload         | crc32c (4 BE) of  |
//! |         |      |                 | ver, kind, payload|
//! +---------+------+-----------------+-------------------+
//! kind 0 header : count u16 BE, then per column family: name len u16 BE, name
//! kind 1 data   : entries: cf index u16 BE, key len u32 BE, key, value len u32 BE, value
//! kind 2 trailer: total entries u64 BE
//! ```
//!
//! Export reads one point-in-time view on a helper thread that feeds a bounded channel (a
//! RocksDB snapshot borrows the database, so the thread owns both); the consumer pulls
//! chunks at its own pace. Install refuses a malformed, reordered or truncated stream with
//! [`StorageError::InvalidSnapshot`]; because it replaces state while reading, it marks the
//! store "installing" first, and a store left in that state refuses to open
//! ([`StorageError::IncompleteInstall`]) until a full install succeeds. Use [`verify`] to
//! check a stream before touching any store.
//!
//! Resumable installs: when the engine has [`STAGING_CF`] registered, [`install_staged`]
//! first copies the whole stream into it (synced), then installs from that copy; a store
//! that a crash left "installing" finishes the install from the staged copy when it opens
//! ([`resume_install`]), so a crash at any point of an install leaves either the old state or
//! the new one, never a store that refuses to open. The price is writing the snapshot twice
//! (etcd likewise writes a received snapshot to a file before it swaps it in).

use crate::engine::{ColumnFamily, Durability, Engine, ScanBounds, WriteBatch};
use crate::error::{Result, StorageError};
use crate::schema;
use crossbeam::channel;
use std::ops::ControlFlow;
use std::sync::Arc;

const CHUNK_VERSION: u8 = 1;
const KIND_HEADER: u8 = 0;
const KIND_DATA: u8 = 1;
const KIND_TRAILER: u8 = 2;
/// Chunks buffered between the export thread and its consumer.
const EXPORT_BUFFER_CHUNKS: usize = 4;

fn invalid(detail: impl Into<String>) -> StorageError {
    StorageError::InvalidSnapshot {
        detail: detail.into(),
    }
}

fn seal(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 6);
    out.push(CHUNK_VERSION);
    out.push(kind);
    out.extend_from_slice(payload);
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_be_bytes());
    out
}

fn open_chunk(chunk: &[u8]) -> Result<(u8, &[u8])> {
    if chunk.len() < 6 {
        return Err(invalid("chunk too short"));
    }
    let (body, crc) = chunk.split_at(chunk.len() - 4);
    let want = u32::from_be_bytes([crc[0], crc[1], crc[2], crc[3]]);
    if crc32c::crc32c(body) != want {
        return Err(invalid("chunk checksum mismatch"));
    }
    if body[0] != CHUNK_VERSION {
        return Err(invalid(format!("unknown chunk version {}", body[0])));
    }
    Ok((body[1], &body[2..]))
}

/// A snapshot being exported: an iterator of chunks.
pub struct Export {
    rx: channel::Receiver<Result<Vec<u8>>>,
}

impl std::fmt::Debug for Export {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Export").finish_non_exhaustive()
    }
}

impl Iterator for Export {
    type Item = Result<Vec<u8>>;
    fn next(&mut self) -> Option<Self::Item> {
        self.rx.recv().ok()
    }
}

/// Export `column_families` of `engine` at one point in time, in chunks of about
/// `chunk_bytes_max` bytes (an entry larger than that gets a chunk of its own).
///
/// The point in time is taken before the first chunk (the header) is delivered: a caller
/// that keeps writes out while the export starts (to match the export with other state)
/// can let them in again once it has the first chunk.
///
/// # Examples
/// ```
/// use keel_storage::{engine::{Durability, Engine, MemEngine, WriteBatch}, snapshot};
/// use std::sync::Arc;
/// let src: Arc<dyn Engine> = Arc::new(MemEngine::new(&["meta", "a"]));
/// let a = src.column_family("a")?;
/// let mut b = WriteBatch::default();
/// b.put(a, b"k", b"v");
/// src.write(b, Durability::Synced)?;
/// let chunks: Vec<Vec<u8>> = snapshot::export(&src, &["a"], 1024)?.collect::<Result<_, _>>()?;
/// snapshot::verify(chunks.iter().cloned().map(Ok))?;
/// let dst = MemEngine::new(&["meta", "a"]);
/// snapshot::install(&dst, chunks.into_iter().map(Ok))?;
/// assert_eq!(dst.view()?.get(a, b"k")?, Some(b"v".to_vec()));
/// # Ok::<(), keel_storage::StorageError>(())
/// ```
///
/// # Errors
/// Unknown column family, poisoned engine; later failures arrive as items.
pub fn export(
    engine: &Arc<dyn Engine>,
    column_families: &[&str],
    chunk_bytes_max: usize,
) -> Result<Export> {
    engine.check_healthy()?;
    let cfs: Vec<(String, ColumnFamily)> = column_families
        .iter()
        .map(|n| Ok(((*n).to_string(), engine.column_family(n)?)))
        .collect::<Result<_>>()?;
    let (tx, rx) = channel::bounded(EXPORT_BUFFER_CHUNKS);
    let engine = Arc::clone(engine);
    let chunk_bytes_max = chunk_bytes_max.max(64);
    std::thread::Builder::new()
        .name("keel-snapshot-export".into())
        .spawn(move || {
            let result = export_into(engine.as_ref(), &cfs, chunk_bytes_max, &tx);
            if let Err(e) = result {
                let _ = tx.send(Err(e));
            }
        })
        .map_err(|e| StorageError::Io {
            op: "spawn export thread",
            message: e.to_string(),
        })?;
    Ok(Export { rx })
}

/// The consumer went away: stop quietly.
struct Gone;

fn export_into(
    engine: &dyn Engine,
    cfs: &[(String, ColumnFamily)],
    chunk_bytes_max: usize,
    tx: &channel::Sender<Result<Vec<u8>>>,
) -> Result<()> {
    let send = |c: Vec<u8>| tx.send(Ok(c)).map_err(|_| Gone);
    let mut header = Vec::new();
    header.extend_from_slice(&(cfs.len() as u16).to_be_bytes());
    for (name, _) in cfs {
        header.extend_from_slice(&(name.len() as u16).to_be_bytes());
        header.extend_from_slice(name.as_bytes());
    }
    // The view first: the header's arrival tells the consumer the state is pinned.
    let view = engine.view()?;
    if send(seal(KIND_HEADER, &header)).is_err() {
        return Ok(());
    }
    let mut payload = Vec::with_capacity(chunk_bytes_max);
    let mut total = 0u64;
    let mut gone = false;
    for (i, (_, cf)) in cfs.iter().enumerate() {
        view.scan(*cf, ScanBounds::forward(&[], None), &mut |k, v| {
            payload.extend_from_slice(&(i as u16).to_be_bytes());
            payload.extend_from_slice(&(k.len() as u32).to_be_bytes());
            payload.extend_from_slice(k);
            payload.extend_from_slice(&(v.len() as u32).to_be_bytes());
            payload.extend_from_slice(v);
            total += 1;
            if payload.len() >= chunk_bytes_max {
                if send(seal(KIND_DATA, &payload)).is_err() {
                    gone = true;
                    return Ok(ControlFlow::Break(()));
                }
                payload.clear();
            }
            Ok(ControlFlow::Continue(()))
        })?;
        if gone {
            return Ok(());
        }
    }
    if !payload.is_empty() && send(seal(KIND_DATA, &payload)).is_err() {
        return Ok(());
    }
    let _ = send(seal(KIND_TRAILER, &total.to_be_bytes()));
    Ok(())
}

fn take<'a>(buf: &mut &'a [u8], n: usize) -> Result<&'a [u8]> {
    if buf.len() < n {
        return Err(invalid("truncated entry"));
    }
    let (head, rest) = buf.split_at(n);
    *buf = rest;
    Ok(head)
}

fn take_u16(buf: &mut &[u8]) -> Result<u16> {
    let b = take(buf, 2)?;
    Ok(u16::from_be_bytes([b[0], b[1]]))
}

fn take_u32(buf: &mut &[u8]) -> Result<usize> {
    let b = take(buf, 4)?;
    Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
}

/// Receives (column family index, key, value) of each entry.
type EntrySink<'s> = dyn FnMut(usize, &[u8], &[u8]) -> Result<()> + 's;

/// Parses a chunk stream; calls `on_header` once and `on_entry` per entry.
struct Reader {
    names: Option<Vec<String>>,
    entries: u64,
    done: bool,
}

impl Reader {
    fn new() -> Self {
        Reader {
            names: None,
            entries: 0,
            done: false,
        }
    }

    fn feed(&mut self, chunk: &[u8], on_entry: &mut EntrySink<'_>) -> Result<()> {
        if self.done {
            return Err(invalid("data after the trailer"));
        }
        let (kind, mut payload) = open_chunk(chunk)?;
        match (kind, &self.names) {
            (KIND_HEADER, None) => {
                let n = take_u16(&mut payload)?;
                let mut names = Vec::with_capacity(usize::from(n));
                for _ in 0..n {
                    let len = usize::from(take_u16(&mut payload)?);
                    let name = std::str::from_utf8(take(&mut payload, len)?)
                        .map_err(|_| invalid("column family name is not utf-8"))?;
                    names.push(name.to_string());
                }
                self.names = Some(names);
            }
            (KIND_DATA, Some(names)) => {
                let count = names.len();
                while !payload.is_empty() {
                    let cf = usize::from(take_u16(&mut payload)?);
                    if cf >= count {
                        return Err(invalid("entry of an unknown column family"));
                    }
                    let klen = take_u32(&mut payload)?;
                    let key = take(&mut payload, klen)?;
                    let vlen = take_u32(&mut payload)?;
                    let value = take(&mut payload, vlen)?;
                    on_entry(cf, key, value)?;
                    self.entries += 1;
                }
            }
            (KIND_TRAILER, Some(_)) => {
                let b = take(&mut payload, 8)?;
                let total = crate::codec::be_u64(b)?;
                if total != self.entries {
                    return Err(invalid(format!(
                        "trailer counts {total} entries, stream held {}",
                        self.entries
                    )));
                }
                self.done = true;
            }
            _ => return Err(invalid(format!("unexpected chunk kind {kind}"))),
        }
        Ok(())
    }

    fn finish(&self) -> Result<()> {
        if self.done {
            Ok(())
        } else {
            Err(invalid("stream ended before its trailer (truncated)"))
        }
    }
}

/// Check a whole chunk stream (checksums, structure, trailer) without writing anything.
/// Returns the number of entries.
///
/// # Errors
/// [`StorageError::InvalidSnapshot`]; errors of the stream itself.
pub fn verify(chunks: impl IntoIterator<Item = Result<Vec<u8>>>) -> Result<u64> {
    let mut reader = Reader::new();
    for chunk in chunks {
        reader.feed(&chunk?, &mut |_, _, _| Ok(()))?;
    }
    reader.finish()?;
    Ok(reader.entries)
}

/// Replace the content of the stream's column families in `engine` with the stream's.
/// The engine must have every named family and [`schema::META_CF`] registered.
///
/// # Errors
/// [`StorageError::InvalidSnapshot`] (the store stays marked incomplete), storage failure.
pub fn install(
    engine: &dyn Engine,
    chunks: impl IntoIterator<Item = Result<Vec<u8>>>,
) -> Result<u64> {
    let meta = engine.column_family(schema::META_CF)?;
    let mut mark = WriteBatch::default();
    mark.put(meta, schema::META_INSTALLING, vec![1]);
    engine.write(mark, Durability::Synced)?;
    let mut reader = Reader::new();
    let mut handles: Vec<ColumnFamily> = Vec::new();
    let mut batch = WriteBatch::default();
    for chunk in chunks {
        let chunk = chunk?;
        let had_header = reader.names.is_some();
        reader.feed(&chunk, &mut |cf, k, v| {
            if let Some(h) = handles.get(cf) {
                batch.put(*h, k, v);
            }
            Ok(())
        })?;
        if !had_header {
            if let Some(names) = &reader.names {
                handles = names
                    .iter()
                    .map(|n| engine.column_family(n))
                    .collect::<Result<_>>()?;
                clear(engine, &handles)?;
            }
        }
        if !batch.is_empty() {
            engine.write(std::mem::take(&mut batch), Durability::Buffered)?;
        }
    }
    reader.finish()?;
    let mut done = WriteBatch::default();
    done.delete(meta, schema::META_INSTALLING);
    engine.write(done, Durability::Synced)?;
    Ok(reader.entries)
}

/// Column family holding a staged snapshot stream (see the module docs). Register it with
/// the engine to make installs resumable; it is never part of an export.
pub const STAGING_CF: &str = "snapshot_staging";
/// Staging key present (value: chunk count, 8 bytes BE) once every chunk is staged.
const STAGED_COMPLETE: &[u8] = b"complete";
/// Staging key prefix of chunk `i` (then `i` as 8 bytes BE).
const STAGED_CHUNK: u8 = b'c';

fn staged_chunk_key(index: u64) -> Vec<u8> {
    let mut key = vec![STAGED_CHUNK];
    key.extend_from_slice(&index.to_be_bytes());
    key
}

/// Copy `chunks` into [`STAGING_CF`] (replacing what was staged), synced at the end, then
/// install from the copy and drop it. Without [`STAGING_CF`] registered, as [`install`].
///
/// # Errors
/// As [`install`]; a stream error while staging leaves the store untouched.
pub fn install_staged(
    engine: &dyn Engine,
    chunks: impl IntoIterator<Item = Result<Vec<u8>>>,
) -> Result<u64> {
    let Ok(staging) = engine.column_family(STAGING_CF) else {
        return install(engine, chunks);
    };
    let mut batch = WriteBatch::default();
    batch.delete_range(staging, Vec::new(), vec![u8::MAX]);
    let mut count = 0u64;
    for chunk in chunks {
        batch.put(staging, staged_chunk_key(count), chunk?);
        count += 1;
        if count % 16 == 0 {
            engine.write(std::mem::take(&mut batch), Durability::Buffered)?;
        }
    }
    batch.put(staging, STAGED_COMPLETE, count.to_be_bytes());
    engine.write(batch, Durability::Synced)?;
    let installed = install(engine, staged_chunks(engine, staging, count));
    if let Err(e) = &installed {
        if !matches!(e, StorageError::InvalidSnapshot { .. }) {
            return installed; // an i/o failure: the staged copy finishes it at the next open
        }
    }
    // done, or a malformed stream that must not be retried at open
    let mut done = WriteBatch::default();
    done.delete_range(staging, Vec::new(), vec![u8::MAX]);
    engine.write(done, Durability::Synced)?;
    installed
}

/// The number of chunks of the completely staged stream (0 when staging is incomplete).
fn staged_count(engine: &dyn Engine, staging: ColumnFamily) -> Result<u64> {
    let Some(count) = engine.view()?.get(staging, STAGED_COMPLETE)? else {
        return Ok(0);
    };
    <[u8; 8]>::try_from(count.as_slice())
        .map(u64::from_be_bytes)
        .map_err(|_| StorageError::corrupted("staged snapshot", "bad chunk count"))
}

/// The `count` staged chunks, read one at a time (never the whole stream in memory).
fn staged_chunks(
    engine: &dyn Engine,
    staging: ColumnFamily,
    count: u64,
) -> impl Iterator<Item = Result<Vec<u8>>> + '_ {
    (0..count).map(move |index| {
        engine
            .view()?
            .get(staging, &staged_chunk_key(index))?
            .ok_or_else(|| StorageError::corrupted("staged snapshot", "missing chunk"))
    })
}

/// Finish an install a crash interrupted, from the staged copy: `Ok(true)` if one was
/// finished, `Ok(false)` if no install was interrupted.
///
/// # Errors
/// [`StorageError::IncompleteInstall`] when an install was interrupted and nothing complete
/// is staged (the engine lacks [`STAGING_CF`], or the install was not a staged one);
/// storage failure.
pub fn resume_install(engine: &dyn Engine) -> Result<bool> {
    let meta = engine.column_family(schema::META_CF)?;
    if engine.view()?.get(meta, schema::META_INSTALLING)?.is_none() {
        return Ok(false);
    }
    let Ok(staging) = engine.column_family(STAGING_CF) else {
        return Err(StorageError::IncompleteInstall);
    };
    let count = staged_count(engine, staging)?;
    if count == 0 {
        return Err(StorageError::IncompleteInstall);
    }
    install(engine, staged_chunks(engine, staging, count))?;
    let mut done = WriteBatch::default();
    done.delete_range(staging, Vec::new(), vec![u8::MAX]);
    engine.write(done, Durability::Buffered)?;
    Ok(true)
}

/// Remove every key of each family (one range deletion up to just past its last key),
/// keeping the install marker.
fn clear(engine: &dyn Engine, cfs: &[ColumnFamily]) -> Result<()> {
    let meta = engine.column_family(schema::META_CF)?;
    let view = engine.view()?;
    let mut batch = WriteBatch::default();
    for cf in cfs {
        let mut last = None;
        view.scan(*cf, ScanBounds::backward(&[], None), &mut |k, _| {
            last = Some(k.to_vec());
            Ok(ControlFlow::Break(()))
        })?;
        if let Some(mut end) = last {
            end.push(0);
            batch.delete_range(*cf, Vec::new(), end);
        }
    }
    if cfs.contains(&meta) {
        batch.put(meta, schema::META_INSTALLING, vec![1]);
    }
    drop(view);
    engine.write(batch, Durability::Buffered)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::MemEngine;

    fn sample() -> Arc<dyn Engine> {
        let e: Arc<dyn Engine> = Arc::new(MemEngine::new(&["meta", "a", "b"]));
        let (a, b) = (e.column_family("a").unwrap(), e.column_family("b").unwrap());
        let mut batch = WriteBatch::default();
        for i in 0..500u32 {
            batch.put(a, i.to_be_bytes(), vec![7; 40]);
            batch.put(b, i.to_le_bytes(), vec![]);
        }
        e.write(batch, Durability::Synced).unwrap();
        e
    }

    fn chunks(e: &Arc<dyn Engine>) -> Vec<Vec<u8>> {
        export(e, &["a", "b"], 1000)
            .unwrap()
            .collect::<Result<Vec<_>>>()
            .unwrap()
    }

    #[test]
    fn round_trip_replaces_content() {
        let src = sample();
        let c = chunks(&src);
        assert!(c.len() > 10, "bounded chunks");
        assert_eq!(verify(c.iter().cloned().map(Ok)).unwrap(), 1000);
        let dst = MemEngine::new(&["meta", "a", "b"]);
        let a = dst.column_family("a").unwrap();
        let mut stale = WriteBatch::default();
        stale.put(a, b"\xff\xff\xff\xff\xff stale", b"x");
        dst.write(stale, Durability::Synced).unwrap();
        assert_eq!(install(&dst, c.into_iter().map(Ok)).unwrap(), 1000);
        let view = dst.view().unwrap();
        assert_eq!(view.get(a, b"\xff\xff\xff\xff\xff stale").unwrap(), None);
        assert_eq!(view.get(a, &7u32.to_be_bytes()).unwrap(), Some(vec![7; 40]));
        let meta = dst.column_family("meta").unwrap();
        assert_eq!(view.get(meta, schema::META_INSTALLING).unwrap(), None);
    }

    #[test]
    fn truncated_or_corrupt_streams_are_refused() {
        let src = sample();
        let c = chunks(&src);
        let truncated: Vec<_> = c[..c.len() - 1].to_vec();
        assert!(matches!(
            verify(truncated.clone().into_iter().map(Ok)),
            Err(StorageError::InvalidSnapshot { .. })
        ));
        let mut corrupt = c.clone();
        corrupt[3][10] ^= 1;
        assert!(matches!(
            verify(corrupt.into_iter().map(Ok)),
            Err(StorageError::InvalidSnapshot { .. })
        ));
        let dst = MemEngine::new(&["meta", "a", "b"]);
        assert!(install(&dst, truncated.into_iter().map(Ok)).is_err());
        let meta = dst.column_family("meta").unwrap();
        assert!(dst
            .view()
            .unwrap()
            .get(meta, schema::META_INSTALLING)
            .unwrap()
            .is_some());
    }
}
