//! Watch hub: historical start, live delivery, slow watcher catch-up, compaction, ordering.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failure is a test failure"
)]

use keel_storage::engine::{Durability, MemEngine};
use keel_storage::mvcc::{DeleteRequest, EventKind, PutRequest};
use keel_storage::watch::{WatchSpec, Watcher};
use keel_storage::{limits, MvccStore, StorageError};
use keel_types::{KeyRange, Revision};
use std::sync::Arc;

fn store() -> Arc<MvccStore> {
    Arc::new(MvccStore::open(Arc::new(MemEngine::new(&MvccStore::COLUMN_FAMILIES))).unwrap())
}

fn put(s: &MvccStore, k: &str, v: &str) {
    s.put(PutRequest::new(
        k.as_bytes().to_vec(),
        v.as_bytes().to_vec(),
    ))
    .unwrap();
}

/// Drain everything available now: (revision, sub, key, kind) per event.
fn drain(w: &mut Watcher) -> Vec<(u64, u32, String, EventKind)> {
    let mut out = Vec::new();
    while let Some(b) = w.poll().unwrap() {
        for e in b.events {
            out.push((
                e.kv.mod_revision.get(),
                e.sub,
                String::from_utf8(e.kv.key.to_vec()).unwrap(),
                e.kind,
            ));
        }
    }
    out
}

#[test]
fn historical_start_then_live_without_gap_or_duplicate() {
    let s = store();
    for i in 0..10 {
        put(&s, &format!("a/{i}"), "v"); // revisions 2..=11
    }
    put(&s, "b/x", "v"); // 12, outside the prefix
    let mut w = s
        .watch(WatchSpec {
            start_revision: Some(Revision::new(5)),
            ..WatchSpec::new(KeyRange::prefix(&b"a/"[..]))
        })
        .unwrap();
    put(&s, "a/live", "v"); // 13
    let revs: Vec<u64> = drain(&mut w).into_iter().map(|e| e.0).collect();
    assert_eq!(revs, vec![5, 6, 7, 8, 9, 10, 11, 13]);
    put(&s, "a/next", "v"); // 14
    assert_eq!(drain(&mut w).len(), 1);
    assert!(drain(&mut w).is_empty());
}

#[test]
fn events_of_one_revision_arrive_together_with_prev_kv_and_filters() {
    let s = store();
    put(&s, "k/1", "old");
    put(&s, "k/2", "old");
    let mut all = s
        .watch(WatchSpec {
            prev_kv: true,
            ..WatchSpec::new(KeyRange::prefix(&b"k/"[..]))
        })
        .unwrap();
    let mut no_delete = s
        .watch(WatchSpec {
            no_delete: true,
            ..WatchSpec::new(KeyRange::prefix(&b"k/"[..]))
        })
        .unwrap();
    s.delete_range(&DeleteRequest {
        range: KeyRange::prefix(&b"k/"[..]),
        prev_kv: false,
    })
    .unwrap();
    let batch = all.poll().unwrap().unwrap();
    assert_eq!(batch.events.len(), 2, "one revision, one batch");
    assert!(batch.events.iter().all(|e| e.kind == EventKind::Delete));
    assert_eq!(
        batch.events[0].prev_kv.as_ref().unwrap().value.as_ref(),
        b"old"
    );
    assert_eq!((batch.events[0].sub, batch.events[1].sub), (0, 1));
    assert!(no_delete.poll().unwrap().is_none());
}

#[test]
fn slow_watcher_becomes_victim_and_catches_up_in_order() {
    let s = store();
    let mut slow = s
        .watch(WatchSpec::new(KeyRange::prefix(&b"p/"[..])))
        .unwrap();
    let n = limits::WATCHER_BUFFER_BATCHES * 3;
    for i in 0..n {
        put(&s, &format!("p/{}", i % 17), "v");
    }
    assert_eq!(s.hub().unsynced_count(), 1, "the full watcher fell behind");
    let got = drain(&mut slow);
    let revs: Vec<u64> = got.iter().map(|e| e.0).collect();
    let expected: Vec<u64> = (2..(n as u64 + 2)).collect();
    assert_eq!(revs, expected, "every revision once, in order");
    assert_eq!(s.hub().unsynced_count(), 0, "back on the live stream");
    put(&s, "p/z", "v");
    assert_eq!(drain(&mut slow).len(), 1);
}

