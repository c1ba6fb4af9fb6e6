//! kill -9 of a real child process in the middle of writes: after reopen the state is a
//! prefix of the applied batches, nothing acknowledged (synced) is lost, nothing is corrupt.
//!
//! The test binary re-executes itself as the child (`KEEL_CRASH_CHILD_DIR` set), which
//! writes batches forever and prints `ack <i>` after each synced commit.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failure is a test failure"
)]

use keel_storage::engine::{Durability, RocksEngine, RocksOptions};
use keel_storage::mvcc::{PutRequest, RangeRequest};
use keel_storage::MvccStore;
use keel_types::KeyRange;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;

const CHILD_ENV: &str = "KEEL_CRASH_CHILD_DIR";

fn open(dir: &std::path::Path) -> MvccStore {
    let engine = RocksEngine::open(dir, &RocksOptions::new(&MvccStore::COLUMN_FAMILIES)).unwrap();
    MvccStore::open(Arc::new(engine)).unwrap()
}

/// Batch `i` writes keys `b<i>/0..4` and marks `i` applied. Every 3rd batch is synced and
/// acknowledged; the others are buffered (they may or may not survive, but only as a prefix).
fn child(dir: &str) {
    let store = open(std::path::Path::new(dir));
    let mut out = std::io::stdout().lock();
    for i in 0u64.. {
        let mut txn = store.begin().unwrap();
        for k in 0..4 {
            txn.put(PutRequest::new(format!("b{i:08}/{k}"), vec![b'x'; 100]))
                .unwrap();
        }
        txn.set_applied(&i.to_be_bytes());
        let synced = i % 3 == 0;
        txn.commit(if synced {
            Durability::Synced
        } else {
            Durability::Buffered
        })
        .unwrap();
        if synced {
            writeln!(out, "ack {i}").unwrap();
            out.flush().unwrap();
        }
    }
}

#[test]
fn sigkill_mid_writes_loses_nothing_acknowledged() {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        child(&dir);
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut proc = Command::new(std::env::current_exe().unwrap())
        .args([
            "sigkill_mid_writes_loses_nothing_acknowledged",
            "--exact",
            "--nocapture",
        ])
        .env(CHILD_ENV, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = proc.stdout.take().unwrap();
    let mut last_ack = None;
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        if let Some(n) = line.strip_prefix("ack ") {
            let n: u64 = n.parse().unwrap();
            last_ack = Some(n);
            if n >= 300 {
                break;
            }
        }
    }
    proc.kill().unwrap(); // SIGKILL
    proc.wait().unwrap();
    let last_ack = last_ack.expect("child acknowledged writes");

    let store = open(dir.path());
    let applied = u64::from_be_bytes(store.applied().unwrap().unwrap().try_into().unwrap());
    assert!(
        applied >= last_ack,
        "applied {applied} < acknowledged {last_ack}"
    );
    // prefix: exactly batches 0..=applied, each complete, revision consistent
    let all = store.range(&RangeRequest::new(KeyRange::all())).unwrap();
    assert_eq!(all.count, (applied + 1) * 4);
    for (n, kv) in all.kvs.iter().enumerate() {
        let batch = n as u64 / 4;
        assert_eq!(kv.key.as_ref(), format!("b{batch:08}/{}", n % 4).as_bytes());
        assert_eq!(kv.mod_revision.get(), batch + 2);
    }
    assert_eq!(store.current_revision().unwrap().get(), applied + 2);
    // and the store keeps working
    store
        .put(PutRequest::new(&b"after"[..], &b"1"[..]))
        .unwrap();
}
