//! Lease records through real storage: a RocksDB directory (close and reopen) and the
//! in-memory engine's crash (only synced batches survive). One applied entry = one batch.

#![expect(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use bytes::Bytes;
use keel_lease::{codec, Checkpoint, LeaseStore, Lessor, LessorConfig, LEASE_CF};
use keel_storage::engine::{Durability, Engine, MemEngine, RocksEngine, RocksOptions, WriteBatch};
use keel_types::{Clock, LeaseId, ManualClock};
use std::time::Duration;

fn id(n: i64) -> LeaseId {
    LeaseId::new(n).unwrap()
}

/// Apply one "entry" to the lessor and write its changes (plus a KV put standing for the
/// node's own records) as one batch.
fn apply<E: Engine>(
    engine: &E,
    lessor: &mut Lessor,
    durability: Durability,
    entry: impl FnOnce(&mut Lessor),
) {
    let store = LeaseStore::open(engine).unwrap();
    let kv = engine.column_family("kv").unwrap();
    entry(lessor);
    let mut batch = WriteBatch::default();
    batch.put(kv, b"applied", b"1");
    store.stage(&mut batch, lessor.drain_changes());
    engine.write(batch, durability).unwrap();
}

/// A history touching every kind of record: generated and negative ids, attach, detach,
/// re-put with another lease, renew, checkpoint, revoke with attachments.
fn history<E: Engine>(engine: &E, lessor: &mut Lessor, clock: &ManualClock) -> LeaseId {
    let now = clock.now();
    apply(engine, lessor, Durability::Synced, |l| {
        l.grant(Some(id(-7)), 100, now).unwrap();
        l.grant(Some(id(i64::MAX)), 50, now).unwrap();
        l.grant(Some(id(3)), 30, now).unwrap();
    });
    let mut generated = None;
    apply(engine, lessor, Durability::Synced, |l| {
        generated = Some(l.grant(None, 200, now).unwrap().id);
    });
    let generated = generated.unwrap();
    apply(engine, lessor, Durability::Synced, |l| {
        for (lease, key) in [(-7, "a"), (-7, "b"), (i64::MAX, "m"), (3, "x"), (3, "y")] {
            l.attach(id(lease), Bytes::from(key)).unwrap();
        }
        l.attach(generated, "g".into()).unwrap();
    });
    apply(engine, lessor, Durability::Synced, |l| {
        // Re-put of "b" under lease 3; delete of "m".
        l.detach(id(-7), b"b").unwrap();
        l.attach(id(3), "b".into()).unwrap();
        l.detach(id(i64::MAX), b"m").unwrap();
    });
    clock.advance(Duration::from_secs(61));
    let now = clock.now();
    apply(engine, lessor, Durability::Synced, |l| {
        l.renew(id(3), now).unwrap();
        l.apply_checkpoint(&Checkpoint {
            id: id(-7),
            renew_count: l.lease(id(-7)).unwrap().renew_count,
            remaining: Duration::from_secs(39),
        });
    });
    apply(engine, lessor, Durability::Synced, |l| {
        assert_eq!(
            l.revoke(id(3)).unwrap(),
            vec![Bytes::from("b"), Bytes::from("x"), Bytes::from("y")]
        );
    });
    generated
}

