//! Write, drop, reopen on a real RocksDB directory: same state, same applied marker, and
//! opening does not depend on the number of keys.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failure is a test failure"
)]

use keel_storage::engine::{Durability, RocksEngine, RocksOptions};
use keel_storage::mvcc::{DeleteRequest, PutRequest, RangeRequest};
use keel_storage::{MvccStore, StorageError};
use keel_types::{KeyRange, Revision};
use std::sync::Arc;

fn open(dir: &std::path::Path) -> MvccStore {
    let engine = RocksEngine::open(dir, &RocksOptions::new(&MvccStore::COLUMN_FAMILIES)).unwrap();
    MvccStore::open(Arc::new(engine)).unwrap()
}

#[test]
fn reopen_keeps_state_and_applied_marker() {
    let dir = tempfile::tempdir().unwrap();
    let (hash, all) = {
        let store = open(dir.path());
        for i in 0..200u32 {
            let mut txn = store.begin().unwrap();
            txn.put(PutRequest::new(format!("k{:03}", i % 50), format!("v{i}")))
                .unwrap();
            txn.set_applied(&i.to_be_bytes());
            txn.commit(Durability::Buffered).unwrap();
        }
        store
            .delete_range(&DeleteRequest {
                range: KeyRange::prefix(&b"k00"[..]),
                prev_kv: false,
            })
            .unwrap();
        store.compact(Revision::new(150), true).unwrap();
        let all = store.range(&RangeRequest::new(KeyRange::all())).unwrap();
        (store.hash_kv(None).unwrap(), all)
    };
    let store = open(dir.path());
    assert_eq!(store.current_revision().unwrap(), Revision::new(202));
    assert_eq!(store.compacted_revision().unwrap(), Revision::new(150));
    assert_eq!(
        store.applied().unwrap(),
        Some(199u32.to_be_bytes().to_vec())
    );
    assert_eq!(
        store.range(&RangeRequest::new(KeyRange::all())).unwrap(),
        all
    );
    assert_eq!(store.hash_kv(None).unwrap(), hash);
    let old = RangeRequest {
        revision: Some(Revision::new(149)),
        ..RangeRequest::new(KeyRange::all())
    };
    assert!(matches!(
        store.range(&old),
        Err(StorageError::Compacted { requested, compacted })
            if requested == Revision::new(149) && compacted == Revision::new(150)
    ));
}

#[test]
fn hash_is_independent_of_physical_compaction_progress() {
    let a_dir = tempfile::tempdir().unwrap();
    let b_dir = tempfile::tempdir().unwrap();
    let (a, b) = (open(a_dir.path()), open(b_dir.path()));
    for store in [&a, &b] {
        for i in 0..300u32 {
            store
                .put(PutRequest::new(format!("k{}", i % 7), format!("v{i}")))
                .unwrap();
        }
        store
            .delete_range(&DeleteRequest {
                range: KeyRange::key(&b"k3"[..]),
                prev_kv: false,
            })
            .unwrap();
    }
    a.compact(Revision::new(250), true).unwrap();
    // b schedules the same compaction but removes nothing yet
    let mut txn = b.begin().unwrap();
    txn.compact(Revision::new(250)).unwrap();
    txn.commit(Durability::Buffered).unwrap();
    assert_eq!(a.hash_kv(None).unwrap(), b.hash_kv(None).unwrap());
    while !b.compact_step(10).unwrap() {}
    assert_eq!(a.hash_kv(None).unwrap(), b.hash_kv(None).unwrap());
    assert!(a.engine().size_bytes().is_ok());
}

