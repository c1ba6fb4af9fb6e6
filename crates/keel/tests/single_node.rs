//! A single-member node: the KV API, headers, errors, shutdown and restart from RocksDB.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

mod common;

use common::{metrics_when, sample};
use keel::{NodeBuilder, NodeError, ReadConsistency};
use keel_storage::mvcc::{
    Compare, CompareOp, CompareTarget, DeleteRequest, PutRequest, RangeRequest, RequestOp,
    TxnRequest,
};
use keel_storage::StorageError;
use keel_types::{KeyRange, LeaseId, MemberId, Revision};

fn builder(dir: &std::path::Path) -> NodeBuilder {
    NodeBuilder::new(MemberId::new(1)).name("one").data_dir(dir)
}

/// Compare k1 == v1, then put k3 and delete k2, in one revision.
fn compare_and_swap_txn() -> TxnRequest {
    TxnRequest {
        compare: vec![Compare {
            range: KeyRange::key(&b"k1"[..]),
            op: CompareOp::Equal,
            target: CompareTarget::Value((&b"v1"[..]).into()),
        }],
        success: vec![
            RequestOp::Put(PutRequest::new(&b"k3"[..], &b"v3"[..])),
            RequestOp::Delete(DeleteRequest {
                range: KeyRange::key(&b"k2"[..]),
                prev_kv: true,
            }),
        ],
        failure: vec![],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_get_txn_delete_then_restart_keeps_state() {
    let dir = tempfile::tempdir().unwrap();
    let node = builder(dir.path()).start().await.unwrap();

    let p1 = node.put(&b"k1"[..], &b"v1"[..]).await.unwrap();
    assert_eq!(p1.header.member_id, MemberId::new(1));
    assert_eq!(p1.header.cluster_id, node.cluster_id());
    assert!(p1.header.raft_term >= 1);
    let p2 = node.put(&b"k2"[..], &b"v2"[..]).await.unwrap();
    assert_eq!(p2.header.revision, p1.header.revision.next());

    let got = node.get(&b"k1"[..]).await.unwrap();
    assert_eq!(got.body.unwrap().value.as_ref(), b"v1");
    assert_eq!(got.header.revision, p2.header.revision);

    let txn = compare_and_swap_txn();
    let t = node.txn(txn).await.unwrap();
    assert!(t.body.succeeded);
    assert_eq!(t.header.revision, p2.header.revision.next());

    let d = node.delete(&b"k1"[..]).await.unwrap();
    assert_eq!(d.body.deleted, 1);
    let all = node
        .range(
            &RangeRequest::new(KeyRange::all()),
            ReadConsistency::Linearizable,
        )
        .await
        .unwrap();
    let keys: Vec<&[u8]> = all.body.kvs.iter().map(|kv| kv.key.as_ref()).collect();
    assert_eq!(keys, vec![&b"k3"[..]]);
    let revision = all.header.revision;
    let status = node.status().await.unwrap();
    assert_eq!(status.leader, Some(MemberId::new(1)));
    assert_eq!(status.header.revision, revision);
    assert!(status.applied_index >= 5, "{status:?}");

    node.shutdown().await;
    node.shutdown().await; // idempotent
    assert_eq!(node.get(&b"k3"[..]).await.unwrap_err(), NodeError::Stopped);

    // A new node on the same directory in the same process sees everything.
    let node = builder(dir.path()).start().await.unwrap();
    let all = node
        .range(
            &RangeRequest::new(KeyRange::all()),
            ReadConsistency::Serializable,
        )
        .await
        .unwrap();
    assert_eq!(all.header.revision, revision);
    assert_eq!(all.body.kvs.len(), 1);
    assert_eq!(all.body.kvs[0].value.as_ref(), b"v3");
    let old = node
        .range(
            &RangeRequest {
                revision: Some(p1.header.revision),
                ..RangeRequest::new(KeyRange::key(&b"k1"[..]))
            },
            ReadConsistency::Linearizable,
        )
        .await
        .unwrap();
    assert_eq!(old.body.kvs[0].value.as_ref(), b"v1");
    let p = node.put(&b"k4"[..], &b"v4"[..]).await.unwrap();
    assert_eq!(p.header.revision, revision.next());
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_requests_are_typed_and_change_nothing() {
    let node = NodeBuilder::new(MemberId::new(1)).start().await.unwrap();
    for i in 0..5u8 {
        node.put(vec![b'k'], vec![i]).await.unwrap();
    }
    let err = node.put(&b""[..], &b"v"[..]).await.unwrap_err();
    assert_eq!(err, NodeError::Rejected(StorageError::EmptyKey));
    assert!(!err.is_fatal());

    node.compact(Revision::new(4)).await.unwrap();
    let err = node.compact(Revision::new(3)).await.unwrap_err();
    assert!(
        matches!(err, NodeError::Rejected(StorageError::Compacted { .. })),
        "{err:?}"
    );
    let err = node
        .range(
            &RangeRequest {
                revision: Some(Revision::new(2)),
                ..RangeRequest::new(KeyRange::key(&b"k"[..]))
            },
            ReadConsistency::Linearizable,
        )
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "mvcc: required revision has been compacted"
    );
    let err = node.compact(Revision::new(100)).await.unwrap_err();
    assert!(matches!(
        err,
        NodeError::Rejected(StorageError::FutureRevision { .. })
    ));

    let big = vec![0u8; keel::limits::REQUEST_BYTES_MAX];
    let err = node.put(&b"big"[..], big).await.unwrap_err();
    assert!(matches!(err, NodeError::RequestTooLarge { .. }), "{err:?}");

    let leased = PutRequest {
        lease: LeaseId::new(5),
        ..PutRequest::new(&b"k"[..], &b"v"[..])
    };
    let err = node.put_request(leased).await.unwrap_err();
    assert_eq!(err.to_string(), "etcdserver: requested lease not found");

    // A txn nested deeper than keel_storage::limits::TXN_DEPTH_MAX is refused before it is
    // proposed (its one op per level fits etcd's op budget, so only the depth refuses it).
    let nested = |levels: usize| {
        let mut txn = TxnRequest {
            success: vec![RequestOp::Put(PutRequest::new(&b"deep"[..], &b"v"[..]))],
            ..TxnRequest::default()
        };
        for _ in 1..levels {
            txn = TxnRequest {
                success: vec![RequestOp::Txn(txn)],
                ..TxnRequest::default()
            };
        }
        txn
    };
    let max = keel_storage::limits::TXN_DEPTH_MAX;
    let err = node.txn(nested(max + 1)).await.unwrap_err();
    assert_eq!(
        err,
        NodeError::Rejected(StorageError::TooManyOps {
            count: max + 1,
            max
        })
    );

    // The refusals consumed no revision.
    let status = node.status().await.unwrap();
    assert_eq!(status.header.revision, Revision::new(6));
    // At the limit it goes through the log and applies.
    node.txn(nested(max)).await.unwrap();
    assert!(node.get(&b"deep"[..]).await.unwrap().body.is_some());
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_dir_of_another_cluster_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let node = builder(dir.path()).start().await.unwrap();
    node.shutdown().await;
    let other = NodeBuilder::new(MemberId::new(1))
        .name("one")
        .data_dir(dir.path())
        .initial_members([
            (MemberId::new(1), "one".to_string()),
            (MemberId::new(2), "two".to_string()),
        ])
        .start()
        .await
        .unwrap_err();
    assert!(
        matches!(other, NodeError::ClusterMismatch { .. }),
        "{other:?}"
    );
    let missing = NodeBuilder::new(MemberId::new(9))
        .initial_members([(MemberId::new(1), "one".to_string())])
        .start()
        .await
        .unwrap_err();
    assert!(matches!(missing, NodeError::Config { .. }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_what_the_node_did() {
    let dir = tempfile::tempdir().unwrap();
    let node = builder(dir.path()).start().await.unwrap();
    node.wait_for_leader(std::time::Duration::from_secs(10))
        .await
        .unwrap();
    // The leader change is counted by a task watching the engine's metrics: polled.
    let before = metrics_when(&node, "etcd_server_leader_changes_seen_total", |v| v >= 1.0).await;
    assert_eq!(sample(&before, "etcd_server_has_leader"), 1.0);
    assert_eq!(
        sample(&before, "etcd_server_leader_changes_seen_total"),
        1.0
    );
    assert_eq!(sample(&before, "etcd_mvcc_put_total"), 0.0);

    for i in 0..3 {
        node.put(format!("k{i}"), "v").await.unwrap();
    }
    node.delete_range(DeleteRequest {
        range: KeyRange::key(&b"k0"[..]),
        prev_kv: false,
    })
    .await
    .unwrap();
    node.txn(compare_and_swap_txn()).await.unwrap();
    node.get(&b"k1"[..]).await.unwrap();
    // A refused request is not an applied put.
    node.put(&b""[..], &b"v"[..]).await.unwrap_err();
    let lease = node.lease_grant(60, None).await.unwrap().body.id;
    node.lease_keep_alive(lease).await.unwrap();
    node.lease_keep_alive(lease).await.unwrap();
    node.lease_revoke(lease).await.unwrap();
    let watch = node
        .watch(keel_storage::watch::WatchSpec::new(KeyRange::prefix(
            &b"k"[..],
        )))
        .await
        .unwrap();

    let text = node.metrics_text().unwrap();
    assert_eq!(sample(&text, "etcd_mvcc_put_total"), 3.0);
    assert_eq!(sample(&text, "etcd_mvcc_delete_total"), 1.0);
    assert_eq!(sample(&text, "etcd_mvcc_txn_total"), 1.0);
    assert_eq!(sample(&text, "etcd_mvcc_range_total"), 1.0);
    assert_eq!(sample(&text, "etcd_debugging_lease_granted_total"), 1.0);
    assert_eq!(sample(&text, "etcd_debugging_lease_renewed_total"), 2.0);
    assert_eq!(sample(&text, "etcd_debugging_lease_revoked_total"), 1.0);
    assert_eq!(sample(&text, "etcd_debugging_mvcc_watcher_total"), 1.0);
    assert_eq!(sample(&text, "etcd_server_proposals_pending"), 0.0);
    assert_eq!(sample(&text, "etcd_server_proposals_failed_total"), 0.0);
    let applied = sample(&text, "etcd_server_proposals_applied_total");
    assert!(applied >= 10.0, "{applied}");
    assert!(sample(&text, "etcd_server_proposals_committed_total") >= applied);
    assert!(sample(&text, "etcd_mvcc_db_total_size_in_bytes") > 0.0);
    let in_use = sample(&text, "etcd_mvcc_db_total_size_in_use_in_bytes");
    assert!(in_use > 0.0, "{text}");
    // Every write reached the log through at least one fsync.
    assert!(sample(&text, "etcd_disk_wal_fsync_duration_seconds_count") >= 1.0);
    assert!(sample(&text, "etcd_disk_backend_commit_duration_seconds_count") >= 10.0);
    drop(watch);
    let text = node.metrics_text().unwrap();
    assert_eq!(sample(&text, "etcd_debugging_mvcc_watcher_total"), 0.0);
    node.shutdown().await;
    // After shutdown, the last values still render.
    node.put(&b"k"[..], &b"v"[..]).await.unwrap_err();
    assert_eq!(
        sample(&node.metrics_text().unwrap(), "etcd_mvcc_put_total"),
        3.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_txn_ops_limit_is_the_one_applied() {
    let puts = |n: usize| TxnRequest {
        compare: vec![],
        success: (0..n)
            .map(|i| RequestOp::Put(PutRequest::new(format!("t/{i}"), "v")))
            .collect(),
        failure: vec![],
    };
    let default = NodeBuilder::new(MemberId::new(1)).start().await.unwrap();
    assert!(
        default.txn(puts(150)).await.is_err(),
        "etcd's 128 by default"
    );
    default.shutdown().await;
    let raised = NodeBuilder::new(MemberId::new(1))
        .mvcc_limits(keel_storage::MvccLimits {
            txn_ops_max: 200,
            ..keel_storage::MvccLimits::default()
        })
        .start()
        .await
        .unwrap();
    let r = raised.txn(puts(150)).await.unwrap();
    assert!(r.body.succeeded);
    assert!(raised.txn(puts(201)).await.is_err());
    raised.shutdown().await;
}
