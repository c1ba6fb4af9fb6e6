//! The process tier of the reliability battery: three `keel` processes on 127.0.0.1 under
//! concurrent clients (the Rust `etcd-client` crate) doing puts, linearizable gets, deletes
//! and compare-and-swap txns on a few keys, while the leader is killed with SIGKILL and
//! restarted, the next leader is frozen with SIGSTOP and thawed, and links are cut by
//! userspace TCP proxies in front of every member's peer port: first every link into the
//! leader, then every link into both followers, then every link between the leader and the
//! others, both ways (a symmetric partition; members dial from their own loopback
//! addresses, so a proxy tells them apart). Every invocation and completion is recorded
//! (a request without an answer is "maybe applied") and the history is checked by
//! `keel_sim::check`.
//!
//! Not bit-exact: real processes, real time and real scheduling; the client choices are
//! seeded per client, the timing is not.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]
#![allow(
    clippy::disallowed_methods,
    reason = "real processes: wall-clock timestamps and pauses between phases"
)]

mod common;

use common::{initial_cluster, Cluster};
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, EventType, Txn, TxnOp, WatchOptions,
};
use keel_sim::{check, settle_unanswered_writes, Input, Op, Output, Verdict};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const KEYS: [&str; 3] = ["lin/a", "lin/b", "lin/c"];
const CLIENTS: u32 = 4;
/// Longest one request may take before it counts as unanswered.
const REQUEST_DEADLINE: Duration = Duration::from_secs(2);
/// Pause after a call without an answer.
const BACK_OFF: Duration = Duration::from_millis(100);

/// A small seeded generator (xorshift64*): the clients' choices replay per seed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}

/// Issue `input` on `key`; the answer, or `None` when there was none in time (or an error:
/// a failed write may still have been applied).
async fn invoke(client: &mut Client, key: &str, input: &Input) -> Option<Output> {
    let call = async {
        match input {
            Input::Put(v) => client.put(key, v.clone(), None).await.map(|_| Output::Done),
            Input::Delete => client.delete(key, None).await.map(|_| Output::Done),
            Input::Get => client
                .get(key, None)
                .await
                .map(|r| Output::Value(r.kvs().first().map(|kv| kv.value().to_vec()))),
            Input::CompareAndSwap { expect, new } => {
                let compare = match expect {
                    Some(v) => Compare::value(key, CompareOp::Equal, v.clone()),
                    None => Compare::version(key, CompareOp::Equal, 0),
                };
                let txn = Txn::new()
                    .when([compare])
                    .and_then([TxnOp::put(key, new.clone(), None)]);
                client
                    .txn(txn)
                    .await
                    .map(|r| Output::Swapped(r.succeeded()))
            }
        }
    };
    match tokio::time::timeout(REQUEST_DEADLINE, call).await {
        Ok(Ok(output)) => Some(output),
        Ok(Err(_)) | Err(_) => None,
    }
}

async fn run_client(
    id: u32,
    endpoints: Vec<String>,
    start: Instant,
    stop: Arc<AtomicBool>,
) -> Vec<Op> {
    let options = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(1))
        .with_timeout(REQUEST_DEADLINE);
    let mut client = Client::connect(endpoints, Some(options)).await.unwrap();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ u64::from(id + 1));
    let mut last_seen: [Option<Vec<u8>>; KEYS.len()] = Default::default();
    let mut history = Vec::new();
    let mut n = 0u32;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let k = rng.below(KEYS.len() as u64) as usize;
        let value = format!("c{id}-{n}").into_bytes();
        let input = match rng.below(10) {
            0..=3 => Input::Get,
            4..=6 => Input::Put(value),
            7 => Input::Delete,
            _ => Input::CompareAndSwap {
                expect: last_seen[k].clone(),
                new: value,
            },
        };
        let call = start.elapsed().as_micros() as u64;
        let answer = invoke(&mut client, KEYS[k], &input).await;
        let ret = start.elapsed().as_micros() as u64;
        if let Some(Output::Value(v)) = &answer {
            last_seen[k].clone_from(v);
        }
        match answer {
            Some(output) => history.push(Op {
                client: id,
                key: KEYS[k].as_bytes().to_vec(),
                call,
                ret: Some(ret),
                input,
                output,
            }),
            // A read without an answer changed nothing: left out.
            None if input == Input::Get => tokio::time::sleep(BACK_OFF).await,
            None => {
                // Back off: a member that cannot reach the leader fails at once, and a
                // client retrying at full speed would fill the history with unknowns.
                tokio::time::sleep(BACK_OFF).await;
                history.push(Op {
                    client: id,
                    key: KEYS[k].as_bytes().to_vec(),
                    call,
                    ret: None,
                    input,
                    output: Output::Unknown,
                });
            }
        }
    }
    history
}

