//! The read path: visible versions at a revision, range scans, etcd's range post-processing.

use super::types::{KeyValue, RangeRequest, RangeResponse, SortOrder, SortTarget};
use crate::codec::{self, Record};
use crate::engine::{ColumnFamily, Engine, ReadView, ScanBounds};
use crate::error::{Result, StorageError};
use crate::schema;
use bytes::Bytes;
use keel_types::{KeyRange, Revision};
use std::collections::BTreeMap;
use std::ops::ControlFlow;

/// Visitor of live versions: (user key, version) -> continue or stop.
pub(crate) type RecordVisitor<'v> = dyn FnMut(&[u8], Record) -> Result<ControlFlow<()>> + 'v;

/// Handles of the MVCC column families.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Cfs {
    pub history: ColumnFamily,
    pub revs: ColumnFamily,
    pub meta: ColumnFamily,
}

impl Cfs {
    pub(crate) fn resolve(engine: &dyn Engine) -> Result<Self> {
        Ok(Cfs {
            history: engine.column_family(schema::HISTORY_CF)?,
            revs: engine.column_family(schema::REVS_CF)?,
            meta: engine.column_family(schema::META_CF)?,
        })
    }
}

/// Revisions a read needs, as of one view.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Revisions {
    pub current: Revision,
    pub compacted: Revision,
}

impl Revisions {
    pub(crate) fn load(view: &dyn ReadView, cfs: Cfs) -> Result<Self> {
        let current = meta_revision(view, cfs, schema::META_REVISION)?.unwrap_or(Revision::FIRST);
        let compacted =
            meta_revision(view, cfs, schema::META_COMPACT_SCHEDULED)?.unwrap_or(Revision::new(0));
        Ok(Revisions { current, compacted })
    }

    /// Check that `rev` can be read: not compacted, not in the future.
    pub(crate) fn check_readable(&self, rev: Revision) -> Result<()> {
        if rev > self.current {
            return Err(StorageError::FutureRevision {
                requested: rev,
                current: self.current,
            });
        }
        if rev < self.compacted {
            return Err(StorageError::Compacted {
                requested: rev,
                compacted: self.compacted,
            });
        }
        Ok(())
    }
}

pub(crate) fn meta_revision(view: &dyn ReadView, cfs: Cfs, key: &[u8]) -> Result<Option<Revision>> {
    view.get(cfs.meta, key)?
        .map(|b| codec::decode_revision(&b))
        .transpose()
}

pub(crate) fn to_kv(key: &[u8], rec: &Record) -> KeyValue {
    KeyValue {
        key: Bytes::copy_from_slice(key),
        create_revision: rec.create_revision,
        mod_revision: rec.mod_revision,
        version: rec.version,
        value: rec.value.clone(),
        lease: rec.lease,
    }
}

/// As [`to_kv`], sharing an already-built key.
pub(crate) fn to_kv_shared(key: &Bytes, rec: &Record) -> KeyValue {
    KeyValue {
        key: key.clone(),
        create_revision: rec.create_revision,
        mod_revision: rec.mod_revision,
        version: rec.version,
        value: rec.value.clone(),
        lease: rec.lease,
    }
}

/// The latest live version of `key`: its newest `kv_history` entry, unless that is a
/// deletion.
pub(crate) fn latest(view: &dyn ReadView, cfs: Cfs, key: &[u8]) -> Result<Option<Record>> {
    Ok(version_at(view, cfs, key, LATEST)?.filter(|r| !r.tombstone))
}

/// A revision above every revision a store holds: reading "at" it reads the latest versions.
const LATEST: Revision = Revision::new(u64::MAX);

/// The newest version of `key` with main revision <= `rev`, tombstones included.
pub(crate) fn version_at(
    view: &dyn ReadView,
    cfs: Cfs,
    key: &[u8],
    rev: Revision,
) -> Result<Option<Record>> {
    let lower = codec::history_key(key, rev);
    let upper = codec::history_key_end(key);
    let mut found = None;
    view.scan(
        cfs.history,
        ScanBounds::forward(&lower, Some(&upper)),
        &mut |_, v| {
            found = Some(Record::decode(v)?);
            Ok(ControlFlow::Break(()))
        },
    )?;
    Ok(found)
}

/// Visit the live versions of every key in `range` at `rev` (`None` = latest), key order.
pub(crate) fn scan_live(
    view: &dyn ReadView,
    cfs: Cfs,
    range: &KeyRange,
    rev: Option<Revision>,
    visit: &mut RecordVisitor<'_>,
) -> Result<()> {
    if range.is_empty() {
        return Ok(());
    }
    if let KeyRange::Key(k) = range {
        let rec = version_at(view, cfs, k, rev.unwrap_or(LATEST))?.filter(|r| !r.tombstone);
        if let Some(rec) = rec {
            let _ = visit(k, rec)?;
        }
        return Ok(());
    }
    let end = range.end();
    let at = rev.unwrap_or(LATEST);
    scan_history_at(view, cfs, range.start(), end.as_deref(), at, visit)
}