#[test]
fn round_trip_through_a_rocksdb_directory() {
    let dir = tempfile::tempdir().unwrap();
    let options = RocksOptions::new(&[LEASE_CF, "kv"]);
    let clock = ManualClock::new();
    let config = LessorConfig {
        id_seed: 11,
        ..LessorConfig::default()
    };
    let mut lessor = Lessor::new(config.clone()).unwrap();
    let generated = {
        let engine = RocksEngine::open(dir.path(), &options).unwrap();
        history(&engine, &mut lessor, &clock)
    };
    let engine = RocksEngine::open(dir.path(), &options).unwrap();
    let store = LeaseStore::open(&engine).unwrap();
    let view = engine.view().unwrap();
    let mut loaded = store.load_lessor(&*view, config).unwrap();
    loaded.check_invariants();
    assert_eq!(loaded.to_persisted(), lessor.to_persisted());
    assert_eq!(
        loaded.leases(),
        vec![id(-7), generated, id(i64::MAX)],
        "sorted by id"
    );
    assert_eq!(
        loaded.time_to_live(id(-7), clock.now(), true).unwrap().keys,
        vec![Bytes::from("a")]
    );
    assert!(loaded
        .time_to_live(id(i64::MAX), clock.now(), true)
        .unwrap()
        .keys
        .is_empty());
    // The revoke removed lease 3's record and its attachments (range delete).
    let cf = store.column_family();
    assert_eq!(view.get(cf, &codec::lease_key(id(3))).unwrap(), None);
    assert_eq!(
        view.get(cf, &codec::attachment_key(id(3), b"x")).unwrap(),
        None
    );
    // The id generator continues where it was.
    let next_original = lessor.grant(None, 10, clock.now()).unwrap().id;
    assert_eq!(
        loaded.grant(None, 10, clock.now()).unwrap().id,
        next_original
    );
    // A new primary resumes the checkpointed remaining TTL (39 s) plus the 1 s grace.
    let mut primary = store.load_lessor(&*view, loaded.config().clone()).unwrap();
    primary.promote(clock.now());
    clock.advance(Duration::from_millis(39_900));
    assert!(primary.tick(clock.now(), 10).expired.is_empty());
    clock.advance(Duration::from_millis(100));
    let expired: Vec<LeaseId> = primary
        .tick(clock.now(), 10)
        .expired
        .iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(expired, vec![id(-7)]);
}

#[test]
fn mem_engine_crash_keeps_exactly_the_synced_entries() {
    let engine = MemEngine::new(&[LEASE_CF, "kv"]);
    let clock = ManualClock::new();
    let config = LessorConfig::default();
    let mut lessor = Lessor::new(config.clone()).unwrap();
    history(&engine, &mut lessor, &clock);
    let synced = lessor.to_persisted();
    // Two more entries, written but not synced: lost by the crash.
    apply(&engine, &mut lessor, Durability::Buffered, |l| {
        l.grant(Some(id(99)), 10, clock.now()).unwrap();
        l.attach(id(99), "lost".into()).unwrap();
    });
    apply(&engine, &mut lessor, Durability::Buffered, |l| {
        l.revoke(id(-7)).unwrap();
    });
    assert!(engine.has_unsynced());
    let restarted = engine.crash();
    let store = LeaseStore::open(&restarted).unwrap();
    let loaded = store
        .load_lessor(&*restarted.view().unwrap(), config.clone())
        .unwrap();
    assert_eq!(loaded.to_persisted(), synced);
    // A clean reopen keeps them.
    let reopened = engine.reopen(&[]);
    let loaded = store
        .load_lessor(&*reopened.view().unwrap(), config)
        .unwrap();
    assert_eq!(loaded.to_persisted(), lessor.to_persisted());
}

#[test]
fn corrupted_records_fail_the_load_as_fatal() {
    let engine = MemEngine::new(&[LEASE_CF, "kv"]);
    let store = LeaseStore::open(&engine).unwrap();
    let cf = store.column_family();
    let mut batch = WriteBatch::default();
    batch.put(cf, codec::lease_key(id(1)), vec![1, 2, 3]);
    engine.write(batch, Durability::Synced).unwrap();
    let err = store
        .load_lessor(&*engine.view().unwrap(), LessorConfig::default())
        .unwrap_err();
    assert!(err.is_fatal(), "{err}");
    assert!(err.to_string().contains("corrupted lease record"), "{err}");

    let engine = MemEngine::new(&[LEASE_CF]);
    let mut batch = WriteBatch::default();
    batch.put(
        cf,
        codec::attachment_key(id(5), b"k"),
        codec::encode_attachment(),
    );
    engine.write(batch, Durability::Synced).unwrap();
    let err = store
        .load_lessor(&*engine.view().unwrap(), LessorConfig::default())
        .unwrap_err();
    assert!(err.to_string().contains("unknown lease"), "{err}");

    let without_cf = MemEngine::new(&["kv"]);
    assert!(LeaseStore::open(&without_cf).is_err());
}
