//! The MVCC store: etcd's revisioned keyspace on an [`Engine`].

use super::cache::LatestCache;
use super::read::{self, Cfs, RangeCollector, Revisions};
use super::types::{
    Committed, DeleteRequest, DeleteResponse, Event, EventKind, PutRequest, PutResponse,
    RangeRequest, RangeResponse, TxnRequest, TxnResponse,
};
use super::write::WriteTxn;
use crate::codec::{self, Record};
use crate::engine::{Durability, Engine, ScanBounds, WriteBatch};
use crate::error::{Result, StorageError};
use crate::limits::{MvccLimits, COMPACTION_BATCH_KEYS};
use crate::schema;
use crate::watch::WatchHub;
use bytes::Bytes;
use keel_types::{KeyRange, Revision};
use parking_lot::{Mutex, RwLock};
use std::ops::ControlFlow;
use std::sync::Arc;

/// State only the writer changes. Guarded by `MvccStore::writer`; lock order: writer, then
/// the watch hub's lock.
#[derive(Debug)]
pub(crate) struct WriterState {
    pub current: Revision,
    pub compacted: Revision,
    pub compact_finished: Revision,
}

/// What readers learn of the writer's commits without reading the engine: the current
/// revision and the bounded cache of latest versions ([`super::cache`]), changed together
/// under one lock after each commit's engine write. Guarded by `MvccStore::published`; lock
/// order: writer, then published.
#[derive(Debug)]
pub(crate) struct Published {
    /// The revision of the last commit published (the engine may already hold the next).
    current: Revision,
    /// Bumped whenever the cache is emptied because the engine's state was replaced or is
    /// unknown: a reader that read the engine before the bump must not fill the cache.
    generation: u64,
    latest: LatestCache,
}

/// etcd's HashKV result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HashKv {
    /// CRC-32 (Castagnoli) of every kept version at or below `revision`.
    pub hash: u32,
    /// The revision hashed.
    pub revision: Revision,
    /// The store's compaction revision.
    pub compact_revision: Revision,
}

/// The revisioned keyspace (see the crate docs and [`crate::schema`]).
///
/// Invariants:
/// 1. `current` is the revision of the last change committed; a new store is at 1.
/// 2. Every version in `kv` is also in `kv_history` with a `kv_revs` entry.
/// 3. `compact_finished <= compacted <= current`; reads below `compacted` are refused.
/// 4. Opening reads three meta keys: nothing proportional to the number of keys.
/// 5. Every key in the latest-version cache ([`super::cache`]) maps to its latest live
///    version at the published revision. The writer publishes each commit's keys and
///    revision together after the engine write; a reader fills in a key it read only when
///    its read was at the published revision (same generation). The cache starts empty at
///    open and is emptied by a failed commit and a snapshot install.
///
/// # Examples
/// ```
/// use keel_storage::{engine::MemEngine, mvcc::{PutRequest, RangeRequest}, MvccStore};
/// use keel_types::{KeyRange, Revision};
/// use std::sync::Arc;
/// let store = MvccStore::open(Arc::new(MemEngine::new(&MvccStore::COLUMN_FAMILIES)))?;
/// assert_eq!(store.current_revision()?, Revision::new(1));
/// store.put(PutRequest::new(&b"k"[..], &b"v1"[..]))?;
/// store.put(PutRequest::new(&b"k"[..], &b"v2"[..]))?;
/// let old = store.range(&RangeRequest {
///     revision: Some(Revision::new(2)),
///     ..RangeRequest::new(KeyRange::key(&b"k"[..]))
/// })?;
/// assert_eq!(old.kvs[0].value.as_ref(), b"v1");
/// assert_eq!(old.revision, Revision::new(3));
/// # Ok::<(), keel_storage::StorageError>(())
/// ```
pub struct MvccStore {
    engine: Arc<dyn Engine>,
    cfs: Cfs,
    limits: MvccLimits,
    durability: Durability,
    writer: Mutex<WriterState>,
    published: RwLock<Published>,
    hub: WatchHub,
}

impl std::fmt::Debug for MvccStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MvccStore")
            .field("writer", &*self.writer.lock())
            .finish_non_exhaustive()
    }
}

