//! The write transaction: every change of one revision (or of several, sealed one after
//! the other), plus the caller's records and applied marker, committed as one engine batch.

use super::check;
use super::read::{self, Overlay, RangeCollector};
use super::store::{MvccStore, WriterState};
use super::types::{
    Committed, Compare, CompareOp, CompareTarget, DeleteRequest, DeleteResponse, Event, EventKind,
    PutRequest, PutResponse, RangeRequest, RangeResponse, RequestOp, ResponseOp, TxnRequest,
    TxnResponse,
};
use crate::codec::{self, Record};
use crate::engine::{Durability, ReadView, WriteBatch};
use crate::error::{Result, StorageError};
use crate::schema;
use bytes::Bytes;
use keel_types::{KeyRange, Revision};
use parking_lot::MutexGuard;
use std::cell::OnceCell;
use std::cmp::Ordering;
use std::ops::ControlFlow;

/// Upper bound of an encoded record's bytes besides its value (header, lease).
const RECORD_BYTES_MAX: usize = 40;

/// One change of the transaction.
#[derive(Debug)]
struct Change {
    key: Bytes,
    record: Record,
    prev: Option<Record>,
}

/// Every change of one revision, applied atomically by [`WriteTxn::commit`]; or of several
/// consecutive revisions, each ended by [`WriteTxn::seal_revision`].
///
/// Holds the store's writer lock: one write transaction at a time. Reads inside it see its
/// own changes. Each request (`put`, `delete_range`, `txn`, `compact`) is validated before it
/// changes anything, so a refused request leaves the transaction as it was. Dropping the
/// transaction without committing writes nothing.
///
/// # Examples
/// ```
/// use keel_storage::{engine::{Durability, MemEngine}, mvcc::PutRequest, MvccStore};
/// use std::sync::Arc;
/// let store = MvccStore::open(Arc::new(MemEngine::new(&MvccStore::COLUMN_FAMILIES)))?;
/// let mut txn = store.begin()?;
/// txn.put(PutRequest::new(&b"a"[..], &b"1"[..]))?;
/// txn.put(PutRequest::new(&b"b"[..], &b"2"[..]))?;
/// txn.set_applied(b"entry-7");
/// let committed = txn.commit(Durability::Synced)?;
/// assert_eq!(committed.revision.get(), 2);
/// assert_eq!(committed.events.len(), 2);
/// assert_eq!(store.applied()?.as_deref(), Some(&b"entry-7"[..]));
/// # Ok::<(), keel_storage::StorageError>(())
/// ```
pub struct WriteTxn<'s> {
    store: &'s MvccStore,
    writer: MutexGuard<'s, WriterState>,
    /// Taken on first use: every write to the MVCC families happens under the writer lock
    /// this transaction holds, so a view taken later sees the same committed state as one
    /// taken at `begin`. Puts answered by the writer's cache never need it.
    view: OnceCell<Box<dyn ReadView + 's>>,
    overlay: Overlay,
    changes: Vec<Change>,
    batch: WriteBatch,
    applied: Option<Vec<u8>>,
    compact: Option<Revision>,
    /// The store's revision before the open revision: the committed one, or the last
    /// revision sealed by [`WriteTxn::seal_revision`].
    base: Revision,
    /// The revisions sealed so far, with their events, in order (already in `batch`).
    sealed: Vec<Committed>,
    /// Every sealed change's key and new latest version (`None` = deleted), in change
    /// order: what the latest-version cache learns at commit.
    latest: Vec<(Bytes, Option<Record>)>,
}

impl<'s> WriteTxn<'s> {
    pub(crate) fn new(store: &'s MvccStore, writer: MutexGuard<'s, WriterState>) -> Self {
        let writer_current = writer.current;
        WriteTxn {
            store,
            writer,
            view: OnceCell::new(),
            overlay: Overlay::new(),
            changes: Vec::new(),
            batch: WriteBatch::default(),
            applied: None,
            compact: None,
            base: writer_current,
            sealed: Vec::new(),
            latest: Vec::new(),
        }
    }

    /// The revision this transaction's changes get (current + 1).
    pub fn revision(&self) -> Revision {
        self.base.next()
    }

    /// The store's revision as this transaction would leave it so far.
    pub fn current_revision(&self) -> Revision {
        if self.changes.is_empty() {
            self.base
        } else {
            self.revision()
        }
    }

