//! kill -9 of a real child process in the middle of writes: after reopen the state is a
//! prefix of the applied batches, nothing acknowledged (synced) is lost, nothing is corrupt.
//!
//! The test binary re-executes itself as the child (`KEEL_CRASH_CHILD_DIR` set), which
//! writes batches forever and prints `ack <i>` after each synced commit. With
//! `KEEL_CRASH_CHILD_MANUAL` set the child keeps its WAL buffer in the process
//! (`RocksOptions::manual_wal_flush`) and also acknowledges buffered batches it handed to the
//! OS with `Engine::flush_buffered`: those must survive the kill too.

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
const MANUAL_ENV: &str = "KEEL_CRASH_CHILD_MANUAL";
/// The last batch a manual child acknowledges: buffered and flushed (`i % 3 == 1`).
const MANUAL_LAST_ACK: u64 = 301;

fn open(dir: &std::path::Path, manual_wal_flush: bool) -> MvccStore {
    let mut options = RocksOptions::new(&MvccStore::COLUMN_FAMILIES);
    options.manual_wal_flush = manual_wal_flush;
    let engine = RocksEngine::open(dir, &options).unwrap();
    MvccStore::open(Arc::new(engine)).unwrap()
}

/// Batch `i` writes keys `b<i>/0..4` and marks `i` applied. Every 3rd batch is synced and
/// acknowledged; the others are buffered (they may or may not survive, but only as a prefix).
/// With `manual`, the batch after each synced one is buffered, flushed to the OS and
/// acknowledged as well; the child stops writing after [`MANUAL_LAST_ACK`] + 1 (buffered,
/// not acknowledged) and waits to be killed, so the last acknowledged batch reached the OS
/// only through `flush_buffered`.
fn child(dir: &str, manual: bool) {
    let store = open(std::path::Path::new(dir), manual);
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
        let flushed = manual && i % 3 == 1;
        if flushed {
            store.engine().flush_buffered().unwrap();
        }
        if synced || flushed {
            writeln!(out, "ack {i}").unwrap();
            out.flush().unwrap();
        }
        if manual && i > MANUAL_LAST_ACK {
            loop {
                std::thread::park();
            }
        }
    }
}

#[test]
fn sigkill_mid_writes_loses_nothing_acknowledged() {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        child(&dir, false);
        return;
    }
    kill_and_check("sigkill_mid_writes_loses_nothing_acknowledged", false);
}

#[test]
fn with_the_wal_buffer_in_the_process_flushed_writes_survive_sigkill() {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        child(&dir, std::env::var_os(MANUAL_ENV).is_some());
        return;
    }
    kill_and_check(
        "with_the_wal_buffer_in_the_process_flushed_writes_survive_sigkill",
        true,
    );
}

/// Run test `name` as a child writing batches, kill -9 it after 300 acknowledgements, and
/// check what survived.
fn kill_and_check(name: &str, manual: bool) {
    let dir = tempfile::tempdir().unwrap();
    let mut command = Command::new(std::env::current_exe().unwrap());
    command.args([name, "--exact", "--nocapture"]);
    if manual {
        command.env(MANUAL_ENV, "1");
    }
    let mut proc = command
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
            if n >= if manual { MANUAL_LAST_ACK } else { 300 } {
                break;
            }
        }
    }
    proc.kill().unwrap(); // SIGKILL
    proc.wait().unwrap();
    let last_ack = last_ack.expect("child acknowledged writes");

    let store = open(dir.path(), manual);
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
