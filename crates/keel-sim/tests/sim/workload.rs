//! The simulated clients: KV clients recording a history, a watcher, a lease client.

use super::cluster::{Cluster, Rng};
use futures::StreamExt;
use keel::{runtime, Node, ResponseHeader};
use keel_sim::{Call, Input, KeyRead, LeaseHistory, Op, Output, WatchEvent};
use keel_storage::mvcc::{
    Compare, CompareOp, CompareTarget, EventKind, PutRequest, RequestOp, TxnRequest,
};
use keel_storage::watch::{WatchBatch, WatchSpec};
use keel_types::{KeyRange, LeaseId, Revision};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The keys the KV clients work on (all under [`PREFIX`]).
pub const KEYS: [&str; 3] = ["sim/a", "sim/b", "sim/c"];
/// The watched prefix.
pub const PREFIX: &str = "sim/";
/// The key attached to the lease.
pub const LEASE_KEY: &str = "lease/k";
/// The lease's TTL.
pub const LEASE_TTL_SECS: i64 = 2;
/// Longest a client waits for one answer before it counts as unanswered.
const REQUEST_DEADLINE: Duration = Duration::from_millis(1500);
/// How long a client waits after a call that got no answer.
const FAILURE_PAUSE: Duration = Duration::from_millis(30);

/// `work`'s answer, or `None` when it failed or did not answer in time.
async fn answered<T, E>(work: impl Future<Output = Result<T, E>>) -> Option<T> {
    runtime::timeout(REQUEST_DEADLINE, work).await?.ok()
}

/// What one KV client recorded: its operations, and the writes acknowledged with their
/// revisions (as the events they must have produced).
#[derive(Default)]
pub struct ClientLog {
    pub ops: Vec<Op>,
    pub acked: Vec<WatchEvent>,
    /// Per op (same order): who answered, at which revision and term (for failure reports).
    pub notes: Vec<String>,
}

/// Run KV client `client` until `stop`.
pub async fn kv_client(
    cluster: Arc<Cluster>,
    client: u32,
    seed: u64,
    stop: Arc<AtomicBool>,
) -> ClientLog {
    let mut rng = Rng::new(seed ^ (u64::from(client) << 32));
    let mut log = ClientLog::default();
    let mut n = 0u32;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let key = KEYS[rng.index(KEYS.len())];
        let value = format!("c{client}-{n}").into_bytes();
        let input = match rng.below(10) {
            0..=2 => Input::Put(value),
            3..=5 => Input::Get,
            6 => Input::Delete,
            _ => {
                let last = log
                    .ops
                    .iter()
                    .rev()
                    .find_map(|o| match (&o.key, &o.output) {
                        (k, Output::Value(v)) if k == key.as_bytes() => Some(v.clone()),
                        _ => None,
                    });
                Input::CompareAndSwap {
                    expect: last.flatten(),
                    new: value,
                }
            }
        };
        let Some(node) = cluster.pick(&mut rng) else {
            runtime::sleep(Duration::from_millis(20)).await;
            continue;
        };
        let call = cluster.now();
        let answer = invoke(&node, key, &input).await;
        let ret = cluster.now();
        let (output, ret) = match answer {
            Some((output, acked, header)) => {
                log.acked.extend(acked);
                log.notes.push(format!(
                    "n{} r{} t{}",
                    node.id(),
                    header.revision,
                    header.raft_term
                ));
                (output, Some(ret))
            }
            // A read without an answer says nothing: left out of the history. Either way
            // the client backs off a little, as a real one would.
            None if input == Input::Get => {
                runtime::sleep(FAILURE_PAUSE).await;
                continue;
            }
            None => {
                log.notes.push(format!("n{} unanswered", node.id()));
                runtime::sleep(FAILURE_PAUSE).await;
                (Output::Unknown, None)
            }
        };
        log.ops.push(Op {
            client,
            key: key.as_bytes().to_vec(),
            call,
            ret,
            input,
            output,
        });
        runtime::sleep(Duration::from_millis(rng.below(15))).await;
    }
    log
}

/// Issue `input` on `key`: the answer and the event an acknowledged write produced.
async fn invoke(
    node: &Node,
    key: &str,
    input: &Input,
) -> Option<(Output, Option<WatchEvent>, ResponseHeader)> {
    let event = |revision: Revision, value: Option<&Vec<u8>>| WatchEvent {
        revision: revision.get(),
        key: key.as_bytes().to_vec(),
        value: value.cloned(),
    };
    match input {
        Input::Put(v) => {
            let r = answered(node.put(key.to_owned(), v.clone())).await?;
            Some((
                Output::Done,
                Some(event(r.header.revision, Some(v))),
                r.header,
            ))
        }
        Input::Delete => {
            let r = answered(node.delete(key.to_owned())).await?;
            let ev = (r.body.deleted > 0).then(|| event(r.header.revision, None));
            Some((Output::Done, ev, r.header))
        }
        Input::Get => {
            let r = answered(node.get(key.to_owned())).await?;
            Some((
                Output::Value(r.body.map(|kv| kv.value.to_vec())),
                None,
                r.header,
            ))
        }
        Input::CompareAndSwap { expect, new } => {
            let target = match expect {
                Some(v) => CompareTarget::Value(v.clone().into()),
                None => CompareTarget::Version(0),
            };
            let txn = TxnRequest {
                compare: vec![Compare {
                    range: KeyRange::key(key.to_owned()),
                    op: CompareOp::Equal,
                    target,
                }],
                success: vec![RequestOp::Put(PutRequest::new(key.to_owned(), new.clone()))],
                failure: vec![],
            };
            let r = answered(node.txn(txn)).await?;
            let swapped = r.body.succeeded;
            let ev = swapped.then(|| event(r.header.revision, Some(new)));
            Some((Output::Swapped(swapped), ev, r.header))
        }
    }
}