    /// End the open revision: the changes made so far keep their revision, and the next
    /// change gets the one after it. Nothing is written before [`WriteTxn::commit`], which
    /// commits every sealed revision in one batch; watchers then get each revision's events
    /// separately, in order. With no open change this does nothing.
    ///
    /// This lets a caller apply several requests, each in its own revision as etcd gives
    /// it, with one engine write. Reads at the latest revision see every earlier change of
    /// the transaction; reads at an explicit revision see only committed revisions, so a
    /// read at a sealed, uncommitted revision is refused (commit first).
    ///
    /// # Examples
    /// ```
    /// use keel_storage::{engine::{Durability, MemEngine}, mvcc::PutRequest, MvccStore};
    /// use std::sync::Arc;
    /// let store = MvccStore::open(Arc::new(MemEngine::new(&MvccStore::COLUMN_FAMILIES)))?;
    /// let mut txn = store.begin()?;
    /// assert_eq!(txn.put(PutRequest::new(&b"a"[..], &b"1"[..]))?.revision.get(), 2);
    /// txn.seal_revision();
    /// assert_eq!(txn.put(PutRequest::new(&b"a"[..], &b"2"[..]))?.revision.get(), 3);
    /// let committed = txn.commit(Durability::Buffered)?;
    /// assert_eq!(committed.revision.get(), 3);
    /// assert_eq!(committed.events.len(), 2);
    /// # Ok::<(), keel_storage::StorageError>(())
    /// ```
    pub fn seal_revision(&mut self) {
        if self.changes.is_empty() {
            return;
        }
        let rev = self.revision();
        let changes = std::mem::take(&mut self.changes);
        let cfs = self.store.cfs();
        // per change one history record; one revs entry lists the revision's keys
        let bytes: usize = changes
            .iter()
            .map(|c| 2 * c.key.len() + c.record.value.len() + RECORD_BYTES_MAX + 16)
            .sum();
        self.batch.reserve(changes.len() + 4, bytes + 64);
        let mut events = Vec::with_capacity(changes.len());
        // each change is encoded once, into buffers reused across this revision's changes
        let (mut key, mut record) = (Vec::new(), Vec::new());
        let mut revs = Vec::with_capacity(changes.iter().map(|c| c.key.len() + 4).sum());
        self.latest.reserve(changes.len());
        for change in changes {
            key.clear();
            codec::history_key_into(&change.key, rev, &mut key);
            record.clear();
            change.record.encode_into(&mut record);
            self.batch.put(cfs.history, &key, &record);
            codec::push_revs_key(&change.key, &mut revs);
            events.push(to_event(&change));
            let live = (!change.record.tombstone).then_some(change.record);
            self.latest.push((change.key, live));
        }
        self.batch.put(cfs.revs, codec::revs_key(rev), &revs);
        self.sealed.push(Committed {
            revision: rev,
            events,
        });
        self.base = rev;
    }

    /// The batch committed with the changes: other crates add their records here.
    pub fn batch(&mut self) -> &mut WriteBatch {
        &mut self.batch
    }

    /// Record the caller's opaque applied marker in the same batch.
    pub fn set_applied(&mut self, marker: &[u8]) {
        self.applied = Some(marker.to_vec());
    }

    /// The read view of the committed state (see the `view` field).
    fn view(&self) -> Result<&dyn ReadView> {
        if self.view.get().is_none() {
            let view = self.store.engine().view()?;
            let _ = self.view.set(view);
        }
        self.view
            .get()
            .map(|v| v.as_ref())
            .ok_or_else(|| StorageError::corrupted("write transaction", "no read view"))
    }

    fn current_version(&self, key: &[u8]) -> Result<Option<Record>> {
        if let Some(change) = self.overlay.get(key) {
            return Ok(change.clone());
        }
        // Outside the overlay the latest version is the committed one, which the cache
        // mirrors for the keys it holds (we hold the writer lock: nothing else commits).
        if let Some(cached) = self.store.cached_latest(key) {
            return Ok(cached);
        }
        read::latest(self.view()?, self.store.cfs(), key)
    }

    fn live_keys(&self, range: &KeyRange) -> Result<Vec<(Bytes, Record)>> {
        if let KeyRange::Key(key) = range {
            // one key: the overlay, the writer's cache or one point read, no scan
            let live = self.current_version(key)?;
            return Ok(live.map(|r| (key.clone(), r)).into_iter().collect());
        }
        let mut out = Vec::new();
        read::scan_live_with_overlay(
            self.view()?,
            self.store.cfs(),
            range,
            &self.overlay,
            &mut |k, r| {
                out.push((Bytes::copy_from_slice(k), r));
                Ok(ControlFlow::Continue(()))
            },
        )?;
        Ok(out)
    }