impl MvccStore {
    /// The column families to register when opening the engine.
    pub const COLUMN_FAMILIES: [&'static str; 3] = schema::COLUMN_FAMILIES;

    /// Open the store on `engine` with default limits; convenience writes are synced.
    ///
    /// # Errors
    /// Missing column families, an unknown format, an interrupted snapshot install,
    /// corruption, storage failure.
    pub fn open(engine: Arc<dyn Engine>) -> Result<Self> {
        Self::open_with(engine, MvccLimits::default(), Durability::Synced)
    }

    /// Open with explicit limits and the durability of the convenience writes
    /// ([`MvccStore::put`] and friends; [`WriteTxn::commit`] takes its own).
    ///
    /// # Errors
    /// As [`MvccStore::open`]; an install a crash interrupted is finished first (see
    /// [`crate::snapshot::resume_install`]).
    pub fn open_with(
        engine: Arc<dyn Engine>,
        limits: MvccLimits,
        durability: Durability,
    ) -> Result<Self> {
        let cfs = Cfs::resolve(engine.as_ref())?;
        crate::snapshot::resume_install(engine.as_ref())?;
        let state = Self::load_state(engine.as_ref(), cfs)?;
        let mut batch = WriteBatch::default();
        batch.put(cfs.meta, schema::META_FORMAT, vec![schema::FORMAT_VERSION]);
        engine.write(batch, Durability::Synced)?;
        let hub = WatchHub::new(state.current);
        let published = Published {
            current: state.current,
            generation: 0,
            latest: LatestCache::default(),
        };
        Ok(MvccStore {
            engine,
            cfs,
            limits,
            durability,
            writer: Mutex::new(state),
            published: RwLock::new(published),
            hub,
        })
    }

    fn load_state(engine: &dyn Engine, cfs: Cfs) -> Result<WriterState> {
        let view = engine.view()?;
        if view.get(cfs.meta, schema::META_INSTALLING)?.is_some() {
            return Err(StorageError::IncompleteInstall);
        }
        match view.get(cfs.meta, schema::META_FORMAT)? {
            Some(v) if v.as_slice() == [schema::FORMAT_VERSION] => {}
            Some(v) if v.as_slice() == [schema::FORMAT_VERSION_1] => {}
            Some(v) => {
                return Err(StorageError::corrupted(
                    "store format",
                    format!("unknown version {v:?}"),
                ))
            }
            None => {}
        }
        let revs = Revisions::load(view.as_ref(), cfs)?;
        let finished = read::meta_revision(view.as_ref(), cfs, schema::META_COMPACT_FINISHED)?
            .unwrap_or(Revision::new(0));
        Ok(WriterState {
            current: revs.current,
            compacted: revs.compacted,
            compact_finished: finished,
        })
    }

    /// Replace the whole state with a snapshot stream (see [`crate::snapshot`]), which must
    /// hold this store's column families (and may hold other crates' families, registered
    /// on the same engine). Watchers are moved to catch-up: those whose next revision the
    /// snapshot compacted away get `Compacted` on their next poll. With
    /// [`crate::snapshot::STAGING_CF`] registered the install is resumable: a crash during
    /// it is finished from the staged copy at the next open.
    ///
    /// # Errors
    /// [`StorageError::InvalidSnapshot`] (the store then refuses to open until a complete
    /// install), storage failure.
    pub fn install_snapshot(
        &self,
        chunks: impl IntoIterator<Item = Result<Vec<u8>>>,
    ) -> Result<u64> {
        let mut writer = self.writer.lock();
        // the engine state is about to be replaced, whether or not the install completes
        self.forget_published();
        let entries = crate::snapshot::install_staged(self.engine.as_ref(), chunks)?;
        let mut batch = WriteBatch::default();
        batch.put(
            self.cfs.meta,
            schema::META_FORMAT,
            vec![schema::FORMAT_VERSION],
        );
        self.engine.write(batch, Durability::Synced)?;
        *writer = Self::load_state(self.engine.as_ref(), self.cfs)?;
        {
            let mut published = self.published.write();
            // A reader that read a half-installed engine may have filled the cache while
            // the revisions matched: empty it again, and stop later fills from such reads.
            published.latest.clear();
            published.generation += 1;
            published.current = writer.current;
        }
        self.hub.reset(writer.current);
        Ok(entries)
    }

    /// Empty the latest-version cache: the engine's state is about to be replaced, or is
    /// unknown after a failed write.
    pub(crate) fn forget_published(&self) {
        let mut published = self.published.write();
        published.latest.clear();
        published.generation += 1;
    }

    /// Publish a commit: `changes` (each changed key and its new latest version, `None` =
    /// deleted, in change order) and the new current revision, after the engine holds them.
    pub(crate) fn publish(&self, current: Revision, changes: Vec<(Bytes, Option<Record>)>) {
        let mut published = self.published.write();
        // in change order, so a key changed twice ends with its last version
        for (key, live) in changes {
            published.latest.set(&key, live.as_ref());
        }
        published.current = current;
    }

    /// The committed latest version of `key` if the cache holds it (`Some(None)`: no live
    /// version). Only meaningful to the writer, whose lock keeps the committed state still.
    pub(crate) fn cached_latest(&self, key: &[u8]) -> Option<Option<Record>> {
        self.published.read().latest.get(key)
    }

    /// A single-key read at the latest revision answered from the cache, if it holds the
    /// key: no engine read view, no meta reads, no seek.
    fn range_cached(&self, key: &[u8], req: &RangeRequest) -> Option<RangeResponse> {
        let (current, latest) = {
            let published = self.published.read();
            if req.revision.is_some_and(|r| r != published.current) {
                return None;
            }
            (published.current, published.latest.get(key)?)
        };
        let mut collector = RangeCollector::new(req);
        if let Some(rec) = latest {
            collector.push(key, &rec);
        }
        Some(collector.finish(current))
    }

    /// Fill the cache with `key`'s latest version as read at `read_at` in `generation`, if
    /// nothing was published since (then it is still the latest).
    fn remember(&self, key: &[u8], latest: Option<&Record>, read_at: Revision, generation: u64) {
        let mut published = self.published.write();
        if published.current == read_at && published.generation == generation {
            published.latest.set(key, latest);
        }
    }

    pub(crate) fn cfs(&self) -> Cfs {
        self.cfs
    }

    /// The limits the store was opened with.
    pub fn limits(&self) -> &MvccLimits {
        &self.limits
    }

    /// The engine underneath (shared with the log and other crates' records).
    pub fn engine(&self) -> &Arc<dyn Engine> {
        &self.engine
    }

    /// The watch hub fed by every commit.
    pub fn hub(&self) -> &WatchHub {
        &self.hub
    }

    /// The current revision.
    ///
    /// # Errors
    /// Storage failure.
    pub fn current_revision(&self) -> Result<Revision> {
        let view = self.engine.view()?;
        Ok(Revisions::load(view.as_ref(), self.cfs)?.current)
    }

    /// The compaction revision (reads below it are refused).
    ///
    /// # Errors
    /// Storage failure.
    pub fn compacted_revision(&self) -> Result<Revision> {
        let view = self.engine.view()?;
        Ok(Revisions::load(view.as_ref(), self.cfs)?.compacted)
    }

    /// The caller's applied marker of the last commit that set one.
    ///
    /// # Errors
    /// Storage failure.
    pub fn applied(&self) -> Result<Option<Vec<u8>>> {
        self.engine.view()?.get(self.cfs.meta, schema::META_APPLIED)
    }

    /// Read a range at the latest or an older revision, at one consistent point.
    ///
    /// # Errors
    /// Empty or oversized key, compacted or future revision, storage failure.
    pub fn range(&self, req: &RangeRequest) -> Result<RangeResponse> {
        super::check::check_range(&req.range, &self.limits)?;
        // a poisoned engine fails every call, cached answers included
        self.engine.check_healthy()?;
        let single = match &req.range {
            KeyRange::Key(key) => Some(key),
            _ => None,
        };
        if let Some(resp) = single.and_then(|key| self.range_cached(key, req)) {
            return Ok(resp);
        }
        let generation = self.published.read().generation;
        let view = self.engine.view()?;
        let revs = Revisions::load(view.as_ref(), self.cfs)?;
        let at = match req.revision {
            None => None,
            Some(r) => {
                revs.check_readable(r)?;
                (r != revs.current).then_some(r)
            }
        };
        let mut collector = RangeCollector::new(req);
        let mut found = None;
        read::scan_live(view.as_ref(), self.cfs, &req.range, at, &mut |k, r| {
            collector.push(k, &r);
            if single.is_some() {
                found = Some(r);
            }
            Ok(ControlFlow::Continue(()))
        })?;
        if let (Some(key), None) = (single, at) {
            self.remember(key, found.as_ref(), revs.current, generation);
        }
        Ok(collector.finish(revs.current))
    }

    /// Start a write transaction (waits for the previous one to finish).
    ///
    /// # Errors
    /// Storage failure.
    pub fn begin(&self) -> Result<WriteTxn<'_>> {
        let writer = self.writer.lock();
        self.engine.check_healthy()?;
        Ok(WriteTxn::new(self, writer))
    }

