//! A crash at every failpoint, on real RocksDB directories: the failpoint tiers of
//! `failpoints.rs` model a crash with the in-memory engine's images; here the process really
//! dies and RocksDB's own recovery (WAL replay, manifest) rebuilds the state.
//!
//! The test binary re-executes itself as a child (`KEEL_ROCKS_FAILPOINT` set) that opens a
//! copy of a prepared RocksDB directory and runs one operation through an engine that calls
//! `abort()` just before its `k`-th write, for k = 0, 1, ... until a run completes. An abort
//! leaves the disk as SIGKILL does: every write that reached RocksDB is in its WAL (in the page
//! cache), nothing more. The parent reopens the directory and checks what the operation
//! promises. (A power cut, which also loses unsynced writes, is the in-memory tier's.)

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failure is a test failure"
)]

use keel_storage::engine::{Durability, Engine, MemEngine, RocksEngine, RocksOptions};
use keel_storage::mvcc::RangeRequest;
use keel_storage::{MvccStore, StorageError};
use keel_types::KeyRange;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;

mod support;
use support::abort::AbortAt;
use support::dump;

const CHILD_ENV: &str = "KEEL_ROCKS_FAILPOINT";

fn rocks(dir: &Path, families: &[&str]) -> RocksEngine {
    RocksEngine::open(dir, &RocksOptions::new(families)).unwrap()
}

fn open(engine: Arc<dyn Engine>) -> Result<MvccStore, StorageError> {
    MvccStore::open_with(engine, Default::default(), Durability::Synced)
}

/// The families of a store that can take a staged snapshot install.
fn staged_families() -> Vec<&'static str> {
    (MvccStore::COLUMN_FAMILIES.iter().copied())
        .chain([keel_storage::snapshot::STAGING_CF])
        .collect()
}