#[test]
fn interleaved_writes_during_catch_up_are_not_lost() {
    let s = store();
    for i in 0..3000 {
        put(&s, &format!("q/{i}"), "v");
    }
    let mut w = s
        .watch(WatchSpec {
            start_revision: Some(Revision::new(2)),
            ..WatchSpec::new(KeyRange::prefix(&b"q/"[..]))
        })
        .unwrap();
    let mut seen = Vec::new();
    let mut next_write = 3000;
    while let Some(b) = w.poll().unwrap() {
        seen.extend(b.events.iter().map(|e| e.kv.mod_revision.get()));
        if next_write < 3100 {
            put(&s, &format!("q/{next_write}"), "v");
            next_write += 1;
        }
    }
    let expected: Vec<u64> = (2..(next_write as u64 + 2)).collect();
    assert_eq!(seen, expected);
}

#[test]
fn compaction_below_a_lagging_watcher_cancels_it_with_the_compact_revision() {
    let s = store();
    for i in 0..20 {
        put(&s, &format!("c/{i}"), "v");
    }
    let mut w = s
        .watch(WatchSpec {
            start_revision: Some(Revision::new(3)),
            ..WatchSpec::new(KeyRange::prefix(&b"c/"[..]))
        })
        .unwrap();
    s.compact(Revision::new(10), true).unwrap();
    match w.poll() {
        Err(StorageError::Compacted { compacted, .. }) => assert_eq!(compacted, Revision::new(10)),
        other => panic!("expected compacted, got {other:?}"),
    }
    assert!(s.hub().is_empty(), "cancelled watcher unregistered");
    let err = s
        .watch(WatchSpec {
            start_revision: Some(Revision::new(5)),
            ..WatchSpec::new(KeyRange::prefix(&b"c/"[..]))
        })
        .unwrap_err();
    assert!(
        matches!(err, StorageError::Compacted { compacted, .. } if compacted == Revision::new(10))
    );
}

#[test]
fn future_start_revision_waits_and_txn_changes_share_a_batch() {
    let s = store();
    let mut w = s
        .watch(WatchSpec {
            start_revision: Some(Revision::new(4)),
            ..WatchSpec::new(KeyRange::all())
        })
        .unwrap();
    put(&s, "a", "1"); // 2
    put(&s, "b", "1"); // 3
    assert!(w.poll().unwrap().is_none());
    let mut txn = s.begin().unwrap();
    txn.put(PutRequest::new(&b"x"[..], &b"1"[..])).unwrap();
    txn.put(PutRequest::new(&b"y"[..], &b"1"[..])).unwrap();
    txn.commit(Durability::Synced).unwrap(); // 4
    let b = w.poll().unwrap().unwrap();
    assert_eq!(b.revision, Revision::new(4));
    assert_eq!(b.events.len(), 2);
}

/// A watcher waiting for a future revision keeps waiting for it when a snapshot install
/// replaces the state under it (the install makes every watcher catch up again). It used to
/// restart from the installed revision + 1 and deliver revisions before its start (found by
/// the deterministic battery, seed 667, once members snapshotted every 100 entries).
#[test]
fn a_future_start_revision_survives_a_snapshot_install() {
    let src = store();
    put(&src, "a", "1"); // 2
    put(&src, "b", "1"); // 3
    let chunks: Vec<_> =
        keel_storage::snapshot::export(src.engine(), &MvccStore::COLUMN_FAMILIES, 1024)
            .unwrap()
            .collect();
    let s = store();
    let mut w = s
        .watch(WatchSpec {
            start_revision: Some(Revision::new(6)),
            ..WatchSpec::new(KeyRange::all())
        })
        .unwrap();
    s.install_snapshot(chunks).unwrap();
    assert_eq!(s.current_revision().unwrap(), Revision::new(3));
    assert!(w.poll().unwrap().is_none());
    put(&s, "c", "1"); // 4
    put(&s, "d", "1"); // 5
    put(&s, "e", "1"); // 6
    let got = drain(&mut w);
    assert_eq!(
        got.iter()
            .map(|(rev, _, key, _)| (*rev, key.as_str()))
            .collect::<Vec<_>>(),
        [(6, "e")]
    );
}

#[test]
fn dropped_watcher_unregisters() {
    let s = store();
    let w = s.watch(WatchSpec::new(KeyRange::key(&b"a"[..]))).unwrap();
    assert_eq!(s.hub().len(), 1);
    drop(w);
    assert!(s.hub().is_empty());
}