    fn record_change(&mut self, key: Bytes, record: Record, prev: Option<Record>) {
        let live = (!record.tombstone).then(|| record.clone());
        self.overlay.insert(key.clone(), live);
        self.changes.push(Change { key, record, prev });
    }

    fn next_sub(&self) -> u32 {
        u32::try_from(self.changes.len()).unwrap_or(u32::MAX)
    }

    /// Read inside the transaction. Without a revision it sees the transaction's own
    /// changes; at an explicit revision it reads the committed state at that revision, as
    /// etcd does (etcd: mvcc/kvstore_txn.go, the write txn reads at `beginRev`).
    ///
    /// # Errors
    /// Compacted or future revision; storage failure.
    pub fn range(&self, req: &RangeRequest) -> Result<RangeResponse> {
        check::check_range(&req.range, self.store.limits())?;
        let current = self.current_revision();
        let mut collector = RangeCollector::new(req);
        let mut push = |k: &[u8], r: crate::codec::Record| {
            collector.push(k, &r);
            Ok(ControlFlow::Continue(()))
        };
        match req.revision {
            None => read::scan_live_with_overlay(
                self.view()?,
                self.store.cfs(),
                &req.range,
                &self.overlay,
                &mut push,
            )?,
            Some(rev) => {
                self.check_readable(rev)?;
                let at = (rev != self.writer.current).then_some(rev);
                read::scan_live(self.view()?, self.store.cfs(), &req.range, at, &mut push)?;
            }
        }
        Ok(collector.finish(current))
    }

    /// A revision readable at the start of the transaction (etcd: `checkRequestRange`).
    fn check_readable(&self, rev: Revision) -> Result<()> {
        let current = self.base;
        if rev > current {
            return Err(StorageError::FutureRevision {
                requested: rev,
                current,
            });
        }
        if rev > self.writer.current {
            // sealed by this transaction, not in the committed view (see `seal_revision`)
            return Err(StorageError::UncommittedRevision {
                requested: rev,
                committed: self.writer.current,
            });
        }
        if rev < self.writer.compacted {
            return Err(StorageError::Compacted {
                requested: rev,
                compacted: self.writer.compacted,
            });
        }
        Ok(())
    }

    /// Write one key.
    ///
    /// # Errors
    /// Empty or oversized key/value, `ignore_*` misuse; storage failure.
    pub fn put(&mut self, req: PutRequest) -> Result<PutResponse> {
        check::check_put(&req, self.store.limits())?;
        let prev = self.current_version(&req.key)?;
        self.put_checked(req, prev)
    }

    fn put_checked(&mut self, req: PutRequest, prev: Option<Record>) -> Result<PutResponse> {
        if (req.ignore_value || req.ignore_lease) && prev.is_none() {
            return Err(StorageError::KeyNotFound);
        }
        let rev = self.revision();
        let value = match (&prev, req.ignore_value) {
            (Some(p), true) => p.value.clone(),
            _ => req.value.clone(),
        };
        let lease = match (&prev, req.ignore_lease) {
            (Some(p), true) => p.lease,
            _ => req.lease,
        };
        let record = Record {
            create_revision: prev.as_ref().map_or(rev, |p| p.create_revision),
            mod_revision: rev,
            sub: self.next_sub(),
            version: prev.as_ref().map_or(1, |p| p.version.saturating_add(1)),
            lease,
            value,
            tombstone: false,
        };
        let prev_kv = if req.prev_kv {
            prev.as_ref().map(|p| read::to_kv(&req.key, p))
        } else {
            None
        };
        self.record_change(req.key, record, prev);
        Ok(PutResponse {
            prev_kv,
            revision: rev,
        })
    }

    /// Delete every live key of a range. Deleting nothing does not create a revision.
    ///
    /// # Errors
    /// Empty or oversized key; storage failure.
    pub fn delete_range(&mut self, req: &DeleteRequest) -> Result<DeleteResponse> {
        check::check_range(&req.range, self.store.limits())?;
        self.delete_checked(req)
    }

    fn delete_checked(&mut self, req: &DeleteRequest) -> Result<DeleteResponse> {
        let victims = self.live_keys(&req.range)?;
        let rev = self.revision();
        let mut prev_kvs = Vec::new();
        let deleted = victims.len() as u64;
        for (key, prev) in victims {
            if req.prev_kv {
                prev_kvs.push(read::to_kv(&key, &prev));
            }
            let tombstone = Record {
                create_revision: Revision::new(0),
                mod_revision: rev,
                sub: self.next_sub(),
                version: 0,
                lease: None,
                value: Bytes::new(),
                tombstone: true,
            };
            self.record_change(key, tombstone, Some(prev));
        }
        Ok(DeleteResponse {
            deleted,
            prev_kvs,
            revision: self.current_revision(),
        })
    }

