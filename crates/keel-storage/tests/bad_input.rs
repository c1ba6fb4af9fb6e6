//! Bad input gets a typed error and writes nothing; a failed write poisons the store.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failure is a test failure"
)]

use bytes::Bytes;
use keel_storage::engine::{Engine, MemEngine};
use keel_storage::mvcc::{DeleteRequest, PutRequest, RangeRequest, RequestOp, TxnRequest};
use keel_storage::{MvccLimits, MvccStore, StorageError};
use keel_types::{KeyRange, Revision};
use std::sync::Arc;

fn store() -> (Arc<MemEngine>, MvccStore) {
    let engine = Arc::new(MemEngine::new(&MvccStore::COLUMN_FAMILIES));
    let limits = MvccLimits {
        key_bytes_max: 16,
        value_bytes_max: 64,
        request_bytes_max: 256,
        txn_ops_max: 4,
    };
    let store = MvccStore::open_with(
        engine.clone() as Arc<dyn Engine>,
        limits,
        keel_storage::engine::Durability::Synced,
    )
    .unwrap();
    (engine, store)
}

fn assert_unchanged(store: &MvccStore) {
    assert_eq!(store.current_revision().unwrap(), Revision::new(1));
    let all = store.range(&RangeRequest::new(KeyRange::all())).unwrap();
    assert_eq!(all.count, 0);
}

#[test]
fn oversized_and_empty_inputs_are_refused_without_writing() {
    let (_, s) = store();
    assert_eq!(
        s.put(PutRequest::new(Bytes::new(), &b"v"[..])).unwrap_err(),
        StorageError::EmptyKey
    );
    assert!(matches!(
        s.put(PutRequest::new(vec![b'k'; 17], &b"v"[..]))
            .unwrap_err(),
        StorageError::KeyTooLarge {
            len_bytes: 17,
            max_bytes: 16
        }
    ));
    assert!(matches!(
        s.put(PutRequest::new(&b"k"[..], vec![0u8; 65]))
            .unwrap_err(),
        StorageError::ValueTooLarge { .. }
    ));
    let big_txn = TxnRequest {
        success: (0..4)
            .map(|i| RequestOp::Put(PutRequest::new(format!("k{i}"), vec![0u8; 64])))
            .collect(),
        ..TxnRequest::default()
    };
    assert!(matches!(
        s.txn(&big_txn).unwrap_err(),
        StorageError::RequestTooLarge { .. }
    ));
    let many = TxnRequest {
        success: (0..5)
            .map(|i| RequestOp::Put(PutRequest::new(format!("k{i}"), &b"v"[..])))
            .collect(),
        ..TxnRequest::default()
    };
    assert!(matches!(
        s.txn(&many).unwrap_err(),
        StorageError::TooManyOps { count: 5, max: 4 }
    ));
    let dup = TxnRequest {
        success: vec![
            RequestOp::Put(PutRequest::new(&b"a"[..], &b"1"[..])),
            RequestOp::Put(PutRequest::new(&b"a"[..], &b"2"[..])),
        ],
        ..TxnRequest::default()
    };
    assert_eq!(s.txn(&dup).unwrap_err(), StorageError::DuplicateKey);
    let mut ignore = PutRequest::new(&b"missing"[..], Bytes::new());
    ignore.ignore_value = true;
    assert_eq!(s.put(ignore).unwrap_err(), StorageError::KeyNotFound);
    assert!(matches!(
        s.range(&RangeRequest {
            revision: Some(Revision::new(9)),
            ..RangeRequest::new(KeyRange::all())
        }),
        Err(StorageError::FutureRevision { .. })
    ));
    assert_unchanged(&s);
    // a delete of nothing creates no revision; an inverted range is empty, not an error
    let d = s
        .delete_range(&DeleteRequest {
            range: KeyRange::from_etcd(&b"z"[..], &b"a"[..]),
            prev_kv: true,
        })
        .unwrap();
    assert_eq!((d.deleted, d.revision), (0, Revision::new(1)));
    assert_unchanged(&s);
}

#[test]
fn failed_write_poisons_every_later_call() {
    let (engine, s) = store();
    s.put(PutRequest::new(&b"a"[..], &b"1"[..])).unwrap();
    engine.fail_syncs();
    assert!(matches!(
        s.put(PutRequest::new(&b"b"[..], &b"2"[..])).unwrap_err(),
        StorageError::Io { op: "fsync", .. }
    ));
    for err in [
        s.range(&RangeRequest::new(KeyRange::all())).unwrap_err(),
        s.put(PutRequest::new(&b"c"[..], &b"3"[..])).unwrap_err(),
        s.current_revision().unwrap_err(),
    ] {
        assert!(matches!(err, StorageError::Poisoned { .. }), "{err:?}");
        assert!(err.is_fatal());
    }
    // what was acknowledged before the failure survives a restart
    let restarted = MvccStore::open(Arc::new(engine.crash())).unwrap();
    let all = restarted
        .range(&RangeRequest::new(KeyRange::all()))
        .unwrap();
    assert_eq!(all.count, 1);
}
