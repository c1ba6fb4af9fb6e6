//! Single-key reads at the latest revision are answered from the latest-version cache when
//! it holds the key. These tests hold every such answer against the engine's own answer at
//! the same revision (a one-key span, which the cache never answers), under concurrent
//! commits, and check that what empties the cache (a snapshot install, a failed write)
//! leaves no stale answer behind.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failure is a test failure"
)]

use keel_storage::engine::{Durability, Engine, MemEngine, RocksEngine, RocksOptions};
use keel_storage::mvcc::{DeleteRequest, KeyValue, PutRequest, RangeRequest, RangeResponse};
use keel_storage::MvccStore;
use keel_types::{KeyRange, Revision};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

const KEYS: u64 = 8;

fn key(i: u64) -> Vec<u8> {
    format!("k{i}").into_bytes()
}

fn get(store: &MvccStore, k: &[u8]) -> RangeResponse {
    store
        .range(&RangeRequest::new(KeyRange::key(k.to_vec())))
        .unwrap()
}

/// The engine's answer for `k` at `rev`: a span holding only `k`, never served by the cache.
fn engine_get(store: &MvccStore, k: &[u8], rev: Revision) -> Option<KeyValue> {
    let mut end = k.to_vec();
    end.push(0);
    let resp = store
        .range(&RangeRequest {
            revision: Some(rev),
            ..RangeRequest::new(KeyRange::Span {
                start: k.to_vec().into(),
                end: end.into(),
            })
        })
        .unwrap();
    resp.kvs.into_iter().next()
}

/// A small deterministic generator (xorshift), so the write sequence is the same every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// One reader: single-key reads over the keys, starting at key `first`, until `done` (and at
/// least 100). Checks what a read shows on its own; returns every (key, revision, answer).
fn read_until(store: &MvccStore, done: &AtomicBool, first: u64) -> Seen {
    let mut seen = Vec::new();
    let mut last = Revision::new(0);
    let mut i = first;
    while !done.load(Ordering::Acquire) || seen.len() < 100 {
        let k = key(i % KEYS);
        let resp = get(store, &k);
        assert!(
            resp.revision >= last,
            "revisions go back: {last:?} then {:?}",
            resp.revision
        );
        last = resp.revision;
        if let Some(kv) = resp.kvs.first() {
            assert!(kv.mod_revision <= resp.revision);
            // every value names the revision that wrote it
            assert_eq!(
                kv.value.as_ref(),
                kv.mod_revision.get().to_string().as_bytes()
            );
        }
        seen.push((k, resp.revision, resp.kvs.into_iter().next()));
        i += 1;
    }
    seen
}

type Seen = Vec<(Vec<u8>, Revision, Option<KeyValue>)>;

#[test]
fn reads_during_commits_match_the_engine_at_their_revision() {
    let dir = tempfile::tempdir().unwrap();
    let engine: Arc<dyn Engine> = Arc::new(
        RocksEngine::open(dir.path(), &RocksOptions::new(&MvccStore::COLUMN_FAMILIES)).unwrap(),
    );
    let store =
        Arc::new(MvccStore::open_with(engine, Default::default(), Durability::Buffered).unwrap());
    let done = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|r| {
            let (store, done) = (Arc::clone(&store), Arc::clone(&done));
            std::thread::spawn(move || read_until(&store, &done, r))
        })
        .collect();
    let mut rng = Rng(0x5eed_cafe);
    for _ in 0..5_000 {
        let k = key(rng.next() % KEYS);
        let rev = store.current_revision().unwrap().get() + 1;
        if rng.next() % 4 == 0 {
            store
                .delete_range(&DeleteRequest {
                    range: KeyRange::key(k),
                    prev_kv: false,
                })
                .unwrap();
        } else {
            store
                .put(PutRequest::new(k, rev.to_string().into_bytes()))
                .unwrap();
        }
    }
    done.store(true, Ordering::Release);
    let mut checked = 0;
    for reader in readers {
        for (k, rev, kv) in reader.join().unwrap() {
            assert_eq!(kv, engine_get(&store, &k, rev), "key {k:?} at {rev:?}");
            checked += 1;
        }
    }
    assert!(checked >= 200);
    // and the cache ends equal to the engine for every key
    let current = store.current_revision().unwrap();
    for i in 0..KEYS {
        let resp = get(&store, &key(i));
        assert_eq!(resp.revision, current);
        assert_eq!(
            resp.kvs.into_iter().next(),
            engine_get(&store, &key(i), current)
        );
    }
}

#[test]
fn a_snapshot_install_replaces_cached_answers() {
    let fresh = || {
        let engine = Arc::new(MemEngine::new(&MvccStore::COLUMN_FAMILIES));
        let store =
            MvccStore::open_with(engine.clone(), Default::default(), Durability::Synced).unwrap();
        (engine, store)
    };
    let (_, store) = fresh();
    store.put(PutRequest::new(&b"a"[..], &b"old"[..])).unwrap();
    store.put(PutRequest::new(&b"gone"[..], &b"x"[..])).unwrap();
    // both keys cached: "a" by the put, "missing" by a read that found nothing
    assert_eq!(get(&store, b"a").kvs[0].value.as_ref(), b"old");
    assert!(get(&store, b"missing").kvs.is_empty());

    let (source_engine, source) = fresh();
    source.put(PutRequest::new(&b"a"[..], &b"new"[..])).unwrap();
    source
        .put(PutRequest::new(&b"missing"[..], &b"here"[..]))
        .unwrap();
    source
        .put(PutRequest::new(&b"a"[..], &b"newer"[..]))
        .unwrap();
    let source_engine: Arc<dyn Engine> = source_engine;
    let chunks: Vec<Vec<u8>> =
        keel_storage::snapshot::export(&source_engine, &MvccStore::COLUMN_FAMILIES, 512)
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
    store.install_snapshot(chunks.into_iter().map(Ok)).unwrap();

    let a = get(&store, b"a");
    assert_eq!(a.revision, Revision::new(4));
    assert_eq!(a.kvs[0].value.as_ref(), b"newer");
    assert_eq!(get(&store, b"missing").kvs[0].value.as_ref(), b"here");
    assert!(get(&store, b"gone").kvs.is_empty());
}

#[test]
fn a_failed_write_leaves_no_cached_answer() {
    let engine = Arc::new(MemEngine::new(&MvccStore::COLUMN_FAMILIES));
    let store =
        MvccStore::open_with(engine.clone(), Default::default(), Durability::Synced).unwrap();
    store.put(PutRequest::new(&b"a"[..], &b"1"[..])).unwrap();
    assert_eq!(get(&store, b"a").kvs[0].value.as_ref(), b"1");
    engine.fail_writes();
    assert!(store.put(PutRequest::new(&b"a"[..], &b"2"[..])).is_err());
    // the engine is poisoned: reads fail too, the cached key included
    assert!(store
        .range(&RangeRequest::new(KeyRange::key(&b"a"[..])))
        .is_err());
}
