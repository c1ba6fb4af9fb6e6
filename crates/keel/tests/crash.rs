//! Durability: a node process killed with SIGKILL mid-writes loses no acknowledged write.
//!
//! The test re-runs its own binary as a child (selecting `child_writer`, with the data
//! directory in an environment variable); the child writes keys and prints one line per
//! acknowledged write; the parent kills it without warning, restarts a node on the directory
//! and checks every acknowledged key.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

use keel::{NodeBuilder, ReadConsistency};
use keel_storage::mvcc::RangeRequest;
use keel_types::{KeyRange, MemberId};
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

const DIR_VAR: &str = "KEEL_CRASH_CHILD_DIR";
const ACKS_BEFORE_KILL: usize = 300;

/// The child's body; does nothing unless started by `acknowledged_writes_survive_sigkill`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_writer() {
    let Ok(dir) = std::env::var(DIR_VAR) else {
        return;
    };
    let node = NodeBuilder::new(MemberId::new(1))
        .data_dir(dir)
        .start()
        .await
        .unwrap();
    let mut out = std::io::stdout();
    for i in 0..1_000_000u32 {
        let key = format!("key/{i:08}");
        let resp = node.put(key.clone(), format!("value-{i}")).await.unwrap();
        writeln!(out, "acked {key} {}", resp.header.revision).unwrap();
        out.flush().unwrap();
    }
}

#[test]
fn acknowledged_writes_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_writer", "--nocapture", "--test-threads=1"])
        .env(DIR_VAR, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut acked = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        if let Some(rest) = line.strip_prefix("acked ") {
            let key = rest.split(' ').next().unwrap().to_string();
            acked.push(key);
            if acked.len() >= ACKS_BEFORE_KILL {
                break;
            }
        }
    }
    assert_eq!(acked.len(), ACKS_BEFORE_KILL, "the child stopped early");
    child.kill().unwrap(); // SIGKILL on Unix: no shutdown, no flush
    child.wait().unwrap();

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let node = NodeBuilder::new(MemberId::new(1))
            .data_dir(dir.path())
            .start()
            .await
            .unwrap();
        let all = node
            .range(
                &RangeRequest::new(KeyRange::prefix(&b"key/"[..])),
                ReadConsistency::Linearizable,
            )
            .await
            .unwrap();
        let present: std::collections::BTreeSet<&[u8]> =
            all.body.kvs.iter().map(|kv| kv.key.as_ref()).collect();
        for key in &acked {
            assert!(present.contains(key.as_bytes()), "acknowledged {key} lost");
        }
        assert!(all.body.kvs.len() >= acked.len());
        node.shutdown().await;
    });
}