/// A watch event: (revision, key, the value put or `None` for a delete).
type Event = (i64, Vec<u8>, Option<Vec<u8>>);

/// Watch `lin/` from revision 1 until every revision up to `until` has been delivered,
/// resuming from the next revision on the next member whenever the stream breaks (its
/// member killed, say).
async fn watch_all(endpoints: Vec<String>, until: Arc<AtomicI64>) -> Vec<Event> {
    let mut events: Vec<Event> = Vec::new();
    let mut next = 1i64;
    let mut attempt = 0usize;
    while next <= until.load(Ordering::Relaxed) {
        attempt += 1;
        let endpoint = endpoints[attempt % endpoints.len()].clone();
        let options = ConnectOptions::new().with_connect_timeout(Duration::from_secs(1));
        let Ok(mut client) = Client::connect([endpoint], Some(options)).await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let watch = WatchOptions::new().with_prefix().with_start_revision(next);
        let Ok(mut stream) = client.watch("lin/", Some(watch)).await else {
            continue;
        };
        while next <= until.load(Ordering::Relaxed) {
            let resp =
                match tokio::time::timeout(Duration::from_millis(500), stream.message()).await {
                    Err(_) => continue,
                    Ok(Ok(Some(resp))) if !resp.canceled() => resp,
                    Ok(_) => break,
                };
            for e in resp.events() {
                let kv = e.kv().unwrap();
                let value = (e.event_type() == EventType::Put).then(|| kv.value().to_vec());
                events.push((kv.mod_revision(), kv.key().to_vec(), value));
                next = next.max(kv.mod_revision() + 1);
            }
        }
    }
    events
}

/// Watch guarantees: ordered, unique, no event past `until` missing (the live watch, resumed
/// across the faults, equals a fresh watch of the same revisions), and consistent with the
/// keyspace (replaying the events gives each key's final value).
fn check_watch(live: &[Event], fresh: &[Event], finals: &[(Vec<u8>, Option<Vec<u8>>)]) {
    for w in live.windows(2) {
        assert!(
            (w[0].0, &w[0].1) < (w[1].0, &w[1].1) || w[0].0 < w[1].0,
            "out of order or repeated: {:?} then {:?}",
            w[0],
            w[1]
        );
    }
    let until = fresh.last().map_or(0, |e| e.0);
    let live_upto: Vec<&Event> = live.iter().filter(|e| e.0 <= until).collect();
    let fresh_all: Vec<&Event> = fresh.iter().collect();
    assert_eq!(
        live_upto, fresh_all,
        "the resumed live watch differs from a fresh one"
    );
    let mut state = std::collections::BTreeMap::new();
    for (_, key, value) in fresh {
        state.insert(key.clone(), value.clone());
    }
    for (key, value) in finals {
        assert_eq!(state.get(key).cloned().flatten(), value.clone(), "{key:?}");
    }
}

