//! keel-storage against raw RocksDB doing the equivalent work, in the same run.
//!
//! Run: `cargo bench -p keel-benches --bench storage`. Each pair of benchmarks shares a group,
//! so criterion's report puts the MVCC figure next to its raw baseline.

#![allow(
    clippy::expect_used,
    missing_docs,
    reason = "benchmark harness: setup failures abort the run"
)]

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use keel_storage::engine::{Durability, RocksEngine, RocksOptions};
use keel_storage::mvcc::{
    Compare, CompareOp, CompareTarget, PutRequest, RangeRequest, RequestOp, TxnRequest,
};
use keel_storage::watch::WatchSpec;
use keel_storage::MvccStore;
use keel_types::{KeyRange, Revision};
use std::sync::Arc;
use std::time::Duration;

const VALUE_BYTES: usize = 100;
const PRELOAD_KEYS: u64 = 100_000;

fn key(i: u64) -> Vec<u8> {
    format!("key/{i:012}").into_bytes()
}

/// The same options keel's engine opens RocksDB with.
fn raw_options() -> rocksdb::Options {
    let mut opts = rocksdb::Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    opts.set_max_background_jobs(2);
    opts.set_bytes_per_sync(1 << 20);
    let cache = rocksdb::Cache::new_lru_cache(64 << 20);
    let mut table = rocksdb::BlockBasedOptions::default();
    table.set_block_cache(&cache);
    table.set_bloom_filter(10.0, false);
    opts.set_block_based_table_factory(&table);
    opts
}

fn raw_db(dir: &std::path::Path) -> rocksdb::DB {
    rocksdb::DB::open(&raw_options(), dir).expect("open raw rocksdb")
}

fn mvcc(dir: &std::path::Path) -> Arc<MvccStore> {
    let engine = RocksEngine::open(dir, &RocksOptions::new(&MvccStore::COLUMN_FAMILIES))
        .expect("open engine");
    Arc::new(
        MvccStore::open_with(Arc::new(engine), Default::default(), Durability::Buffered)
            .expect("open store"),
    )
}

fn unsynced() -> rocksdb::WriteOptions {
    let mut w = rocksdb::WriteOptions::default();
    w.set_sync(false);
    w
}

/// A deterministic pseudo-random sequence (xorshift), so runs are comparable.
struct Rng(u64);
impl Rng {
    fn next(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % bound
    }
}

fn puts(c: &mut Criterion) {
    // keel takes values as `Bytes`: a clone shares the buffer, as a caller's would
    let value = Bytes::from(vec![7u8; VALUE_BYTES]);
    for batch in [1u64, 100] {
        let mut g = c.benchmark_group(format!("put_batch_{batch}"));
        g.throughput(Throughput::Elements(batch));
        let dir = tempfile::tempdir().expect("tempdir");
        let store = mvcc(dir.path());
        let mut i = 0u64;
        g.bench_function("keel_mvcc", |b| {
            b.iter(|| {
                let mut txn = store.begin().expect("begin");
                for _ in 0..batch {
                    txn.put(PutRequest::new(key(i % PRELOAD_KEYS), value.clone()))
                        .expect("put");
                    i += 1;
                }
                txn.commit(Durability::Buffered).expect("commit");
            })
        });
        let raw_dir = tempfile::tempdir().expect("tempdir");
        let db = raw_db(raw_dir.path());
        let mut j = 0u64;
        g.bench_function("raw_rocksdb", |b| {
            b.iter(|| {
                let mut wb = rocksdb::WriteBatch::default();
                for _ in 0..batch {
                    wb.put(key(j % PRELOAD_KEYS), &value);
                    j += 1;
                }
                db.write_opt(wb, &unsynced()).expect("write");
            })
        });
        // Not the target's baseline: raw RocksDB writing the records keel's layout writes
        // (one history record per put, one revision-index entry listing the batch's keys,
        // the revision marker), to show how much of the gap is the layout and how much
        // keel's own code.
        let layout_dir = tempfile::tempdir().expect("tempdir");
        let layout = raw_layout_db(layout_dir.path());
        let cfs: Vec<_> = LAYOUT_CFS
            .iter()
            .map(|n| layout.cf_handle(n).expect("cf"))
            .collect();
        let record = vec![7u8; VALUE_BYTES + 30];
        let mut rev = 1u64;
        g.bench_function("raw_rocksdb_keel_records", |b| {
            b.iter(|| {
                let mut wb = rocksdb::WriteBatch::default();
                rev += 1;
                let mut keys = Vec::new();
                for sub in 0..batch {
                    let k = key((rev * batch + sub) % PRELOAD_KEYS);
                    let mut hk = k.clone();
                    hk.extend_from_slice(&[0, 1]);
                    hk.extend_from_slice(&(!rev).to_be_bytes());
                    wb.put_cf(cfs[0], &hk, &record);
                    keys.extend_from_slice(&(k.len() as u32).to_be_bytes());
                    keys.extend_from_slice(&k);
                }
                wb.put_cf(cfs[1], rev.to_be_bytes(), &keys);
                wb.put_cf(cfs[2], b"revision", rev.to_be_bytes());
                layout.write_opt(wb, &unsynced()).expect("write");
            })
        });
        g.finish();
    }
}

