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

/// Write a format 1 store: key `a` put at revisions 2 ("old") and 3 ("new"), a stale `kv`
/// record, one `kv_revs` entry per change keyed by (main, sub).
fn write_format_1_store(dir: &std::path::Path) {
    use keel_storage::codec::{history_key, Record};
    use keel_storage::schema;
    let mut families = MvccStore::COLUMN_FAMILIES.to_vec();
    families.push("kv");
    let engine = RocksEngine::open(dir, &RocksOptions::new(&families)).unwrap();
    let cf = |name: &str| keel_storage::engine::Engine::column_family(&engine, name).unwrap();
    let (kv, history, revs, meta) = (cf("kv"), cf("kv_history"), cf("kv_revs"), cf("meta"));
    let version = |rev: u64, version: u64, value: &str| Record {
        create_revision: Revision::new(2),
        mod_revision: Revision::new(rev),
        sub: 0,
        version,
        lease: None,
        value: bytes::Bytes::copy_from_slice(value.as_bytes()),
        tombstone: false,
    };
    let mut batch = keel_storage::engine::WriteBatch::default();
    for (rev, ver, value) in [(2u64, 1u64, "old"), (3, 2, "new")] {
        batch.put(
            history,
            history_key(b"a", Revision::new(rev)),
            version(rev, ver, value).encode(),
        );
        let mut revs_key = rev.to_be_bytes().to_vec();
        revs_key.extend_from_slice(&0u32.to_be_bytes());
        batch.put(revs, revs_key, b"a");
    }
    // a stale latest-version record: format 2 must read the history instead
    batch.put(kv, b"a", version(2, 1, "stale").encode());
    batch.put(meta, schema::META_FORMAT, [schema::FORMAT_VERSION_1]);
    batch.put(meta, schema::META_REVISION, 3u64.to_be_bytes());
    keel_storage::engine::Engine::write(&engine, batch, Durability::Synced).unwrap();
}

fn entries(engine: &dyn keel_storage::engine::Engine, family: &str) -> Vec<Vec<u8>> {
    let view = engine.view().unwrap();
    let mut out = Vec::new();
    view.scan(
        engine.column_family(family).unwrap(),
        keel_storage::engine::ScanBounds::forward(&[], None),
        &mut |_, v| {
            out.push(v.to_vec());
            Ok(std::ops::ControlFlow::Continue(()))
        },
    )
    .unwrap();
    out
}

/// A store written in format 1 (a `kv` family with each key's latest version, one `kv_revs`
/// entry per change) opens as format 2: reads, watch history, compaction and new writes work
/// on it, and the old `kv` family is no longer read.
#[test]
fn a_format_1_store_opens_and_keeps_working() {
    use keel_storage::codec::Record;
    use keel_storage::schema;

    let dir = tempfile::tempdir().unwrap();
    write_format_1_store(dir.path());
    let store = open(dir.path());
    let got = store.range(&RangeRequest::new(KeyRange::key("a"))).unwrap();
    assert_eq!(got.kvs.len(), 1);
    assert_eq!(got.kvs[0].value.as_ref(), b"new");
    assert_eq!(got.kvs[0].version, 2);
    let (events, covered) = store
        .history(
            &KeyRange::key("a"),
            Revision::new(2),
            Revision::new(3),
            true,
            100,
        )
        .unwrap();
    assert_eq!(covered, Revision::new(3));
    let values: Vec<_> = events.iter().map(|e| e.kv.value.clone()).collect();
    assert_eq!(values, vec!["old", "new"]);
    assert_eq!(events[1].prev_kv.as_ref().unwrap().value.as_ref(), b"old");

    // a write adds a format 2 entry after the format 1 ones
    let put = store.put(PutRequest::new("a", "newer")).unwrap();
    assert_eq!(put.revision, Revision::new(4));
    let (events, _) = store
        .history(
            &KeyRange::key("a"),
            Revision::new(3),
            Revision::new(4),
            false,
            100,
        )
        .unwrap();
    let revisions: Vec<_> = events.iter().map(|e| e.kv.mod_revision.get()).collect();
    assert_eq!(revisions, vec![3, 4]);

    // compaction walks both kinds of index entries and keeps only the latest version
    store.compact(Revision::new(4), true).unwrap();
    let engine = store.engine().as_ref();
    let left: Vec<_> = entries(engine, "kv_history")
        .iter()
        .map(|v| Record::decode(v).unwrap().mod_revision.get())
        .collect();
    assert_eq!(left, vec![4]);
    assert!(
        entries(engine, "kv_revs").is_empty(),
        "compaction at 4 removes the index entries up to 4"
    );
    let view = engine.view().unwrap();
    let format = view
        .get(engine.column_family("meta").unwrap(), schema::META_FORMAT)
        .unwrap();
    assert_eq!(format, Some(vec![schema::FORMAT_VERSION]));
}