/// Entries of one key a range scan steps over before it seeks past them instead, as RocksDB's
/// iterators do after `max_sequential_skip_in_iterations` (8 by default): a key with many
/// versions costs a seek, not a step per version, so a range at the latest revision stays
/// proportional to the keys it covers when history is not compacted.
const SEQUENTIAL_SKIPS_MAX: usize = 8;

fn scan_history_at(
    view: &dyn ReadView,
    cfs: Cfs,
    start: &[u8],
    end: Option<&[u8]>,
    at: Revision,
    visit: &mut RecordVisitor<'_>,
) -> Result<()> {
    let mut lower = codec::escape_key(start);
    let upper = end.map(codec::escape_key);
    // The user key whose visible version was already decided; its later (older) entries are
    // skipped.
    let mut decided: Option<Vec<u8>> = None;
    loop {
        // The key whose entries newer than `at` are being skipped, and how many entries of the
        // current key were skipped in a row.
        let mut newer_of: Option<Vec<u8>> = None;
        let mut skipped = 0usize;
        let mut seek_to: Option<Vec<u8>> = None;
        let mut stopped = false;
        view.scan(
            cfs.history,
            ScanBounds::forward(&lower, upper.as_deref()),
            &mut |k, v| {
                let (key, main) = codec::parse_history_key(k)?;
                if decided.as_deref() == Some(key.as_slice()) {
                    skipped += 1;
                    if skipped > SEQUENTIAL_SKIPS_MAX {
                        seek_to = Some(codec::history_key_end(&key));
                        return Ok(ControlFlow::Break(()));
                    }
                    return Ok(ControlFlow::Continue(()));
                }
                if main > at {
                    if newer_of.as_deref() == Some(key.as_slice()) {
                        skipped += 1;
                    } else {
                        skipped = 1;
                    }
                    if skipped > SEQUENTIAL_SKIPS_MAX {
                        seek_to = Some(codec::history_key(&key, at));
                        return Ok(ControlFlow::Break(()));
                    }
                    newer_of = Some(key);
                    return Ok(ControlFlow::Continue(()));
                }
                skipped = 0;
                newer_of = None;
                let rec = Record::decode(v)?;
                let flow = if rec.tombstone {
                    ControlFlow::Continue(())
                } else {
                    visit(&key, rec)?
                };
                stopped = flow.is_break();
                decided = Some(key);
                Ok(flow)
            },
        )?;
        match seek_to {
            Some(next) if !stopped => lower = next,
            _ => return Ok(()),
        }
    }
}

/// Changes of the current write transaction not yet committed: key -> new version
/// (`None` = deleted). Reads inside the transaction see them.
pub(crate) type Overlay = BTreeMap<Bytes, Option<Record>>;

/// Live versions of `range` at the latest revision, with `overlay` applied on top.
pub(crate) fn scan_live_with_overlay(
    view: &dyn ReadView,
    cfs: Cfs,
    range: &KeyRange,
    overlay: &Overlay,
    visit: &mut RecordVisitor<'_>,
) -> Result<()> {
    let touched = overlay.keys().any(|k| range.contains(k));
    if !touched {
        return scan_live(view, cfs, range, None, visit);
    }
    let mut merged: BTreeMap<Vec<u8>, Record> = BTreeMap::new();
    scan_live(view, cfs, range, None, &mut |k, r| {
        merged.insert(k.to_vec(), r);
        Ok(ControlFlow::Continue(()))
    })?;
    for (k, change) in overlay.iter().filter(|(k, _)| range.contains(k)) {
        match change {
            Some(r) => merged.insert(k.to_vec(), r.clone()),
            None => merged.remove(k.as_ref()),
        };
    }
    for (k, r) in merged {
        if visit(&k, r)?.is_break() {
            break;
        }
    }
    Ok(())
}

/// etcd's range post-processing (etcd: server/etcdserver/apply.go `Range`): count every key,
/// filter, sort (ascending by default when the target is not the key), then limit.
pub(crate) struct RangeCollector<'r> {
    req: &'r RangeRequest,
    keep_max: Option<usize>,
    count: u64,
    kvs: Vec<KeyValue>,
}

impl<'r> RangeCollector<'r> {
    pub(crate) fn new(req: &'r RangeRequest) -> Self {
        let needs_all = req.sort_order != SortOrder::None
            || req.sort_target != SortTarget::Key
            || req.has_filters();
        let keep_max = if req.count_only {
            Some(0)
        } else if needs_all {
            None
        } else {
            req.limit.map(|l| l.saturating_add(1))
        };
        RangeCollector {
            req,
            keep_max,
            count: 0,
            kvs: Vec::new(),
        }
    }

