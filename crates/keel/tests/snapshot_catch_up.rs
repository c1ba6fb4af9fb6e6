//! A member cut off while the others snapshot and purge their logs catches up through a
//! snapshot (export, transfer, install) and keeps it across a restart.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

use futures::StreamExt;
use keel::{InMemoryNetwork, Node, NodeBuilder, ReadConsistency, SnapshotPolicy, Timings};
use keel_storage::mvcc::RangeRequest;
use keel_storage::watch::WatchSpec;
use keel_types::{KeyRange, MemberId};
use std::path::Path;
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(10);

async fn start(net: &InMemoryNetwork, id: MemberId, dir: &Path) -> Node {
    let ids: Vec<MemberId> = (1..=3).map(MemberId::new).collect();
    let node = NodeBuilder::new(id)
        .name(format!("n{id}"))
        .data_dir(dir)
        .initial_members(ids.iter().map(|i| (*i, format!("n{i}"))))
        .network(net.endpoint(id))
        .timings(Timings {
            heartbeat_interval: Duration::from_millis(50),
            election_timeout: Duration::from_millis(300),
            request_timeout: Duration::from_secs(3),
        })
        .snapshot_policy(SnapshotPolicy {
            entries_between: 10,
            catch_up_entries: 0,
        })
        .start()
        .await
        .unwrap();
    net.register(id, node.peer_handler());
    node
}

async fn keys_seen(mut watch: keel::WatchStream, count: usize) -> Vec<Vec<u8>> {
    let mut seen = Vec::new();
    let work = async {
        while seen.len() < count {
            let batch = watch.next().await.unwrap().unwrap();
            seen.extend(batch.body.events.into_iter().map(|e| e.kv.key.to_vec()));
        }
    };
    tokio::time::timeout(DEADLINE, work).await.unwrap();
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lagging_member_catches_up_through_a_snapshot_after_log_purge() {
    catch_up_through_a_snapshot(2).await;
}

/// 40 values of 256 KiB: a snapshot of over 10 MiB, more than ten chunks of
/// `SNAPSHOT_CHUNK_BYTES_MAX` (1 MiB), each sent as its own message and kept on disk by the
/// receiver until the last one arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_of_many_chunks_streams_to_the_lagging_member() {
    catch_up_through_a_snapshot(256 * 1024).await;
}

/// The value of key `i`: `v<i>`, padded to `bytes`.
fn padded(i: u32, bytes: usize) -> Vec<u8> {
    let mut v = format!("v{i}").into_bytes();
    v.resize(bytes.max(v.len()), b'.');
    v
}

async fn catch_up_through_a_snapshot(value_bytes: usize) {
    let value = |i: u32| padded(i, value_bytes);
    let net = InMemoryNetwork::new();
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut nodes = Vec::new();
    for (i, dir) in dirs.iter().enumerate() {
        nodes.push(start(&net, MemberId::new(i as u64 + 1), dir.path()).await);
    }
    let leader_id = nodes[0].wait_for_leader(DEADLINE).await.unwrap();
    let leader = nodes.iter().find(|n| n.id() == leader_id).unwrap().clone();
    let lagger_pos = nodes.iter().position(|n| n.id() != leader_id).unwrap();
    let lagger = nodes[lagger_pos].clone();
    lagger
        .wait_for_status(DEADLINE, |s| s.leader == Some(leader_id))
        .await
        .unwrap();
    let lagger_last = lagger.status().await.unwrap().raft_index;
    let watch = lagger
        .watch(WatchSpec::new(KeyRange::prefix(&b"key/"[..])))
        .await
        .unwrap();

    net.isolate(lagger.id());
    for i in 0..40u32 {
        leader.put(format!("key/{i:02}"), value(i)).await.unwrap();
    }
    // The leader's log no longer holds what the lagger needs next.
    let purged = leader
        .wait_for_status(DEADLINE, |s| {
            s.purged_index.is_some_and(|p| p > lagger_last + 1)
        })
        .await
        .unwrap();
    assert!(purged.snapshot_index.is_some());

    net.heal();
    let target = leader.status().await.unwrap().applied_index;
    let caught_up = lagger
        .wait_for_status(DEADLINE, |s| s.applied_index >= target)
        .await
        .unwrap();
    assert!(caught_up.snapshot_index.is_some(), "{caught_up:?}");
    let all = RangeRequest::new(KeyRange::prefix(&b"key/"[..]));
    let local = lagger
        .range(&all, ReadConsistency::Serializable)
        .await
        .unwrap();
    assert_eq!(local.body.count, 40);
    for (i, kv) in (0..40u32).zip(&local.body.kvs) {
        assert_eq!(kv.value.as_ref(), value(i).as_slice());
    }
    let revision = local.header.revision;

    // The watch opened before the gap replays every missed revision from the snapshot's
    // history, in order, once the install wakes it.
    let want: Vec<Vec<u8>> = (0..40u32)
        .map(|i| format!("key/{i:02}").into_bytes())
        .collect();
    assert_eq!(keys_seen(watch, 40).await, want);

    // The installed snapshot is durable: restart the lagger from its directory.
    lagger.shutdown().await;
    let lagger = start(&net, lagger.id(), dirs[lagger_pos].path()).await;
    let local = lagger
        .range(&all, ReadConsistency::Serializable)
        .await
        .unwrap();
    assert_eq!(local.body.count, 40);
    assert!(local.header.revision >= revision);
    // And it keeps replicating.
    leader.put(&b"key/after"[..], &b"x"[..]).await.unwrap();
    let r = lagger.get(&b"key/after"[..]).await.unwrap();
    assert_eq!(r.body.unwrap().value.as_ref(), b"x");

    lagger.shutdown().await;
    for n in &nodes {
        n.shutdown().await;
    }
}