#[test]
fn sealed_revisions_of_one_commit_arrive_one_batch_per_revision() {
    let s = store();
    put(&s, "g/a", "old"); // 2
    let mut live = s
        .watch(WatchSpec {
            prev_kv: true,
            ..WatchSpec::new(KeyRange::prefix(&b"g/"[..]))
        })
        .unwrap();
    let mut txn = s.begin().unwrap();
    txn.put(PutRequest::new(&b"g/a"[..], &b"new"[..])).unwrap(); // 3
    txn.seal_revision();
    txn.seal_revision(); // nothing open: no empty revision
    txn.put(PutRequest::new(&b"g/b"[..], &b"v"[..])).unwrap(); // 4
    txn.seal_revision();
    let deleted = txn
        .delete_range(&DeleteRequest {
            range: KeyRange::prefix(&b"g/"[..]),
            prev_kv: false,
        })
        .unwrap(); // 5: sees both keys, the first changed in this commit
    assert_eq!(deleted.deleted, 2);
    // nothing is visible, and nothing delivered, before the commit
    assert!(live.poll().unwrap().is_none());
    assert_eq!(s.current_revision().unwrap(), Revision::new(2));
    let committed = txn.commit(Durability::Buffered).unwrap();
    assert_eq!(committed.revision, Revision::new(5));
    assert_eq!(committed.events.len(), 4);
    let mut batches = Vec::new();
    while let Some(b) = live.poll().unwrap() {
        let prev: Vec<Option<String>> = b
            .events
            .iter()
            .map(|e| {
                e.prev_kv
                    .as_ref()
                    .map(|p| String::from_utf8(p.value.to_vec()).unwrap())
            })
            .collect();
        batches.push((b.revision.get(), b.events.len(), prev));
    }
    assert_eq!(
        batches,
        vec![
            (3, 1, vec![Some("old".to_string())]),
            (4, 1, vec![None]),
            (5, 2, vec![Some("new".to_string()), Some("v".to_string())]),
        ]
    );
    // a watcher starting in the past reads the same revisions from history
    let mut late = s
        .watch(WatchSpec {
            start_revision: Some(Revision::new(3)),
            ..WatchSpec::new(KeyRange::prefix(&b"g/"[..]))
        })
        .unwrap();
    let revs: Vec<(u64, u32)> = drain(&mut late).into_iter().map(|e| (e.0, e.1)).collect();
    assert_eq!(revs, vec![(3, 0), (4, 0), (5, 0), (5, 1)]);
    // the writer's cache learned the last version of each key
    let again = s.put(PutRequest::new(&b"g/a"[..], &b"x"[..])).unwrap();
    assert_eq!(again.revision, Revision::new(6));
    let got = s
        .range(&keel_storage::mvcc::RangeRequest::new(KeyRange::key(
            &b"g/a"[..],
        )))
        .unwrap();
    assert_eq!(
        got.kvs[0].version, 1,
        "re-created after the delete in revision 5"
    );
    assert_eq!(got.kvs[0].create_revision, Revision::new(6));
}

#[test]
fn a_read_at_a_sealed_uncommitted_revision_is_refused() {
    let s = store();
    put(&s, "r/a", "1"); // 2
    let mut txn = s.begin().unwrap();
    txn.put(PutRequest::new(&b"r/a"[..], &b"2"[..])).unwrap(); // 3, sealed below
    txn.seal_revision();
    let at = |rev: u64| keel_storage::mvcc::RangeRequest {
        revision: Some(Revision::new(rev)),
        ..keel_storage::mvcc::RangeRequest::new(KeyRange::key(&b"r/a"[..]))
    };
    // committed revisions still read from the committed view
    let old = txn.range(&at(2)).unwrap();
    assert_eq!(old.kvs[0].value.as_ref(), b"1");
    assert!(matches!(
        txn.range(&at(3)),
        Err(StorageError::UncommittedRevision { .. })
    ));
    assert!(matches!(
        txn.range(&at(4)),
        Err(StorageError::FutureRevision { .. })
    ));
    // the latest read sees the sealed change
    let latest = txn
        .range(&keel_storage::mvcc::RangeRequest::new(KeyRange::key(
            &b"r/a"[..],
        )))
        .unwrap();
    assert_eq!(latest.kvs[0].value.as_ref(), b"2");
    assert_eq!(latest.revision, Revision::new(3));
}
