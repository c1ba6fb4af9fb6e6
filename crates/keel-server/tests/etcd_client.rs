//! etcd compatibility with the Rust `etcd-client` crate against three `keel` processes:
//! the calls a Rust service makes (KV with options etcdctl 3.4 lacks, txn, watch, leases,
//! cluster and maintenance).
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]
#![allow(
    clippy::disallowed_methods,
    reason = "real processes: deadlines are wall-clock, polls pause between attempts"
)]

mod common;

use common::Cluster;
use etcd_client::{
    Client, Compare, CompareOp, EventType, GetOptions, LeaseTimeToLiveOptions, PutOptions,
    SortOrder, SortTarget, Txn, TxnOp, WatchOptions,
};
use std::time::Duration;

async fn client(c: &Cluster) -> Client {
    let eps: Vec<String> = c.members.iter().map(common::Member::endpoint).collect();
    Client::connect(eps, None).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rust_service_uses_keel_through_etcd_client() {
    let c = Cluster::start(3);
    let mut cl = client(&c).await;
    kv_and_txn(&mut cl).await;
    watch_history_then_live(&mut cl).await;
    leases(&mut cl).await;
    cluster_and_maintenance(&mut cl).await;
}

async fn kv_and_txn(cl: &mut Client) {
    // KV with count_only, sort, limit.
    for i in 0..5 {
        cl.put(format!("app/{i}"), format!("v{i}"), None)
            .await
            .unwrap();
    }
    let count = cl
        .get(
            "app/",
            Some(GetOptions::new().with_prefix().with_count_only()),
        )
        .await
        .unwrap();
    assert_eq!(count.count(), 5);
    assert!(count.kvs().is_empty());
    let sorted = cl
        .get(
            "app/",
            Some(
                GetOptions::new()
                    .with_prefix()
                    .with_sort(SortTarget::Value, SortOrder::Descend)
                    .with_limit(2),
            ),
        )
        .await
        .unwrap();
    let values: Vec<&str> = sorted
        .kvs()
        .iter()
        .map(|kv| kv.value_str().unwrap())
        .collect();
    assert_eq!(values, ["v4", "v3"]);
    assert!(sorted.more());

    // A compare-and-swap txn.
    let txn = Txn::new()
        .when([Compare::value("app/0", CompareOp::Equal, "v0")])
        .and_then([TxnOp::put("app/0", "swapped", None)])
        .or_else([TxnOp::get("app/0", None)]);
    assert!(cl.txn(txn.clone()).await.unwrap().succeeded());
    assert!(!cl.txn(txn).await.unwrap().succeeded());
}

async fn watch_history_then_live(cl: &mut Client) {
    // A watch from a past revision sees history, then live events.
    let rev = cl.get("app/0", None).await.unwrap().kvs()[0].mod_revision();
    let mut stream = cl
        .watch(
            "app/0",
            Some(WatchOptions::new().with_start_revision(rev).with_prev_key()),
        )
        .await
        .unwrap();
    cl.delete("app/0", None).await.unwrap();
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let resp = tokio::time::timeout(common::DEADLINE, stream.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        for e in resp.events() {
            seen.push((e.event_type(), e.prev_kv().map(|kv| kv.value().to_vec())));
        }
    }
    assert_eq!(seen[0].0, EventType::Put);
    assert_eq!(seen[1], (EventType::Delete, Some(b"swapped".to_vec())));
}

async fn leases(cl: &mut Client) {
    // Leases: grant, attach, keep alive, time to live with keys, revoke.
    let lease = cl.lease_grant(60, None).await.unwrap().id();
    cl.put("svc/a", "up", Some(PutOptions::new().with_lease(lease)))
        .await
        .unwrap();
    let (mut keeper, mut renewals) = cl.lease_keep_alive(lease).await.unwrap();
    keeper.keep_alive().await.unwrap();
    let renewed = tokio::time::timeout(Duration::from_secs(10), renewals.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(renewed.ttl(), 60);
    let ttl = cl
        .lease_time_to_live(lease, Some(LeaseTimeToLiveOptions::new().with_keys()))
        .await
        .unwrap();
    assert_eq!(ttl.keys(), [b"svc/a".to_vec()]);
    cl.lease_revoke(lease).await.unwrap();
    assert_eq!(cl.get("svc/a", None).await.unwrap().count(), 0);
    // Unknown leases: etcd's answers (TTL -1 for time-to-live).
    let ttl = cl.lease_time_to_live(lease, None).await.unwrap();
    assert_eq!(ttl.ttl(), -1);
}

async fn cluster_and_maintenance(cl: &mut Client) {
    // Cluster and maintenance.
    let members = cl.member_list().await.unwrap();
    assert_eq!(members.members().len(), 3);
    let status = cl.status().await.unwrap();
    assert!(status.leader() != 0);
    let compact_at = cl
        .get("app/1", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    cl.compact(compact_at, None).await.unwrap();
    let err = cl
        .get(
            "app/1",
            Some(GetOptions::new().with_revision(compact_at - 1)),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("compacted"), "{err}");
}