    /// Put one key in its own revision.
    ///
    /// # Errors
    /// As [`WriteTxn::put`] and [`WriteTxn::commit`].
    pub fn put(&self, req: PutRequest) -> Result<PutResponse> {
        let mut txn = self.begin()?;
        let resp = txn.put(req)?;
        txn.commit(self.durability)?;
        Ok(resp)
    }

    /// Delete a range in its own revision.
    ///
    /// # Errors
    /// As [`WriteTxn::delete_range`] and [`WriteTxn::commit`].
    pub fn delete_range(&self, req: &DeleteRequest) -> Result<DeleteResponse> {
        let mut txn = self.begin()?;
        let resp = txn.delete_range(req)?;
        txn.commit(self.durability)?;
        Ok(resp)
    }

    /// Run a txn in its own revision.
    ///
    /// # Errors
    /// As [`WriteTxn::txn`] and [`WriteTxn::commit`].
    pub fn txn(&self, req: &TxnRequest) -> Result<TxnResponse> {
        let mut txn = self.begin()?;
        let resp = txn.txn(req)?;
        txn.commit(self.durability)?;
        Ok(resp)
    }

    /// Compact at `rev`; with `physical`, return only when every superseded version is gone.
    ///
    /// # Errors
    /// As [`WriteTxn::compact`]; storage failure.
    pub fn compact(&self, rev: Revision, physical: bool) -> Result<Committed> {
        let mut txn = self.begin()?;
        txn.compact(rev)?;
        let committed = txn.commit(self.durability)?;
        if physical {
            while !self.compact_step(COMPACTION_BATCH_KEYS)? {}
        }
        Ok(committed)
    }