    pub(crate) fn push(&mut self, key: &[u8], rec: &Record) {
        self.count += 1;
        if self.keep_max.is_some_and(|m| self.kvs.len() >= m) {
            return;
        }
        self.kvs.push(to_kv(key, rec));
    }

    pub(crate) fn finish(self, revision: Revision) -> RangeResponse {
        let req = self.req;
        let mut kvs = self.kvs;
        kvs.retain(|kv| {
            req.min_mod_revision.is_none_or(|m| kv.mod_revision >= m)
                && req.max_mod_revision.is_none_or(|m| kv.mod_revision <= m)
                && req
                    .min_create_revision
                    .is_none_or(|m| kv.create_revision >= m)
                && req
                    .max_create_revision
                    .is_none_or(|m| kv.create_revision <= m)
        });
        let order = match (req.sort_order, req.sort_target) {
            (SortOrder::None, SortTarget::Key) => SortOrder::None,
            (SortOrder::None, _) => SortOrder::Ascend,
            (o, _) => o,
        };
        if order != SortOrder::None {
            sort_kvs(&mut kvs, req.sort_target);
            if order == SortOrder::Descend {
                kvs.reverse();
            }
        }
        let mut more = false;
        if let Some(limit) = req.limit {
            if kvs.len() > limit {
                kvs.truncate(limit);
                more = true;
            }
        }
        if req.keys_only {
            // after sorting: a sort by value still sees the values (etcd: apply.go `Range`)
            for kv in &mut kvs {
                kv.value = Bytes::new();
            }
        }
        RangeResponse {
            kvs,
            more,
            count: self.count,
            revision,
        }
    }
}

fn sort_kvs(kvs: &mut [KeyValue], target: SortTarget) {
    match target {
        SortTarget::Key => kvs.sort_by(|a, b| a.key.cmp(&b.key)),
        SortTarget::Version => kvs.sort_by_key(|kv| kv.version),
        SortTarget::Create => kvs.sort_by_key(|kv| kv.create_revision),
        SortTarget::Mod => kvs.sort_by_key(|kv| kv.mod_revision),
        SortTarget::Value => kvs.sort_by(|a, b| a.value.cmp(&b.value)),
    }
}

#[cfg(test)]
mod tests {
    use crate::engine::MemEngine;
    use crate::mvcc::{DeleteRequest, PutRequest, RangeRequest};
    use crate::MvccStore;
    use keel_types::{KeyRange, Revision};
    use std::collections::BTreeMap;
    use std::sync::Arc;

    /// Keys with many versions (more than a scan steps over before seeking), some deleted and
    /// recreated: a range at every revision returns what a plain model holds.
    #[test]
    fn ranges_over_keys_with_many_versions_match_a_model() {
        let store = MvccStore::open(Arc::new(MemEngine::new(&MvccStore::COLUMN_FAMILIES))).unwrap();
        // revision -> the live keys and values after it
        let mut model: Vec<(Revision, BTreeMap<String, String>)> = Vec::new();
        let mut live = BTreeMap::new();
        for i in 0..120u32 {
            let key = ["k/a", "k/b", "k/c"][(i % 7 % 3) as usize];
            let revision = if i % 23 == 22 {
                live.remove(key);
                store
                    .delete_range(&DeleteRequest {
                        range: KeyRange::key(key),
                        prev_kv: false,
                    })
                    .unwrap()
                    .revision
            } else {
                let value = format!("v{i}");
                live.insert(key.to_string(), value.clone());
                store.put(PutRequest::new(key, value)).unwrap().revision
            };
            model.push((revision, live.clone()));
        }
        let prefix = KeyRange::prefix("k/");
        let pairs = |req: &RangeRequest| -> BTreeMap<String, String> {
            store
                .range(req)
                .unwrap()
                .kvs
                .iter()
                .map(|kv| {
                    let key = String::from_utf8(kv.key.to_vec()).unwrap();
                    (key, String::from_utf8(kv.value.to_vec()).unwrap())
                })
                .collect()
        };
        assert_eq!(pairs(&RangeRequest::new(prefix.clone())), live);
        for (revision, expected) in &model {
            let req = RangeRequest {
                revision: Some(*revision),
                ..RangeRequest::new(prefix.clone())
            };
            assert_eq!(&pairs(&req), expected, "at revision {revision}");
        }
        // a limit stops the scan while a key's versions are being skipped
        let limited = RangeRequest {
            limit: Some(1),
            ..RangeRequest::new(prefix)
        };
        assert_eq!(store.range(&limited).unwrap().kvs.len(), 1);
    }
}
