//! The README's main example: one embedded keel node on a local data directory.
//!
//! Starts a single-member cluster (no network needed) in `./keel-data` (or the directory given
//! as the first argument), then: put, linearizable get, a read at an older revision, a
//! compare-and-swap txn, a watch that sees the changes, and a lease with a key attached (grant,
//! list, keep-alive, time-to-live, revoke). Run it twice: the second run
//! restarts from the same directory and finds the first run's data.
//!
//! Run: `cargo run -p keel-examples --example quickstart`

use futures::StreamExt;
use keel::{NodeBuilder, NodeError, ReadConsistency};
use keel_storage::mvcc::{
    Compare, CompareOp, CompareTarget, PutRequest, RangeRequest, RequestOp, TxnRequest,
};
use keel_storage::watch::WatchSpec;
use keel_types::{KeyRange, MemberId};
use std::time::Duration;

/// How long the example waits for its watch events before giving up.
const WATCH_DEADLINE: Duration = Duration::from_secs(5);

#[tokio::main]
async fn main() -> Result<(), NodeError> {
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "keel-data".to_string());
    let node = NodeBuilder::new(MemberId::new(1))
        .name("quickstart")
        .data_dir(&dir)
        .start()
        .await?;
    let status = node.status().await?;
    println!(
        "started member {} of cluster {} in {dir} at revision {} (raft index {})",
        node.id(),
        node.cluster_id(),
        status.header.revision,
        status.raft_index
    );
    if let Some(previous) = node.get(&b"config/runs"[..]).await?.body {
        println!(
            "found data of an earlier run: config/runs = {}",
            String::from_utf8_lossy(&previous.value)
        );
    }
    let result = run(&node).await;
    node.shutdown().await;
    println!("shut down");
    result
}

async fn run(node: &keel::Node) -> Result<(), NodeError> {
    let mut watch = node
        .watch(WatchSpec {
            prev_kv: true,
            ..WatchSpec::new(KeyRange::prefix(&b"config/"[..]))
        })
        .await?;

    let first = node.put(&b"config/greeting"[..], &b"hello"[..]).await?;
    node.put(&b"config/greeting"[..], &b"hello, keel"[..])
        .await?;
    println!(
        "put config/greeting twice (first at revision {})",
        first.header.revision
    );

    let now = node.get(&b"config/greeting"[..]).await?;
    let then = node
        .range(
            &RangeRequest {
                revision: Some(first.header.revision),
                ..RangeRequest::new(KeyRange::key(&b"config/greeting"[..]))
            },
            ReadConsistency::Linearizable,
        )
        .await?;
    let latest = now.body.ok_or_else(|| missing("config/greeting"))?;
    let old = then
        .body
        .kvs
        .first()
        .ok_or_else(|| missing("config/greeting at the first revision"))?;
    println!(
        "latest = {:?}, at revision {} = {:?}",
        String::from_utf8_lossy(&latest.value),
        first.header.revision,
        String::from_utf8_lossy(&old.value)
    );

    // Compare-and-swap: only if nobody changed the key since we read it; also count runs.
    let runs = node
        .get(&b"config/runs"[..])
        .await?
        .body
        .and_then(|kv| String::from_utf8_lossy(&kv.value).parse::<u64>().ok())
        .unwrap_or(0);
    let cas = node
        .txn(TxnRequest {
            compare: vec![Compare {
                range: KeyRange::key(&b"config/greeting"[..]),
                op: CompareOp::Equal,
                target: CompareTarget::Mod(latest.mod_revision),
            }],
            success: vec![
                RequestOp::Put(PutRequest::new(&b"config/greeting"[..], &b"swapped"[..])),
                RequestOp::Put(PutRequest::new(&b"config/runs"[..], (runs + 1).to_string())),
            ],
            failure: vec![],
        })
        .await?;
    println!(
        "compare-and-swap succeeded: {} (revision {}); this is run {}",
        cas.body.succeeded,
        cas.header.revision,
        runs + 1
    );

    // Four changes under config/: two puts, then the txn's two puts in one revision.
    print_events(&mut watch, 4).await?;
    leases(node).await
}

/// The seed's first concept: `etcdctl lease grant 120`, a key created with the lease id,
/// `lease list`, `lease keep-alive`, `lease timetolive --keys`, then revoke: the key goes.
async fn leases(node: &keel::Node) -> Result<(), NodeError> {
    let grant = node.lease_grant(120, None).await?;
    let id = grant.body.id;
    println!("lease {id} granted with TTL {}", grant.body.ttl_secs);
    node.put_request(PutRequest {
        lease: Some(id),
        ..PutRequest::new(&b"service/instance-1"[..], &b"10.0.0.7:8080"[..])
    })
    .await?;
    let listed = node.leases().await?.body;
    println!(
        "lease list: {} lease(s), including {id}: {}",
        listed.len(),
        listed.contains(&id)
    );
    let renewed = node.lease_keep_alive(id).await?;
    println!("lease {id} kept alive, TTL {}", renewed.body.ttl_secs);
    let ttl = node.lease_time_to_live(id, true).await?.body;
    println!(
        "lease {id}: granted {} s, remaining {} s, keys {:?}",
        ttl.granted_ttl_secs,
        ttl.remaining.as_secs(),
        ttl.keys
            .iter()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .collect::<Vec<_>>()
    );
    let revoked = node.lease_revoke(id).await?;
    let gone = node.get(&b"service/instance-1"[..]).await?.body.is_none();
    println!(
        "lease {id} revoked at revision {}: service/instance-1 deleted with it: {gone}",
        revoked.header.revision
    );
    Ok(())
}

/// Print the watch's events until `count` arrived (or the deadline passed).
async fn print_events(watch: &mut keel::WatchStream, count: usize) -> Result<(), NodeError> {
    let mut seen = 0;
    let deadline = tokio::time::sleep(WATCH_DEADLINE);
    tokio::pin!(deadline);
    while seen < count {
        let batch = tokio::select! {
            batch = watch.next() => batch,
            () = &mut deadline => {
                println!("watch: deadline passed after {seen} events");
                return Err(NodeError::Timeout);
            }
        };
        let Some(batch) = batch else { break };
        for e in batch?.body.events {
            seen += 1;
            println!(
                "watch: {:?} {} = {:?} (revision {}, previous {:?})",
                e.kind,
                String::from_utf8_lossy(&e.kv.key),
                String::from_utf8_lossy(&e.kv.value),
                e.kv.mod_revision,
                e.prev_kv
                    .map(|p| String::from_utf8_lossy(&p.value).into_owned())
            );
        }
    }
    Ok(())
}

fn missing(what: &str) -> NodeError {
    NodeError::Refused {
        message: format!("{what} is missing"),
    }
}