    /// Remove up to `keys_max` superseded versions of the scheduled compaction; returns true
    /// when compaction has caught up. Holds the writer only for one batch, so a caller that
    /// steps in the background lets writes interleave with a long compaction (keel's node
    /// steps to completion inside the apply of the compaction entry). Restart-safe: progress
    /// is persisted per batch.
    ///
    /// # Errors
    /// Storage failure.
    pub fn compact_step(&self, keys_max: usize) -> Result<bool> {
        let mut writer = self.writer.lock();
        let target = writer.compacted;
        if writer.compact_finished >= target {
            return Ok(true);
        }
        let view = self.engine.view()?;
        let lower = codec::revs_key(writer.compact_finished.next());
        let upper = codec::revs_key(target.next());
        // whole revisions: (revs entry key, the keys it lists)
        let mut entries: Vec<(Vec<u8>, Vec<Vec<u8>>)> = Vec::new();
        let mut keys = 0usize;
        let mut last_rev = writer.compact_finished;
        view.scan(
            self.cfs.revs,
            ScanBounds::forward(&lower, Some(&upper)),
            &mut |k, v| {
                let (rev, changes) = codec::parse_revs_entry(k, v)?;
                if keys >= keys_max && rev != last_rev {
                    return Ok(ControlFlow::Break(()));
                }
                last_rev = rev;
                keys += changes.len();
                let listed = changes.into_iter().map(|(_, key)| key.to_vec()).collect();
                entries.push((k.to_vec(), listed));
                Ok(ControlFlow::Continue(()))
            },
        )?;
        let done = keys < keys_max || last_rev >= target;
        let finished = if done { target } else { last_rev };
        let mut batch = WriteBatch::default();
        for (revs_key, user_keys) in &entries {
            batch.delete(self.cfs.revs, revs_key);
            for user_key in user_keys {
                self.drop_superseded(view.as_ref(), &mut batch, user_key, target)?;
            }
        }
        batch.put(
            self.cfs.meta,
            schema::META_COMPACT_FINISHED,
            finished.get().to_be_bytes(),
        );
        drop(view);
        self.engine.write(batch, Durability::Buffered)?;
        writer.compact_finished = finished;
        Ok(done)
    }

    /// Delete every version of `key` older than its newest version at or below `target`,
    /// and that newest version too when it is a deletion.
    fn drop_superseded(
        &self,
        view: &dyn crate::engine::ReadView,
        batch: &mut WriteBatch,
        key: &[u8],
        target: Revision,
    ) -> Result<()> {
        let lower = codec::history_key(key, target);
        let upper = codec::history_key_end(key);
        let mut first = true;
        view.scan(
            self.cfs.history,
            ScanBounds::forward(&lower, Some(&upper)),
            &mut |k, v| {
                let keep = first && !Record::decode(v)?.tombstone;
                first = false;
                if !keep {
                    batch.delete(self.cfs.history, k);
                }
                Ok(ControlFlow::Continue(()))
            },
        )
    }