/// The snapshot the install scenario installs: [`support::write_history`], in 512-byte
/// chunks (the same bytes in every process).
fn history_chunks() -> Vec<Vec<u8>> {
    let source: Arc<dyn Engine> = Arc::new(MemEngine::new(&MvccStore::COLUMN_FAMILIES));
    support::write_history(&open(Arc::clone(&source)).unwrap());
    keel_storage::snapshot::export(&source, &MvccStore::COLUMN_FAMILIES, 512)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// One scenario: the families its directory has, how to prepare the directory, and the
/// operation the child runs (each test checks the crashed directories itself).
struct Scenario {
    families: Vec<&'static str>,
    prepare: fn(&MvccStore),
    operation: fn(&MvccStore) -> Result<(), StorageError>,
}

fn scenario(name: &str) -> Scenario {
    let state = MvccStore::COLUMN_FAMILIES.to_vec();
    match name {
        "compaction" => Scenario {
            families: state,
            prepare: support::write_history,
            operation: support::compact,
        },
        "staged-install" => Scenario {
            families: staged_families(),
            prepare: |store| {
                for k in 0..10u32 {
                    let put = keel_storage::mvcc::PutRequest::new(format!("old{k}"), "x");
                    store.put(put).unwrap();
                }
            },
            operation: |store| {
                store
                    .install_snapshot(history_chunks().into_iter().map(Ok))
                    .map(drop)
            },
        },
        "apply" => Scenario {
            families: state,
            prepare: |_| {},
            operation: |store| support::apply_batches(store, 12),
        },
        other => panic!("no scenario {other}"),
    }
}

/// The child: run the scenario's operation on `dir`, dying before write `k`.
fn child(spec: &str) {
    let mut parts = spec.splitn(3, ' ');
    let (name, k, dir) = (
        parts.next().unwrap(),
        parts.next().unwrap().parse::<u64>().unwrap(),
        parts.next().unwrap(),
    );
    let s = scenario(name);
    let engine = Arc::new(AbortAt::new(rocks(Path::new(dir), &s.families)));
    let store = open(Arc::clone(&engine) as Arc<dyn Engine>).unwrap();
    // armed once the store is open: the failpoints are the operation's writes
    engine.arm(k);
    (s.operation)(&store).unwrap();
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

/// Prepare the scenario's directory once; then, for k = 0, 1, ..., run the operation in a
/// child on a copy that dies before write k, and hand each crashed directory to `check`,
/// until a child completes. Returns how many failpoints were hit.
fn at_every_failpoint(test: &str, name: &str, mut check: impl FnMut(u64, &Path)) -> u64 {
    let s = scenario(name);
    let root = tempfile::tempdir().unwrap();
    let base = root.path().join("base");
    {
        let engine: Arc<dyn Engine> = Arc::new(rocks(&base, &s.families));
        (s.prepare)(&open(engine).unwrap());
    }
    for k in 0.. {
        let dir = root.path().join(format!("crash-{k}"));
        copy_dir(&base, &dir);
        let status = Command::new(std::env::current_exe().unwrap())
            .args([test, "--exact", "--nocapture"])
            .env(CHILD_ENV, format!("{name} {k} {}", dir.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        if status.success() {
            return k;
        }
        assert_eq!(
            status.signal(),
            Some(6),
            "{name}, failpoint {k}: the child failed otherwise ({status:?})"
        );
        check(k, &dir);
        std::fs::remove_dir_all(&dir).unwrap();
    }
    unreachable!("the loop only ends by returning")
}

/// The scenario's state on the in-memory engine, prepared (`run` false) or after the
/// operation ran uninterrupted (what every resumed run must reach).
fn reference(name: &str, run: bool) -> Vec<Vec<(Vec<u8>, Vec<u8>)>> {
    let s = scenario(name);
    let engine = Arc::new(MemEngine::new(&s.families));
    let store = open(engine.clone()).unwrap();
    (s.prepare)(&store);
    if run {
        (s.operation)(&store).unwrap();
    }
    dump(engine.as_ref(), &MvccStore::COLUMN_FAMILIES)
}

#[test]
fn rocksdb_killed_at_every_write_of_a_compaction_resumes_to_the_same_state() {
    if let Ok(spec) = std::env::var(CHILD_ENV) {
        return child(&spec);
    }
    let expected = reference("compaction", true);
    let hit = at_every_failpoint(
        "rocksdb_killed_at_every_write_of_a_compaction_resumes_to_the_same_state",
        "compaction",
        |k, dir| {
            let engine: Arc<dyn Engine> = Arc::new(rocks(dir, &MvccStore::COLUMN_FAMILIES));
            let store = open(Arc::clone(&engine)).unwrap();
            let all = store.range(&RangeRequest::new(KeyRange::all())).unwrap();
            assert_eq!(all.count, 39, "failpoint {k}: the latest state changed");
            if store.compacted_revision().unwrap() == support::COMPACT_TARGET {
                // scheduled before the crash: resumes from its persisted progress
                while !store.compact_step(7).unwrap() {}
            } else {
                support::compact(&store).unwrap();
            }
            let got = dump(engine.as_ref(), &MvccStore::COLUMN_FAMILIES);
            assert!(got == expected, "failpoint {k}: resumed compaction differs");
        },
    );
    assert!(hit > 10, "compaction took only {hit} writes");
    eprintln!("compaction on RocksDB: {hit} failpoints");
}

#[test]
fn rocksdb_killed_at_every_write_of_a_staged_install_keeps_the_old_or_the_new_state() {
    if let Ok(spec) = std::env::var(CHILD_ENV) {
        return child(&spec);
    }
    let old = reference("staged-install", false);
    let installed = reference("staged-install", true);
    let (mut kept, mut finished) = (0, 0);
    let hit = at_every_failpoint(
        "rocksdb_killed_at_every_write_of_a_staged_install_keeps_the_old_or_the_new_state",
        "staged-install",
        |k, dir| {
            let engine: Arc<dyn Engine> = Arc::new(rocks(dir, &staged_families()));
            // opening finishes an interrupted install from the staged copy
            open(Arc::clone(&engine)).unwrap_or_else(|e| panic!("failpoint {k}: {e:?}"));
            let got = dump(engine.as_ref(), &MvccStore::COLUMN_FAMILIES);
            if got == installed {
                finished += 1;
            } else {
                assert!(
                    got == old,
                    "failpoint {k}: neither the old nor the installed state"
                );
                kept += 1;
            }
        },
    );
    assert!(hit > 10, "the install took only {hit} writes");
    assert!(kept > 0 && finished > 0, "kept {kept}, finished {finished}");
    eprintln!("staged install on RocksDB: {hit} failpoints, {kept} kept, {finished} finished");
}

#[test]
fn rocksdb_killed_at_every_applied_batch_keeps_every_written_batch_whole() {
    if let Ok(spec) = std::env::var(CHILD_ENV) {
        return child(&spec);
    }
    let hashes: Vec<u32> = (0..=12)
        .map(|n| {
            let store = open(Arc::new(MemEngine::new(&MvccStore::COLUMN_FAMILIES))).unwrap();
            support::apply_batches(&store, n).unwrap();
            store.hash_kv(None).unwrap().hash
        })
        .collect();
    let hit = at_every_failpoint(
        "rocksdb_killed_at_every_applied_batch_keeps_every_written_batch_whole",
        "apply",
        |k, dir| {
            let store = open(Arc::new(rocks(dir, &MvccStore::COLUMN_FAMILIES))).unwrap();
            let applied = (store.applied().unwrap())
                .map_or(0, |a| u64::from_be_bytes(a.try_into().unwrap()) + 1);
            // a killed process keeps every batch that reached RocksDB, synced or not
            assert_eq!(applied, k, "failpoint {k}");
            let hash = store.hash_kv(None).unwrap().hash;
            assert_eq!(hash, hashes[k as usize], "failpoint {k}: state != applied");
        },
    );
    assert_eq!(hit, 12);
}