/// What the watcher received: one segment per watch it opened (it opens a new one, on
/// another member, from the next revision, when a stream ends).
#[derive(Default)]
pub struct WatchLog {
    /// (start revision, responses with their events).
    pub segments: Vec<(u64, Vec<Vec<WatchEvent>>)>,
}

/// Convert a watch response's events.
pub fn events(batch: &WatchBatch) -> Vec<WatchEvent> {
    batch
        .events
        .iter()
        .map(|e| WatchEvent {
            revision: e.kv.mod_revision.get(),
            key: e.kv.key.to_vec(),
            value: (e.kind == EventKind::Put).then(|| e.kv.value.to_vec()),
        })
        .collect()
}

/// Follow every change under [`PREFIX`] from revision 1 until `stop`.
pub async fn watcher(cluster: Arc<Cluster>, seed: u64, stop: Arc<AtomicBool>) -> WatchLog {
    let mut rng = Rng::new(seed ^ 0x5741_5443);
    let mut log = WatchLog::default();
    let mut next = 1u64;
    while !stop.load(Ordering::Relaxed) {
        let Some(node) = cluster.pick(&mut rng) else {
            runtime::sleep(Duration::from_millis(20)).await;
            continue;
        };
        let start = next;
        let spec = WatchSpec {
            start_revision: Some(Revision::new(start)),
            ..WatchSpec::new(KeyRange::prefix(PREFIX))
        };
        let Ok(mut stream) = node.watch(spec).await else {
            runtime::sleep(Duration::from_millis(20)).await;
            continue;
        };
        let mut responses = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            let item = runtime::timeout(Duration::from_millis(100), stream.next()).await;
            match item {
                None => {}
                Some(Some(Ok(resp))) => {
                    next = next.max(resp.body.revision.get() + 1);
                    cluster
                        .watch_progress
                        .fetch_max(next - 1, Ordering::Relaxed);
                    responses.push(events(&resp.body));
                }
                Some(Some(Err(_)) | None) => break,
            }
        }
        log.segments.push((start, responses));
    }
    log
}

/// Grant a lease, attach [`LEASE_KEY`], then renew it and read the key until `stop`.
/// Returns the history and the lease (if the grant and the put were acknowledged).
pub async fn lease_client(
    cluster: Arc<Cluster>,
    seed: u64,
    stop: Arc<AtomicBool>,
) -> (LeaseHistory, Option<LeaseId>) {
    let mut rng = Rng::new(seed ^ 0x4C45_4153);
    let mut history = LeaseHistory {
        ttl: u64::try_from(LEASE_TTL_SECS).unwrap() * 1_000_000,
        ..LeaseHistory::default()
    };
    let mut lease = None;
    while !stop.load(Ordering::Relaxed) {
        runtime::sleep(Duration::from_millis(100 + rng.below(200))).await;
        let Some(node) = cluster.pick(&mut rng) else {
            continue;
        };
        let Some(id) = lease else {
            lease = grant_and_attach(&cluster, &node, &mut history).await;
            continue;
        };
        let call = cluster.now();
        if answered(node.lease_keep_alive(id)).await.is_some() {
            history.renews.push(Call {
                call,
                ret: cluster.now(),
            });
        }
        if let Some(read) = read_key(&cluster, &node).await {
            history.reads.push(read);
        }
    }
    (history, lease)
}

async fn grant_and_attach(
    cluster: &Cluster,
    node: &Node,
    history: &mut LeaseHistory,
) -> Option<LeaseId> {
    let call = cluster.now();
    let grant = answered(node.lease_grant(LEASE_TTL_SECS, None)).await?;
    history.grant = Some(Call {
        call,
        ret: cluster.now(),
    });
    let id = grant.body.id;
    let put = PutRequest {
        lease: Some(id),
        ..PutRequest::new(LEASE_KEY, "held")
    };
    // Until the put is acknowledged, reads constrain nothing (the checker's premise); a
    // grant whose put fails is left to expire and the client starts over.
    answered(node.put_request(put)).await.map(|_| id)
}

/// A linearizable read of [`LEASE_KEY`] on `node`.
pub async fn read_key(cluster: &Cluster, node: &Node) -> Option<KeyRead> {
    let call = cluster.now();
    let got = answered(node.get(LEASE_KEY)).await?;
    Some(KeyRead {
        at: Call {
            call,
            ret: cluster.now(),
        },
        present: got.body.is_some(),
    })
}