const LAYOUT_CFS: [&str; 3] = ["kv_history", "kv_revs", "meta"];

fn raw_layout_db(dir: &std::path::Path) -> rocksdb::DB {
    rocksdb::DB::open_cf(&raw_options(), dir, LAYOUT_CFS).expect("open raw rocksdb")
}

/// Both stores hold PRELOAD_KEYS keys, each written twice (so an old revision exists).
fn preloaded() -> (
    tempfile::TempDir,
    Arc<MvccStore>,
    tempfile::TempDir,
    rocksdb::DB,
) {
    let value = vec![7u8; VALUE_BYTES];
    let dir = tempfile::tempdir().expect("tempdir");
    let store = mvcc(dir.path());
    let raw_dir = tempfile::tempdir().expect("tempdir");
    let db = raw_db(raw_dir.path());
    for round in 0..2u64 {
        for chunk in 0..(PRELOAD_KEYS / 1000) {
            let mut txn = store.begin().expect("begin");
            let mut wb = rocksdb::WriteBatch::default();
            for k in chunk * 1000..(chunk + 1) * 1000 {
                txn.put(PutRequest::new(key(k), value.clone()))
                    .expect("put");
                // raw baseline of a versioned layout: key ++ inverted revision
                let mut vk = key(k);
                vk.extend_from_slice(&(!(round * 1000 + chunk)).to_be_bytes());
                wb.put(vk, &value);
                wb.put(key(k), &value);
            }
            txn.commit(Durability::Buffered).expect("commit");
            db.write_opt(wb, &unsynced()).expect("write");
        }
    }
    (dir, store, raw_dir, db)
}

fn reads(c: &mut Criterion) {
    let (_d1, store, _d2, db) = preloaded();
    let old = Revision::new(50); // inside the first round
    let mut g = c.benchmark_group("get_latest");
    g.throughput(Throughput::Elements(1));
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    g.bench_function("keel_mvcc", |b| {
        b.iter(|| {
            let req = RangeRequest::new(KeyRange::key(key(rng.next(PRELOAD_KEYS))));
            store.range(&req).expect("range")
        })
    });
    g.bench_function("raw_rocksdb", |b| {
        b.iter(|| db.get(key(rng.next(PRELOAD_KEYS))).expect("get"))
    });
    // keel reads a key's latest version with a seek into its history: the same in raw form
    g.bench_function("raw_rocksdb_seek_latest", |b| {
        b.iter(|| {
            let k = key(rng.next(PRELOAD_KEYS));
            let mut lo = k.clone();
            lo.extend_from_slice(&0u64.to_be_bytes());
            let mut it = db.raw_iterator();
            it.seek(&lo);
            it.valid() && it.key().is_some_and(|x| x.starts_with(&k))
        })
    });
    g.finish();

    let mut g = c.benchmark_group("get_old_revision");
    g.throughput(Throughput::Elements(1));
    g.bench_function("keel_mvcc", |b| {
        b.iter(|| {
            let req = RangeRequest {
                revision: Some(old),
                ..RangeRequest::new(KeyRange::key(key(rng.next(PRELOAD_KEYS))))
            };
            store.range(&req).expect("range")
        })
    });
    g.bench_function("raw_rocksdb_seek", |b| {
        b.iter(|| {
            let k = key(rng.next(PRELOAD_KEYS));
            let mut lo = k.clone();
            lo.extend_from_slice(&(!old.get()).to_be_bytes());
            let mut it = db.raw_iterator();
            it.seek(&lo);
            it.valid() && it.key().is_some_and(|x| x.starts_with(&k))
        })
    });
    g.finish();

    range_and_txn(c, &store, &db, &mut rng);
    new_key_puts(c, &store, &db);
}

/// Puts of keys never written before, on the preloaded stores: keel must find that the key
/// has no previous version (a read of a missing key) before writing it.
fn new_key_puts(c: &mut Criterion, store: &MvccStore, db: &rocksdb::DB) {
    let value = Bytes::from(vec![7u8; VALUE_BYTES]);
    let mut g = c.benchmark_group("put_new_key");
    g.throughput(Throughput::Elements(1));
    let mut i = PRELOAD_KEYS;
    g.bench_function("keel_mvcc", |b| {
        b.iter(|| {
            let mut txn = store.begin().expect("begin");
            txn.put(PutRequest::new(key(i), value.clone()))
                .expect("put");
            i += 1;
            txn.commit(Durability::Buffered).expect("commit");
        })
    });
    let mut j = PRELOAD_KEYS;
    g.bench_function("raw_rocksdb", |b| {
        b.iter(|| {
            db.put_opt(key(j), &value, &unsynced()).expect("put");
            j += 1;
        })
    });
    g.finish();
}

