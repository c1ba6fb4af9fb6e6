//! A node crashed at every write it makes: a single node runs a fixed workload (lease grant,
//! puts with and without the lease, a deletion, a compaction, a revoke) with snapshots and
//! log purges every few entries; the run is repeated with the engine dying just before its
//! first, second, third ... write ([`MemEngine::fail_after_writes`]) until a run completes.
//! Each crash is restarted from what a killed process leaves (every write that reached the
//! engine) and from what a power cut leaves (synced writes only). The restarted node must
//! start, hold every acknowledged step (and possibly the one in flight, never a part of it),
//! and keep serving writes at the next revision.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::disallowed_methods,
    reason = "test code; tokio's sleep polls for the node's state with a deadline"
)]

use keel::{Node, NodeBuilder, NodeError, ReadConsistency, SnapshotPolicy, Timings};
use keel_storage::engine::{Engine, MemEngine};
use keel_storage::mvcc::{DeleteRequest, KeyValue, PutRequest, RangeRequest};
use keel_types::{KeyRange, LeaseId, ManualClock, MemberId, Revision};
use std::sync::Arc;
use std::time::Duration;

#[derive(Clone, Debug)]
enum Step {
    Grant,
    Put(&'static str, bool),
    Delete(&'static str),
    Compact(u64),
    Revoke,
}

fn lease() -> LeaseId {
    LeaseId::new(7).unwrap()
}

fn workload() -> Vec<Step> {
    use Step::*;
    let mut steps = vec![Grant, Put("a", true), Put("b", false), Delete("b")];
    steps.extend(["k1", "k2", "k3", "k4", "k5", "k1", "k2"].map(|k| Put(k, false)));
    steps.extend([Compact(6), Put("c", true), Revoke]);
    steps.extend(["z1", "z2", "z3", "z1"].map(|k| Put(k, false)));
    steps
}

async fn run(node: &Node, at: usize, step: &Step) -> Result<(), NodeError> {
    match step {
        Step::Grant => node.lease_grant(600, Some(lease())).await.map(drop),
        Step::Put(key, leased) => {
            let mut req = PutRequest::new(*key, format!("{key} by step {at}"));
            if *leased {
                req.lease = Some(lease());
            }
            node.put_request(req).await.map(drop)
        }
        Step::Delete(key) => node
            .delete_range(DeleteRequest {
                range: KeyRange::key(*key),
                prev_kv: false,
            })
            .await
            .map(drop),
        Step::Compact(rev) => node.compact(Revision::new(*rev)).await.map(drop),
        Step::Revoke => node.lease_revoke(lease()).await.map(drop),
    }
}

/// What a reader can see of a node: every key (all fields), the leases, the compaction.
#[derive(Debug, PartialEq)]
struct Seen {
    kvs: Vec<KeyValue>,
    leases: Vec<LeaseId>,
    revision: Revision,
    compacted_at_6: bool,
}

async fn seen(node: &Node) -> Seen {
    let all = node
        .range(
            &RangeRequest::new(KeyRange::all()),
            ReadConsistency::Linearizable,
        )
        .await
        .unwrap();
    let old = RangeRequest {
        revision: Some(Revision::new(5)),
        ..RangeRequest::new(KeyRange::all())
    };
    let compacted_at_6 = node
        .range(&old, ReadConsistency::Linearizable)
        .await
        .is_err();
    Seen {
        kvs: all.body.kvs,
        leases: node.leases().await.unwrap().body,
        revision: all.header.revision,
        compacted_at_6,
    }
}

async fn start(engine: Arc<dyn Engine>) -> Node {
    let node = NodeBuilder::new(MemberId::new(1))
        .engine(engine)
        .clock(Arc::new(ManualClock::new()))
        .timings(Timings {
            heartbeat_interval: Duration::from_millis(20),
            election_timeout: Duration::from_millis(100),
            request_timeout: Duration::from_secs(2),
        })
        .snapshot_policy(SnapshotPolicy {
            entries_between: 4,
            catch_up_entries: 0,
        })
        .start()
        .await
        .unwrap();
    node.wait_for_leader(Duration::from_secs(10)).await.unwrap();
    node
}

/// The workload run to completion on a fresh node: what a reader sees after each step.
async fn reference() -> Vec<Seen> {
    let node = start(Arc::new(MemEngine::new(&Node::column_families()))).await;
    let mut after = vec![seen(&node).await];
    for (at, step) in workload().iter().enumerate() {
        run(&node, at, step).await.unwrap();
        after.push(seen(&node).await);
    }
    node.shutdown().await;
    after
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_crashed_at_every_write_restarts_with_every_acknowledged_step() {
    let expected = reference().await;
    let steps = workload();
    let mut restarts = 0;
    for k in 0u64.. {
        let engine = Arc::new(MemEngine::new(&Node::column_families()));
        let node = start(engine.clone()).await;
        engine.fail_after_writes(k);
        let mut acked = 0;
        for (at, step) in steps.iter().enumerate() {
            if run(&node, at, step).await.is_err() {
                break;
            }
            acked += 1;
        }
        let done = acked == steps.len() && engine.check_healthy().is_ok();
        // the images, taken before shutdown: shutdown waits for the last handle on the engine
        let images = [
            ("process kill", engine.reopen(&[])),
            ("power cut", engine.crash()),
        ];
        drop(engine);
        node.shutdown().await;
        if done {
            assert!(k > 40, "the workload made only {k} writes");
            eprintln!("{k} failpoints, {restarts} restarts checked");
            return;
        }
        for (kind, image) in images {
            let node = start(Arc::new(image)).await;
            let got = seen(&node).await;
            let step = if got == expected[acked] {
                acked
            } else {
                acked + 1
            };
            assert!(
                expected.get(step) == Some(&got),
                "failpoint {k}, {kind}: {acked} steps acknowledged, the restarted node \
                 shows none of the states after {acked} or {} steps: {got:#?}",
                acked + 1
            );
            let next = node.put(&b"after"[..], &b"restart"[..]).await.unwrap();
            assert_eq!(
                next.header.revision,
                got.revision.next(),
                "failpoint {k}, {kind}"
            );
            node.shutdown().await;
            restarts += 1;
        }
    }
}