/// After the faults, every member reports the same HashKV at the same revision (the
/// restarted one once it has caught up).
fn replicas_agree(c: &Cluster) -> i64 {
    let out = common::poll_ctl(
        &c.endpoints(),
        &["get", "lin/", "--prefix", "-w", "json"],
        |_| true,
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rev = v["header"]["revision"].as_i64().unwrap().to_string();
    let hashes: Vec<u64> = (c.members.iter())
        .map(|m| {
            let out = common::poll_ctl(
                &m.endpoint(),
                &["endpoint", "hashkv", "--rev", &rev, "-w", "json"],
                |_| true,
            );
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            v[0]["HashKV"]["hash"].as_u64().unwrap()
        })
        .collect();
    assert!(
        hashes.windows(2).all(|w| w[0] == w[1]),
        "HashKV at {rev}: {hashes:?}"
    );
    rev.parse().unwrap()
}

/// The fault schedule, under load: kill the leader, let the others elect and serve, restart
/// it; freeze the new leader (SIGSTOP) long enough for an election and thaw it (a deposed
/// leader that wakes up must not answer from its stale view); cut every link into the leader
/// (it still reaches the others through their proxies) and heal; cut every link into the
/// followers of the leader of that moment and heal; partition the leader of that moment from
/// the other two, both ways, and heal.
fn inject_faults(c: &mut Cluster, proxies: &[common::Proxy]) {
    std::thread::sleep(Duration::from_secs(2));
    let leader = c.leader();
    c.members[leader].kill9();
    std::thread::sleep(Duration::from_secs(3));
    let initial = initial_cluster(&c.members);
    c.members[leader].start(&initial, "new");
    std::thread::sleep(Duration::from_secs(2));
    let frozen = c.leader();
    c.members[frozen].signal("STOP");
    std::thread::sleep(Duration::from_secs(2));
    c.members[frozen].signal("CONT");
    std::thread::sleep(Duration::from_secs(2));
    let cut = c.leader();
    proxies[cut].cut();
    std::thread::sleep(Duration::from_secs(2));
    proxies[cut].heal();
    std::thread::sleep(Duration::from_secs(1));
    let leader = c.leader();
    let followers = (0..proxies.len()).filter(|i| *i != leader);
    followers.clone().for_each(|i| proxies[i].cut());
    std::thread::sleep(Duration::from_secs(2));
    followers.for_each(|i| proxies[i].heal());
    std::thread::sleep(Duration::from_secs(2));
    // A symmetric partition: the leader alone on one side. The other two elect one of
    // themselves; the old leader, whose clients still reach it, must not answer from its view.
    let alone = c.leader();
    common::partition(c, proxies, &[alone]);
    let majority: Vec<usize> = (0..proxies.len()).filter(|i| *i != alone).collect();
    let elected = c.leader_among(&majority);
    assert_ne!(elected, alone);
    std::thread::sleep(Duration::from_secs(2));
    proxies.iter().for_each(common::Proxy::heal);
    std::thread::sleep(Duration::from_secs(2));
}

#[test]
fn history_under_sigkill_sigstop_and_cut_links_is_linearizable() {
    let (mut c, proxies) = Cluster::start_behind_proxies(3);
    let endpoints: Vec<String> = c.members.iter().map(common::Member::endpoint).collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let start = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|id| runtime.spawn(run_client(id, endpoints.clone(), start, Arc::clone(&stop))))
        .collect();
    let until = Arc::new(AtomicI64::new(i64::MAX));
    let live_watch = runtime.spawn(watch_all(endpoints.clone(), Arc::clone(&until)));

    inject_faults(&mut c, &proxies);
    stop.store(true, Ordering::Relaxed);

    let history: Vec<Op> = clients
        .into_iter()
        .flat_map(|h| runtime.block_on(h).unwrap())
        .collect();
    let answered = history.iter().filter(|o| o.ret.is_some()).count();
    let writes = (history.iter())
        .filter(|o| o.ret.is_some() && o.input != Input::Get)
        .count();
    assert!(
        answered >= 100 && writes >= 30,
        "too little load: {answered} answered, {writes} writes"
    );
    let final_rev = replicas_agree(&c);
    until.store(final_rev, Ordering::Relaxed);
    let live = runtime.block_on(live_watch).unwrap();
    let fresh = runtime.block_on(watch_all(
        endpoints.clone(),
        Arc::new(AtomicI64::new(final_rev)),
    ));
    let finals = runtime.block_on(async {
        let mut client = Client::connect(endpoints.clone(), None).await.unwrap();
        let mut finals = Vec::new();
        for key in KEYS {
            let got = client.get(key, None).await.unwrap();
            finals.push((
                key.as_bytes().to_vec(),
                got.kvs().first().map(|kv| kv.value().to_vec()),
            ));
        }
        finals
    });
    check_watch(&live, &fresh, &finals);
    eprintln!("watch: {} events up to revision {final_rev}", fresh.len());
    let unknown = history.len() - answered;
    eprintln!("history: {answered} answered ({writes} writes), {unknown} without an answer");
    // unanswered writes whose value no watch event carries were not applied
    let logged = (fresh.iter()).filter_map(|(_, k, v)| v.as_deref().map(|v| (k.as_slice(), v)));
    let settled = settle_unanswered_writes(history.clone(), logged);
    eprintln!(
        "settled: {} of {unknown} unanswered writes kept",
        settled.len() - answered
    );
    match check(&settled) {
        Verdict::Linearizable => {}
        Verdict::Violation { key, ops } => panic!(
            "not linearizable on {}: {} ops\n{ops:#?}",
            String::from_utf8_lossy(&key),
            ops.len()
        ),
        Verdict::BudgetExhausted { key, ops, visited } => panic!(
            "linearizability undecided on {} ({ops} ops, {visited} configurations visited): \
             too many unanswered operations for the search",
            String::from_utf8_lossy(&key)
        ),
    }
}