    /// Compare-then-act, atomically, in this transaction's revision.
    ///
    /// # Errors
    /// Too many ops, duplicate key, bad keys/sizes, `ignore_*` on a missing key, compacted or
    /// future revision in a read; storage failure. Nothing changes on error.
    pub fn txn(&mut self, req: &TxnRequest) -> Result<TxnResponse> {
        let limits = *self.store.limits();
        check::check_txn_depth(req)?;
        check::check_txn_ops(req, limits.txn_ops_max)?;
        check::check_txn_contents(req, &limits)?;
        check::check_intervals(&req.success)?;
        check::check_intervals(&req.failure)?;
        let path = self.plan(req)?;
        self.precheck(req, &path)?;
        let mut path_iter = path.into_iter();
        let mut resp = self.execute(req, &mut path_iter)?;
        resp.revision = self.current_revision();
        Ok(resp)
    }

    /// Decide every branch (nested txns included) against the state before the txn, in
    /// execution order (etcd: apply.go `compareToPath`).
    fn plan(&self, req: &TxnRequest) -> Result<Vec<bool>> {
        let mut path = Vec::new();
        self.plan_into(req, &mut path)?;
        Ok(path)
    }

    fn plan_into(&self, req: &TxnRequest, path: &mut Vec<bool>) -> Result<()> {
        let mut ok = true;
        for c in &req.compare {
            if !self.compare_holds(c)? {
                ok = false;
                break;
            }
        }
        path.push(ok);
        let branch = if ok { &req.success } else { &req.failure };
        for op in branch {
            if let RequestOp::Txn(t) = op {
                self.plan_into(t, path)?;
            }
        }
        Ok(())
    }

    fn compare_holds(&self, c: &Compare) -> Result<bool> {
        let kvs = self.live_keys(&c.range)?;
        if kvs.is_empty() {
            if matches!(c.target, CompareTarget::Value(_)) {
                return Ok(false);
            }
            return Ok(compare_one(c, None));
        }
        Ok(kvs.iter().all(|(_, r)| compare_one(c, Some(r))))
    }

    /// Refuse `ignore_value`/`ignore_lease` puts on missing keys and unreadable revisions
    /// before anything changes.
    fn precheck(&self, req: &TxnRequest, path: &[bool]) -> Result<()> {
        let mut idx = 0;
        self.precheck_level(req, path, &mut idx)
    }

    fn precheck_level(&self, req: &TxnRequest, path: &[bool], idx: &mut usize) -> Result<()> {
        let ok = path.get(*idx).copied().unwrap_or(false);
        *idx += 1;
        let branch = if ok { &req.success } else { &req.failure };
        for op in branch {
            match op {
                RequestOp::Put(p)
                    if (p.ignore_value || p.ignore_lease)
                        && self.current_version(&p.key)?.is_none() =>
                {
                    return Err(StorageError::KeyNotFound);
                }
                RequestOp::Range(r) => {
                    if let Some(rev) = r.revision {
                        self.check_readable(rev)?;
                    }
                }
                RequestOp::Txn(t) => self.precheck_level(t, path, idx)?,
                _ => {}
            }
        }
        Ok(())
    }

    fn execute(
        &mut self,
        req: &TxnRequest,
        path: &mut impl Iterator<Item = bool>,
    ) -> Result<TxnResponse> {
        let ok = path.next().unwrap_or(false);
        let branch = if ok { &req.success } else { &req.failure };
        let mut responses = Vec::with_capacity(branch.len());
        for op in branch {
            let r = match op {
                RequestOp::Range(r) => ResponseOp::Range(self.range(r)?),
                RequestOp::Put(p) => {
                    let prev = self.current_version(&p.key)?;
                    ResponseOp::Put(self.put_checked(p.clone(), prev)?)
                }
                RequestOp::Delete(d) => ResponseOp::Delete(self.delete_checked(d)?),
                RequestOp::Txn(t) => ResponseOp::Txn(self.execute(t, path)?),
            };
            responses.push(r);
        }
        let revision = self.current_revision();
        for r in &mut responses {
            set_revision(r, revision);
        }
        Ok(TxnResponse {
            succeeded: ok,
            responses,
            revision,
        })
    }

