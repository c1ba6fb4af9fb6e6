//! A crash at every failpoint: each multi-step storage operation (apply of a batch sequence,
//! compaction, snapshot install, log purge and truncation) is run once per write it makes,
//! with the engine dying just before that write ([`MemEngine::fail_after_writes`]). Each
//! crash is restarted twice — from what a killed process leaves (every write that reached the
//! engine: RocksDB's WAL is in the page cache) and from what a power cut leaves (synced writes
//! only) — and the restarted store must be consistent, lose nothing synced, and finish the
//! operation to exactly the state an uninterrupted run reaches.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failure is a test failure"
)]

use keel_storage::engine::{Durability, Engine, MemEngine};
use keel_storage::mvcc::{PutRequest, RangeRequest};
use keel_storage::{DurableLog, LogBounds, LOG_CF};
use keel_storage::{MvccStore, StorageError};
use keel_types::KeyRange;
use std::sync::Arc;

mod support;
use support::dump;

/// The two disks a crash can leave: a killed process's and a power cut's.
fn crash_images(engine: &MemEngine) -> [(&'static str, MemEngine); 2] {
    [
        ("process kill", engine.reopen(&[])),
        ("power cut", engine.crash()),
    ]
}

fn open(engine: Arc<MemEngine>) -> MvccStore {
    MvccStore::open_with(engine, Default::default(), Durability::Synced).unwrap()
}

/// A copy of `base` (as a clean restart finds it) and a store on it.
fn copy(base: &MemEngine) -> (Arc<MemEngine>, MvccStore) {
    let engine = Arc::new(base.reopen(&[]));
    (engine.clone(), open(engine))
}

/// A store with [`support::write_history`].
fn history() -> MemEngine {
    let engine = Arc::new(MemEngine::new(&MvccStore::COLUMN_FAMILIES));
    support::write_history(&open(engine.clone()));
    engine.reopen(&[])
}

/// Run `op` with the engine dying before its `k`-th write, for k = 0, 1, ... until a run
/// completes; hand each crash image to `check`. Returns how many failpoints were hit.
fn at_every_failpoint<T>(
    fresh: impl Fn() -> (Arc<MemEngine>, T),
    op: impl Fn(&T) -> Result<(), StorageError>,
    mut check: impl FnMut(u64, &'static str, MemEngine),
) -> u64 {
    for k in 0.. {
        let (engine, state) = fresh();
        engine.fail_after_writes(k);
        match op(&state) {
            Ok(()) => return k,
            Err(e) => assert!(
                matches!(e, StorageError::Io { .. } | StorageError::Poisoned { .. }),
                "failpoint {k}: unexpected error {e:?}"
            ),
        }
        for (kind, image) in crash_images(&engine) {
            check(k, kind, image);
        }
    }
    unreachable!("the loop only ends by returning")
}

#[test]
fn a_crash_at_every_step_of_a_physical_compaction_resumes_to_the_same_state() {
    let base = history();
    let target = support::COMPACT_TARGET;
    let compact = support::compact;
    let (_, before) = copy(&base);
    let hash_before = before.hash_kv(None).unwrap();
    let (reference, store) = copy(&base);
    compact(&store).unwrap();
    let hash_after = store.hash_kv(None).unwrap();
    let expected = dump(reference.as_ref(), &MvccStore::COLUMN_FAMILIES);

    let hit = at_every_failpoint(
        || copy(&base),
        compact,
        |k, kind, image| {
            let image = Arc::new(image);
            let store = open(image.clone());
            let hash = store.hash_kv(None).unwrap();
            // the latest state never changes under compaction
            let all = store.range(&RangeRequest::new(KeyRange::all())).unwrap();
            assert_eq!(all.count, 39, "failpoint {k}, {kind}");
            if store.compacted_revision().unwrap() == target {
                assert_eq!(hash, hash_after, "failpoint {k}, {kind}");
                // the scheduled compaction resumes from its persisted progress
                while !store.compact_step(7).unwrap() {}
            } else {
                assert_eq!(
                    hash, hash_before,
                    "failpoint {k}, {kind}: a half compaction"
                );
                compact(&store).unwrap();
            }
            let got = dump(image.as_ref(), &MvccStore::COLUMN_FAMILIES);
            assert!(
                got == expected,
                "failpoint {k}, {kind}: resumed compaction differs"
            );
        },
    );
    assert!(
        hit > 10,
        "compaction took only {hit} writes: batches too large to test"
    );
    eprintln!("physical compaction: {hit} failpoints");
}

/// What a snapshot-install test needs, on engines with `families`: the snapshot's chunks
/// (of [`history`]), the state a clean install leaves, and a store with other data to install
/// over (its image and its state).
struct InstallFixture {
    chunks: Vec<Vec<u8>>,
    installed: Vec<Vec<(Vec<u8>, Vec<u8>)>>,
    base: MemEngine,
    old: Vec<Vec<(Vec<u8>, Vec<u8>)>>,
}

fn install_fixture(families: &[&str]) -> InstallFixture {
    let state = MvccStore::COLUMN_FAMILIES;
    let source: Arc<dyn Engine> = Arc::new(history());
    let chunks: Vec<Vec<u8>> = keel_storage::snapshot::export(&source, &state, 512)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let installed = {
        let (engine, store) = copy(&MemEngine::new(families));
        store
            .install_snapshot(chunks.iter().cloned().map(Ok))
            .unwrap();
        dump(engine.as_ref(), &state)
    };
    let base = {
        let (engine, store) = copy(&MemEngine::new(families));
        for k in 0..10u32 {
            store.put(PutRequest::new(format!("old{k}"), "x")).unwrap();
        }
        engine.reopen(&[])
    };
    let old = dump(&base, &state);
    InstallFixture {
        chunks,
        installed,
        base,
        old,
    }
}

#[test]
fn a_crash_at_every_step_of_a_snapshot_install_leaves_the_old_state_or_a_refusal_to_open() {
    let InstallFixture {
        chunks,
        installed,
        base,
        old,
    } = install_fixture(&MvccStore::COLUMN_FAMILIES);
    let mut refused = 0;
    let hit = at_every_failpoint(
        || copy(&base),
        |store| {
            store
                .install_snapshot(chunks.iter().cloned().map(Ok))
                .map(drop)
        },
        |k, kind, image| {
            let image = Arc::new(image);
            match MvccStore::open_with(image.clone(), Default::default(), Durability::Synced) {
                Ok(_) => {
                    let got = dump(image.as_ref(), &MvccStore::COLUMN_FAMILIES);
                    assert!(
                        got == old || got == installed,
                        "failpoint {k}, {kind}: a store opened on a half-installed snapshot"
                    );
                }
                Err(StorageError::IncompleteInstall) => {
                    refused += 1;
                    keel_storage::snapshot::install(image.as_ref(), chunks.iter().cloned().map(Ok))
                        .unwrap();
                    open(image.clone());
                    let got = dump(image.as_ref(), &MvccStore::COLUMN_FAMILIES);
                    assert!(got == installed, "failpoint {k}, {kind}: reinstall differs");
                }
                Err(e) => panic!("failpoint {k}, {kind}: {e:?}"),
            }
        },
    );
    assert!(
        hit > 10,
        "the install took only {hit} writes: chunks too large to test"
    );
    assert!(refused > 0, "no failpoint left a half install");
    eprintln!("unstaged install: {hit} failpoints, {refused} images refused to open");
}

/// The log's state as a reader sees it: bounds and every entry.
fn log_state(log: &DurableLog) -> (LogBounds, Vec<(u64, Vec<u8>)>) {
    let bounds = log.bounds();
    let entries = match (bounds.first, bounds.last) {
        (Some(first), Some(last)) => log.entries(first, last + 1).unwrap(),
        _ => Vec::new(),
    };
    (bounds, entries)
}

#[test]
fn a_crash_at_every_step_of_purge_truncate_and_append_leaves_a_prefix_of_the_steps() {
    let entry = |i: u64| (i, format!("entry {i}").into_bytes());
    let base = {
        let engine = Arc::new(MemEngine::new(&[LOG_CF]));
        let log = DurableLog::open(engine.clone()).unwrap();
        log.append((1..=20).map(entry).collect(), Durability::Synced)
            .unwrap();
        engine.reopen(&[])
    };
    let steps = |log: &DurableLog, upto: usize| -> Result<(), StorageError> {
        let all: [&dyn Fn() -> Result<(), StorageError>; 3] =
            [&|| log.purge_to(8), &|| log.truncate_from(15), &|| {
                log.append((15..=17).map(entry).collect(), Durability::Synced)
            }];
        all.iter().take(upto).try_for_each(|step| step())
    };
    let fresh = || {
        let engine = Arc::new(base.reopen(&[]));
        let log = DurableLog::open(engine.clone()).unwrap();
        (engine, log)
    };
    let expected: Vec<_> = (0..=3)
        .map(|n| {
            let (_, log) = fresh();
            steps(&log, n).unwrap();
            log_state(&log)
        })
        .collect();
    let hit = at_every_failpoint(
        fresh,
        |log| steps(log, 3),
        |k, kind, image| {
            let log = DurableLog::open(Arc::new(image)).unwrap();
            // every step is one synced batch: both crash images hold exactly the first k
            let k = usize::try_from(k).unwrap();
            assert_eq!(log_state(&log), expected[k], "failpoint {k}, {kind}");
        },
    );
    assert_eq!(hit, 3);
}

#[test]
fn a_crash_at_every_applied_batch_keeps_state_and_applied_index_together() {
    let batches = 12u64;
    let apply = support::apply_batches;
    let base = MemEngine::new(&MvccStore::COLUMN_FAMILIES);
    let hashes: Vec<_> = (0..=batches)
        .map(|n| {
            let (_, store) = copy(&base);
            apply(&store, n).unwrap();
            store.hash_kv(None).unwrap().hash
        })
        .collect();
    let hit = at_every_failpoint(
        || copy(&base),
        |store| apply(store, batches),
        |k, kind, image| {
            let store = open(Arc::new(image));
            let applied = (store.applied().unwrap())
                .map_or(0, |a| u64::from_be_bytes(a.try_into().unwrap()) + 1);
            match kind {
                "process kill" => assert_eq!(applied, k, "every written batch survives a kill"),
                _ => assert_eq!(applied, k / 3 * 3, "exactly the synced batches survive"),
            }
            let hash = store.hash_kv(None).unwrap().hash;
            assert_eq!(
                hash, hashes[applied as usize],
                "failpoint {k}, {kind}: state != applied"
            );
        },
    );
    assert_eq!(hit, batches);
}

#[test]
fn with_a_staging_family_a_crash_at_every_step_of_an_install_leaves_the_old_or_the_new_state() {
    let families: Vec<&str> = (MvccStore::COLUMN_FAMILIES.iter().copied())
        .chain([keel_storage::snapshot::STAGING_CF])
        .collect();
    let state = MvccStore::COLUMN_FAMILIES;
    let InstallFixture {
        chunks,
        installed,
        base,
        old,
    } = install_fixture(&families);
    let (mut kept, mut finished) = (0, 0);
    let hit = at_every_failpoint(
        || copy(&base),
        |store| {
            store
                .install_snapshot(chunks.iter().cloned().map(Ok))
                .map(drop)
        },
        |k, kind, image| {
            let image = Arc::new(image);
            // opening finishes an interrupted install from the staged copy
            let store = MvccStore::open_with(image.clone(), Default::default(), Durability::Synced)
                .unwrap_or_else(|e| panic!("failpoint {k}, {kind}: {e:?}"));
            drop(store);
            let got = dump(image.as_ref(), &state);
            if got == old {
                kept += 1;
            } else {
                assert!(
                    got == installed,
                    "failpoint {k}, {kind}: neither old nor installed"
                );
                finished += 1;
            }
        },
    );
    assert!(hit > 10, "the install took only {hit} writes");
    assert!(kept > 0 && finished > 0, "kept {kept}, finished {finished}");
    eprintln!(
        "staged install: {hit} failpoints: {kept} images kept the old state, {finished} finished"
    );
}
