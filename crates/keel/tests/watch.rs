//! Watch streams: live and historical events, compaction, shutdown, and continuity on a
//! follower across a leader change.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

use futures::StreamExt;
use keel::{InMemoryNetwork, Node, NodeBuilder, NodeError, Timings, WatchStream};
use keel_storage::mvcc::EventKind;
use keel_storage::watch::WatchSpec;
use keel_storage::StorageError;
use keel_types::{KeyRange, MemberId, Revision};
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(10);

/// Collect (key, kind, mod revision) until the stream has reported revision `upto`.
async fn collect(stream: &mut WatchStream, upto: Revision) -> Vec<(Vec<u8>, EventKind, u64)> {
    let mut out = Vec::new();
    let work = async {
        loop {
            let item = stream.next().await.expect("stream ended").unwrap();
            for e in item.body.events {
                out.push((e.kv.key.to_vec(), e.kind, e.kv.mod_revision.get()));
            }
            if item.body.revision >= upto {
                return;
            }
        }
    };
    tokio::time::timeout(DEADLINE, work)
        .await
        .expect("watch stalled");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_and_historical_events_then_shutdown_ends_the_stream() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeBuilder::new(MemberId::new(1))
        .data_dir(dir.path())
        .start()
        .await
        .unwrap();
    let first = node
        .put(&b"cfg/a"[..], &b"1"[..])
        .await
        .unwrap()
        .header
        .revision;
    let mut live = node
        .watch(WatchSpec::new(KeyRange::prefix(&b"cfg/"[..])))
        .await
        .unwrap();
    node.put(&b"other"[..], &b"x"[..]).await.unwrap();
    node.put(&b"cfg/b"[..], &b"2"[..]).await.unwrap();
    let last = node.delete(&b"cfg/a"[..]).await.unwrap().header.revision;
    let got = collect(&mut live, last).await;
    assert_eq!(
        got,
        vec![
            (b"cfg/b".to_vec(), EventKind::Put, first.get() + 2),
            (b"cfg/a".to_vec(), EventKind::Delete, first.get() + 3),
        ]
    );

    let mut past = node
        .watch(WatchSpec {
            start_revision: Some(first),
            ..WatchSpec::new(KeyRange::prefix(&b"cfg/"[..]))
        })
        .await
        .unwrap();
    let got = collect(&mut past, last).await;
    assert_eq!(got.len(), 3);
    assert_eq!(got[0], (b"cfg/a".to_vec(), EventKind::Put, first.get()));

    node.compact(last).await.unwrap();
    let err = node
        .watch(WatchSpec {
            start_revision: Some(first),
            ..WatchSpec::new(KeyRange::prefix(&b"cfg/"[..]))
        })
        .await
        .unwrap_err();
    assert!(
        matches!(err, NodeError::Rejected(StorageError::Compacted { .. })),
        "{err:?}"
    );

    // Shutdown ends live streams and releases the store although they are still held.
    node.shutdown().await;
    let end = tokio::time::timeout(DEADLINE, live.next()).await.unwrap();
    assert_eq!(end.unwrap().unwrap_err(), NodeError::Stopped);
    assert!(live.next().await.is_none());
    let node = NodeBuilder::new(MemberId::new(1))
        .data_dir(dir.path())
        .start()
        .await
        .unwrap();
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_watch_continues_across_a_leader_change() {
    let net = InMemoryNetwork::new();
    let ids: Vec<MemberId> = (1..=3).map(MemberId::new).collect();
    let mut nodes: Vec<Node> = Vec::new();
    for id in &ids {
        let node = NodeBuilder::new(*id)
            .initial_members(ids.iter().map(|i| (*i, format!("n{i}"))))
            .network(net.endpoint(*id))
            .timings(Timings {
                heartbeat_interval: Duration::from_millis(50),
                election_timeout: Duration::from_millis(300),
                request_timeout: Duration::from_secs(3),
            })
            .start()
            .await
            .unwrap();
        net.register(*id, node.peer_handler());
        nodes.push(node);
    }
    let leader_id = nodes[0].wait_for_leader(DEADLINE).await.unwrap();
    let leader = nodes.iter().find(|n| n.id() == leader_id).unwrap().clone();
    let others: Vec<Node> = nodes
        .iter()
        .filter(|n| n.id() != leader_id)
        .cloned()
        .collect();
    let mut stream = others[0]
        .watch(WatchSpec::new(KeyRange::prefix(&b"w/"[..])))
        .await
        .unwrap();

    let mut expected = Vec::new();
    for i in 0..5u8 {
        let r = leader.put(vec![b'w', b'/', i], vec![i]).await.unwrap();
        expected.push(r.header.revision.get());
    }
    net.isolate(leader_id);
    others[0]
        .wait_for_status(DEADLINE, |s| s.leader.is_some_and(|l| l != leader_id))
        .await
        .unwrap();
    let mut last = Revision::new(0);
    for i in 5..10u8 {
        let r = others[i as usize % 2]
            .put(vec![b'w', b'/', i], vec![i])
            .await
            .unwrap();
        expected.push(r.header.revision.get());
        last = r.header.revision;
    }
    let got: Vec<u64> = collect(&mut stream, last)
        .await
        .into_iter()
        .map(|e| e.2)
        .collect();
    assert_eq!(got, expected, "no gap, no duplicate, in order");
    net.heal();
    for n in &nodes {
        n.shutdown().await;
    }
}