    /// Schedule compaction at `rev`: reads below it are refused from this commit on; the
    /// superseded versions are removed afterwards in batches ([`MvccStore::compact_step`]).
    ///
    /// # Errors
    /// `FutureRevision` above the current revision, `Compacted` at or below the current
    /// compaction.
    pub fn compact(&mut self, rev: Revision) -> Result<()> {
        let current = self.current_revision();
        if rev > current {
            return Err(StorageError::FutureRevision {
                requested: rev,
                current,
            });
        }
        let compacted = self.compact.unwrap_or(self.writer.compacted);
        if rev <= compacted {
            return Err(StorageError::Compacted {
                requested: rev,
                compacted,
            });
        }
        self.compact = Some(rev);
        Ok(())
    }

    /// Commit every change, the caller's records and the applied marker in one batch. The
    /// result holds the store's revision after the commit and every event of every
    /// revision, in order.
    ///
    /// # Errors
    /// Storage failure (the engine is then poisoned and nothing is visible).
    pub fn commit(mut self, durability: Durability) -> Result<Committed> {
        let cfs = self.store.cfs();
        self.seal_revision();
        let mut batch = std::mem::take(&mut self.batch);
        let sealed = std::mem::take(&mut self.sealed);
        let new_rev = self.base;
        if !sealed.is_empty() {
            batch.put(cfs.meta, schema::META_REVISION, new_rev.get().to_be_bytes());
        }
        if let Some(c) = self.compact {
            batch.put(
                cfs.meta,
                schema::META_COMPACT_SCHEDULED,
                c.get().to_be_bytes(),
            );
        }
        if let Some(marker) = self.applied.take() {
            batch.put(cfs.meta, schema::META_APPLIED, marker);
        }
        if !batch.is_empty() {
            if let Err(e) = self.store.engine().write(batch, durability) {
                // nothing is known about what the engine holds now
                self.store.forget_published();
                return Err(e);
            }
        }
        self.store
            .publish(new_rev, std::mem::take(&mut self.latest));
        self.writer.current = new_rev;
        if let Some(c) = self.compact {
            self.writer.compacted = c;
        }
        for committed in &sealed {
            self.store.hub().notify(committed, self.writer.compacted);
        }
        let events = match <[Committed; 1]>::try_from(sealed) {
            Ok([one]) => one.events,
            Err(sealed) => {
                let mut events = Vec::with_capacity(sealed.iter().map(|c| c.events.len()).sum());
                for committed in sealed {
                    events.extend(committed.events);
                }
                events
            }
        };
        Ok(Committed {
            revision: new_rev,
            events,
        })
    }
}

fn to_event(change: &Change) -> Event {
    let kind = if change.record.tombstone {
        EventKind::Delete
    } else {
        EventKind::Put
    };
    let kv = read::to_kv_shared(&change.key, &change.record);
    let prev_kv = change.prev.as_ref().map(|p| read::to_kv_shared(&kv.key, p));
    Event {
        kind,
        kv,
        prev_kv,
        sub: change.record.sub,
    }
}

fn set_revision(r: &mut ResponseOp, revision: Revision) {
    match r {
        ResponseOp::Range(x) => x.revision = revision,
        ResponseOp::Put(x) => x.revision = revision,
        ResponseOp::Delete(x) => x.revision = revision,
        ResponseOp::Txn(x) => {
            x.revision = revision;
            for inner in &mut x.responses {
                set_revision(inner, revision);
            }
        }
    }
}

/// etcd: apply.go `compareKV`. A missing key compares as zeros and no lease.
fn compare_one(c: &Compare, rec: Option<&Record>) -> bool {
    let ord = match &c.target {
        CompareTarget::Version(v) => rec.map_or(0, |r| r.version).cmp(v),
        CompareTarget::Create(v) => rec.map_or(Revision::new(0), |r| r.create_revision).cmp(v),
        CompareTarget::Mod(v) => rec.map_or(Revision::new(0), |r| r.mod_revision).cmp(v),
        CompareTarget::Value(v) => match rec {
            Some(r) => r.value.as_ref().cmp(v.as_ref()),
            None => return false,
        },
        CompareTarget::Lease(l) => {
            let have = rec.and_then(|r| r.lease).map_or(0, |l| l.get());
            have.cmp(&l.map_or(0, |l| l.get()))
        }
    };
    match c.op {
        CompareOp::Equal => ord == Ordering::Equal,
        CompareOp::NotEqual => ord != Ordering::Equal,
        CompareOp::Less => ord == Ordering::Less,
        CompareOp::Greater => ord == Ordering::Greater,
    }
}