    /// etcd's HashKV: a hash of every version kept at or below `rev` (`None` = current),
    /// independent of how far physical compaction has progressed, so members that applied
    /// the same entries agree.
    ///
    /// # Errors
    /// Compacted or future revision, storage failure.
    pub fn hash_kv(&self, rev: Option<Revision>) -> Result<HashKv> {
        let view = self.engine.view()?;
        let revs = Revisions::load(view.as_ref(), self.cfs)?;
        let at = rev.unwrap_or(revs.current);
        revs.check_readable(at)?;
        let mut crc = 0u32;
        let mut current_key: Option<Vec<u8>> = None;
        let mut kept_old = false;
        view.scan(
            self.cfs.history,
            ScanBounds::forward(&[], None),
            &mut |k, v| {
                let (key, main) = codec::parse_history_key(k)?;
                if main > at {
                    return Ok(ControlFlow::Continue(()));
                }
                if current_key.as_deref() != Some(key.as_slice()) {
                    current_key = Some(key);
                    kept_old = false;
                }
                if main <= revs.compacted {
                    // Only the newest version at or below the compaction survives, and only if
                    // it is not a deletion.
                    if kept_old {
                        return Ok(ControlFlow::Continue(()));
                    }
                    kept_old = true;
                    if Record::decode(v)?.tombstone {
                        return Ok(ControlFlow::Continue(()));
                    }
                }
                crc = crc32c::crc32c_append(crc, k);
                crc = crc32c::crc32c_append(crc, v);
                Ok(ControlFlow::Continue(()))
            },
        )?;
        Ok(HashKv {
            hash: crc,
            revision: at,
            compact_revision: revs.compacted,
        })
    }

    /// Every change to `range` with revision in `[from, to]`, in revision order, stopping
    /// after `events_max` events at a revision boundary (a revision is never split).
    /// Returns the events and the last revision fully covered.
    ///
    /// # Errors
    /// Compacted `from`, storage failure.
    pub fn history(
        &self,
        range: &KeyRange,
        from: Revision,
        to: Revision,
        prev_kv: bool,
        events_max: usize,
    ) -> Result<(Vec<Event>, Revision)> {
        let view = self.engine.view()?;
        let revs = Revisions::load(view.as_ref(), self.cfs)?;
        if from < revs.compacted {
            return Err(StorageError::Compacted {
                requested: from,
                compacted: revs.compacted,
            });
        }
        let to = to.min(revs.current);
        let lower = codec::revs_key(from);
        let upper = codec::revs_key(to.next());
        let mut events = Vec::new();
        let mut covered = from.prev();
        let mut pending_rev = None;
        let mut broke = false;
        view.scan(
            self.cfs.revs,
            ScanBounds::forward(&lower, Some(&upper)),
            &mut |k, v| {
                let (rev, changes) = codec::parse_revs_entry(k, v)?;
                if pending_rev != Some(rev) {
                    if let Some(done) = pending_rev {
                        if events.len() >= events_max {
                            covered = done;
                            broke = true;
                            return Ok(ControlFlow::Break(()));
                        }
                    }
                    pending_rev = Some(rev);
                }
                for (sub, user_key) in changes {
                    if range.contains(user_key) {
                        events.push(self.event_at(view.as_ref(), user_key, rev, sub, prev_kv)?);
                    }
                }
                Ok(ControlFlow::Continue(()))
            },
        )?;
        if !broke {
            covered = to.max(covered);
        }
        Ok((events, covered))
    }

    /// The event of `key`'s change at `rev` (sub position `sub`), read from `kv_history`.
    fn event_at(
        &self,
        view: &dyn crate::engine::ReadView,
        user_key: &[u8],
        rev: Revision,
        sub: u32,
        prev_kv: bool,
    ) -> Result<Event> {
        let rec = read::version_at(view, self.cfs, user_key, rev)?
            .filter(|r| r.mod_revision == rev)
            .ok_or_else(|| StorageError::corrupted("history", "missing version"))?;
        let prev = if prev_kv {
            read::version_at(view, self.cfs, user_key, rev.prev())?
                .filter(|r| !r.tombstone)
                .map(|r| read::to_kv(user_key, &r))
        } else {
            None
        };
        Ok(Event {
            kind: if rec.tombstone {
                EventKind::Delete
            } else {
                EventKind::Put
            },
            kv: read::to_kv(user_key, &rec),
            prev_kv: prev,
            sub,
        })
    }
}