#[test]
fn physical_compaction_keeps_latest_versions_readable() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    for i in 0..100u32 {
        store
            .put(PutRequest::new(format!("k{}", i % 10), format!("v{i}")))
            .unwrap();
    }
    store.compact(Revision::new(101), true).unwrap();
    let at = RangeRequest {
        revision: Some(Revision::new(101)),
        ..RangeRequest::new(KeyRange::all())
    };
    let resp = store.range(&at).unwrap();
    assert_eq!(resp.count, 10);
    assert!(resp.kvs.iter().all(|kv| kv.version == 10));
    assert!(matches!(
        store.compact(Revision::new(101), false),
        Err(StorageError::Compacted { .. })
    ));
    assert!(matches!(
        store.compact(Revision::new(999), false),
        Err(StorageError::FutureRevision { .. })
    ));
}

#[test]
fn snapshot_export_install_reproduces_state_and_hash() {
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = open(a_dir.path());
    for i in 0..500u32 {
        a.put(PutRequest::new(format!("k{}", i % 40), format!("v{i}")))
            .unwrap();
    }
    a.compact(Revision::new(300), false).unwrap();
    let b = Arc::new(open(b_dir.path()));
    b.put(PutRequest::new(&b"stale"[..], &b"x"[..])).unwrap();
    let mut w = b
        .watch(keel_storage::watch::WatchSpec::new(KeyRange::all()))
        .unwrap();
    let chunks =
        keel_storage::snapshot::export(a.engine(), &MvccStore::COLUMN_FAMILIES, 4096).unwrap();
    b.install_snapshot(chunks).unwrap();
    assert_eq!(b.current_revision().unwrap(), a.current_revision().unwrap());
    assert_eq!(b.compacted_revision().unwrap(), Revision::new(300));
    assert_eq!(b.hash_kv(None).unwrap(), a.hash_kv(None).unwrap());
    let all = RangeRequest::new(KeyRange::all());
    assert_eq!(b.range(&all).unwrap(), a.range(&all).unwrap());
    // the watcher was at revision 3 (after "stale"), below the snapshot's compaction
    assert!(matches!(w.poll(), Err(StorageError::Compacted { .. })));
    drop(w);
    drop(b);
    assert_eq!(
        open(b_dir.path()).hash_kv(None).unwrap(),
        a.hash_kv(None).unwrap()
    );
}

/// The writer caches the latest version of recently written keys: a snapshot install must
/// not let a put see the replaced state's version, create revision, lease or previous value.
#[test]
fn puts_after_snapshot_install_see_the_installed_versions() {
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = open(a_dir.path());
    for i in 0..30u32 {
        a.put(PutRequest::new(format!("k{}", i % 3), format!("a{i}")))
            .unwrap();
    }
    let b = open(b_dir.path());
    for i in 0..7u32 {
        // b's cache now holds k0..k2 (other versions) and "stale", absent from a
        b.put(PutRequest::new(format!("k{}", i % 3), format!("b{i}")))
            .unwrap();
        b.put(PutRequest::new(&b"stale"[..], format!("s{i}")))
            .unwrap();
    }
    b.delete_range(&DeleteRequest {
        range: KeyRange::key(&b"k2"[..]),
        prev_kv: false,
    })
    .unwrap();
    let chunks =
        keel_storage::snapshot::export(a.engine(), &MvccStore::COLUMN_FAMILIES, 4096).unwrap();
    b.install_snapshot(chunks).unwrap();
    for k in ["k0", "k1", "k2", "stale"] {
        let req = PutRequest {
            prev_kv: true,
            ..PutRequest::new(k.to_string(), &b"new"[..])
        };
        let plain = PutRequest::new(k.to_string(), &b"newer"[..]);
        assert_eq!(b.put(req.clone()).unwrap(), a.put(req).unwrap(), "{k}");
        assert_eq!(b.put(plain.clone()).unwrap(), a.put(plain).unwrap(), "{k}");
    }
    let all = RangeRequest::new(KeyRange::all());
    assert_eq!(b.range(&all).unwrap(), a.range(&all).unwrap());
    assert_eq!(b.hash_kv(None).unwrap(), a.hash_kv(None).unwrap());
}
