//! A service that keeps its configuration in keel and reacts to changes through a watch.
//!
//! Three nodes run in one process over `InMemoryNetwork`. The "service" reads its settings
//! under `app/config/` from its local member, then follows a watch and applies each change;
//! an "operator" changes settings through another member (forwarded to the leader),
//! including an atomic multi-key update with a txn. The service stops after the operator's
//! last change (key `app/config/version` = 3) or at a deadline.
//!
//! Run: `cargo run -p keel-examples --example replicated_config`

use futures::StreamExt;
use keel::{InMemoryNetwork, Node, NodeBuilder, NodeError, ReadConsistency, Timings};
use keel_storage::mvcc::{PutRequest, RangeRequest, RequestOp, TxnRequest};
use keel_storage::watch::WatchSpec;
use keel_types::{KeyRange, MemberId};
use std::collections::BTreeMap;
use std::time::Duration;

const PREFIX: &[u8] = b"app/config/";
const DEADLINE: Duration = Duration::from_secs(10);

#[tokio::main]
async fn main() -> Result<(), NodeError> {
    let net = InMemoryNetwork::new();
    let ids: Vec<MemberId> = (1..=3).map(MemberId::new).collect();
    let mut nodes = Vec::new();
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
            .await?;
        net.register(*id, node.peer_handler());
        nodes.push(node);
    }
    let (service_node, operator) = (nodes[0].clone(), nodes[2].clone());
    operator
        .put(&b"app/config/log_level"[..], &b"info"[..])
        .await?;
    operator.put(&b"app/config/version"[..], &b"1"[..]).await?;

    let service = spawn_service(&service_node).await?;
    operate(&operator).await?;

    let config = service.await.map_err(|e| NodeError::Refused {
        message: format!("service task failed: {e}"),
    })??;
    println!("service runs with {config:?}");
    for n in &nodes {
        n.shutdown().await;
    }
    let expected = [("log_level", "debug"), ("version", "3"), ("workers", "8")];
    let ok = expected
        .iter()
        .all(|(k, v)| config.get(&format!("app/config/{k}")).map(String::as_str) == Some(*v));
    if ok {
        Ok(())
    } else {
        Err(NodeError::Refused {
            message: format!("unexpected final config {config:?}"),
        })
    }
}

/// The service: load the config, then follow a watch from the next revision until the
/// operator's last change; returns the config it ends with.
async fn spawn_service(
    service_node: &Node,
) -> Result<tokio::task::JoinHandle<Result<BTreeMap<String, String>, NodeError>>, NodeError> {
    let snapshot = service_node
        .range(
            &RangeRequest::new(KeyRange::prefix(PREFIX)),
            ReadConsistency::Linearizable,
        )
        .await?;
    let mut config: BTreeMap<String, String> = snapshot
        .body
        .kvs
        .iter()
        .map(|kv| (text(&kv.key), text(&kv.value)))
        .collect();
    println!(
        "service loaded config at revision {}: {config:?}",
        snapshot.header.revision
    );
    let mut watch = service_node
        .watch(WatchSpec {
            start_revision: Some(snapshot.header.revision.next()),
            ..WatchSpec::new(KeyRange::prefix(PREFIX))
        })
        .await?;
    let service = tokio::spawn(async move {
        let work = async {
            while let Some(batch) = watch.next().await {
                for e in batch?.body.events {
                    let (key, value) = (text(&e.kv.key), text(&e.kv.value));
                    println!("service: {:?} {key} -> {value:?}; reconfiguring", e.kind);
                    if matches!(e.kind, keel_storage::mvcc::EventKind::Delete) {
                        config.remove(&key);
                    } else {
                        config.insert(key, value);
                    }
                }
                if config.get("app/config/version").map(String::as_str) == Some("3") {
                    return Ok(config);
                }
            }
            Err(NodeError::Stopped)
        };
        tokio::time::timeout(DEADLINE, work)
            .await
            .map_err(|_| NodeError::Timeout)?
    });

    Ok(service)
}

/// The operator, on another member: two puts, then an atomic two-key txn.
async fn operate(operator: &Node) -> Result<(), NodeError> {
    operator
        .put(&b"app/config/log_level"[..], &b"debug"[..])
        .await?;
    println!("operator: log_level = debug");
    operator.put(&b"app/config/version"[..], &b"2"[..]).await?;
    let txn = operator
        .txn(TxnRequest {
            compare: vec![],
            success: vec![
                RequestOp::Put(PutRequest::new(&b"app/config/workers"[..], &b"8"[..])),
                RequestOp::Put(PutRequest::new(&b"app/config/version"[..], &b"3"[..])),
            ],
            failure: vec![],
        })
        .await?;
    println!(
        "operator: workers = 8 and version = 3 in one txn (revision {})",
        txn.header.revision
    );

    Ok(())
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}