fn range_and_txn(c: &mut Criterion, store: &MvccStore, db: &rocksdb::DB, rng: &mut Rng) {
    let mut g = c.benchmark_group("range_1000_keys");
    g.throughput(Throughput::Elements(1000));
    g.bench_function("keel_mvcc", |b| {
        b.iter(|| {
            let start = rng.next(PRELOAD_KEYS - 1000);
            let req = RangeRequest::new(KeyRange::Span {
                start: Bytes::from(key(start)),
                end: Bytes::from(key(start + 1000)),
            });
            store.range(&req).expect("range")
        })
    });
    g.bench_function("raw_rocksdb", |b| {
        b.iter(|| {
            let start = rng.next(PRELOAD_KEYS - 1000);
            let mut opts = rocksdb::ReadOptions::default();
            opts.set_iterate_upper_bound(key(start + 1000));
            let mut it = db.raw_iterator_opt(opts);
            it.seek(key(start));
            let mut n = 0;
            while it.valid() {
                n += it.value().map_or(0, |v| v.len());
                it.next();
            }
            n
        })
    });
    g.finish();

    let mut g = c.benchmark_group("txn_compare_and_put");
    g.throughput(Throughput::Elements(1));
    let value = Bytes::from(vec![7u8; VALUE_BYTES]);
    g.bench_function("keel_mvcc", |b| {
        b.iter(|| {
            let k = Bytes::from(key(rng.next(PRELOAD_KEYS)));
            let req = TxnRequest {
                compare: vec![Compare {
                    range: KeyRange::Key(k.clone()),
                    op: CompareOp::Greater,
                    target: CompareTarget::Version(0),
                }],
                success: vec![RequestOp::Put(PutRequest::new(k, value.clone()))],
                failure: vec![],
            };
            store.txn(&req).expect("txn")
        })
    });
    g.bench_function("raw_rocksdb_get_then_put", |b| {
        b.iter(|| {
            let k = key(rng.next(PRELOAD_KEYS));
            if db.get(&k).expect("get").is_some() {
                db.put_opt(&k, &value, &unsynced()).expect("put");
            }
        })
    });
    g.finish();
}

fn open_time(c: &mut Criterion) {
    let mut g = c.benchmark_group("open");
    g.sample_size(10);
    let value = vec![7u8; VALUE_BYTES];
    for keys in [100_000u64, 1_000_000] {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let engine =
                RocksEngine::open(dir.path(), &RocksOptions::new(&MvccStore::COLUMN_FAMILIES))
                    .expect("open");
            let engine = Arc::new(engine);
            let store = MvccStore::open(engine.clone()).expect("store");
            for chunk in 0..(keys / 10_000) {
                let mut txn = store.begin().expect("begin");
                for k in chunk * 10_000..(chunk + 1) * 10_000 {
                    txn.put(PutRequest::new(key(k), value.clone()))
                        .expect("put");
                }
                txn.commit(Durability::Buffered).expect("commit");
            }
            engine.flush().expect("flush");
        }
        g.bench_function(format!("keel_mvcc_{keys}_keys"), |b| {
            b.iter(|| {
                let engine =
                    RocksEngine::open(dir.path(), &RocksOptions::new(&MvccStore::COLUMN_FAMILIES))
                        .expect("open");
                let store = MvccStore::open(Arc::new(engine)).expect("store");
                store.current_revision().expect("rev")
            })
        });
    }
    g.finish();
}

fn watch_fanout(c: &mut Criterion) {
    const WATCHERS: u64 = 10_000;
    let mut g = c.benchmark_group("watch_fanout_10000_watchers");
    g.sample_size(10);
    g.throughput(Throughput::Elements(WATCHERS));
    let dir = tempfile::tempdir().expect("tempdir");
    let store = mvcc(dir.path());
    let mut watchers: Vec<_> = (0..WATCHERS)
        .map(|_| {
            store
                .watch(WatchSpec::new(KeyRange::prefix(&b"fan/"[..])))
                .expect("watch")
        })
        .collect();
    let mut i = 0u64;
    g.bench_function("put_then_deliver_to_all", |b| {
        b.iter_batched(
            || {
                i += 1;
                i
            },
            |i| {
                store
                    .put(PutRequest::new(format!("fan/{}", i % 100), vec![1u8; 16]))
                    .expect("put");
                let mut delivered = 0usize;
                for w in &mut watchers {
                    while let Some(batch) = w.poll().expect("poll") {
                        delivered += batch.events.len();
                    }
                }
                assert_eq!(delivered as u64, WATCHERS);
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .sample_size(20)
}

criterion_group! {
    name = benches;
    config = config();
    targets = puts, reads, open_time, watch_fanout
}
criterion_main!(benches);
