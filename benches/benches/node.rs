//! A replicated keel cluster against the disk's fsync rate, in the same run.
//!
//! Run: `cargo bench -p keel-benches --bench node`.
//!
//! Three [`keel::Node`]s in one process over [`keel::InMemoryNetwork`], each on its own RocksDB
//! data directory in a temporary directory (real RocksDB, real fsync). The driver measures:
//!
//! - the baseline: sequential `write` + `sync_data` of a small record to a file in the same
//!   temporary filesystem, for [`FSYNC_SECS`] seconds (fsyncs/s);
//! - puts on the leader by 1, 16 and 64 concurrent writers, each phase [`PUT_SECS`] seconds:
//!   throughput, p50/p99/max latency, throughput divided by the fsync rate, the puts per
//!   leader log fsync (how many writes each fsync carries), the puts per engine write of
//!   the leader's apply (how many entries apply together) and the process's CPU time per put;
//! - gets by [`READERS`] concurrent readers on the leader and on a follower, linearizable and
//!   serializable, each phase [`GET_SECS`] seconds.
//!
//! Issue 5's target: at 64 writers, put writes/s >= 20x the fsync rate. The driver reports
//! whether it is met; it never changes the measurement to meet it.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    missing_docs,
    reason = "benchmark driver"
)]

use bytes::Bytes;
use keel::{InMemoryNetwork, Node, NodeBuilder, ReadConsistency};
use keel_storage::mvcc::RangeRequest;
use keel_types::{Clock, KeyRange, MemberId, SystemClock};
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

/// Length of the fsync baseline.
const FSYNC_SECS: u64 = 2;
/// Length of each put phase.
const PUT_SECS: u64 = 5;
/// Length of each get phase.
const GET_SECS: u64 = 3;
/// Concurrent writers of the put phases.
const WRITERS: [usize; 3] = [1, 16, 64];
/// Concurrent readers of the get phases.
const READERS: usize = 16;
/// Value size of every put.
const VALUE_BYTES: usize = 100;
/// Record size of the fsync baseline.
const FSYNC_RECORD_BYTES: usize = 128;
/// Keys the readers pick from (written before the get phases).
const READ_KEYS: u64 = 1_000;
/// Issue 5's batching target: 64-writer puts/s over fsyncs/s.
const TARGET_RATIO: f64 = 20.0;

/// The disk's sequential fsync rate: append a small record and `sync_data`, in a loop.
fn fsync_rate(dir: &std::path::Path, clock: &SystemClock) -> (u64, f64) {
    let path = dir.join("fsync-baseline");
    let mut file = std::fs::File::create(&path).expect("create fsync baseline file");
    let record = [0xabu8; FSYNC_RECORD_BYTES];
    let start = clock.now();
    let stop = start + Duration::from_secs(FSYNC_SECS);
    let mut n = 0u64;
    while clock.now() < stop {
        file.write_all(&record).expect("write");
        file.sync_data().expect("sync_data");
        n += 1;
    }
    let secs = (clock.now() - start).as_secs_f64();
    drop(file);
    std::fs::remove_file(&path).expect("remove fsync baseline file");
    (n, n as f64 / secs)
}

async fn start_cluster(net: &InMemoryNetwork, dirs: &[tempfile::TempDir]) -> Vec<Node> {
    let ids: Vec<MemberId> = (1..=3).map(MemberId::new).collect();
    let mut nodes = Vec::new();
    for (id, dir) in ids.iter().zip(dirs) {
        let node = NodeBuilder::new(*id)
            .name(format!("n{id}"))
            .data_dir(dir.path())
            .initial_members(ids.iter().map(|i| (*i, format!("n{i}"))))
            .network(net.endpoint(*id))
            .start()
            .await
            .expect("start node");
        net.register(*id, node.peer_handler());
        nodes.push(node);
    }
    nodes
}

/// Wait until every node agrees on one leader among them.
async fn agreed_leader(nodes: &[Node]) -> MemberId {
    let work = async {
        loop {
            let mut leaders = Vec::new();
            for n in nodes {
                leaders.push(
                    n.wait_for_leader(Duration::from_secs(10))
                        .await
                        .expect("leader"),
                );
            }
            let first = leaders[0];
            if leaders.iter().all(|l| *l == first) && nodes.iter().any(|n| n.id() == first) {
                return first;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(30), work)
        .await
        .expect("no agreed leader")
}

/// The `q`-quantile of sorted latencies (nearest rank).
fn quantile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// What one phase measured.
struct Phase {
    ops: u64,
    errors: u64,
    secs: f64,
    latencies: Vec<Duration>,
    /// CPU time of the whole process (all three nodes and the driver) during the phase.
    cpu_secs: f64,
}

impl Phase {
    fn rate(&self) -> f64 {
        self.ops as f64 / self.secs
    }

    /// CPU microseconds per operation: what one operation costs the whole process (three
    /// nodes and the driver), to compare changes of the write path by their cost.
    fn cpu_us_per_op(&self) -> f64 {
        self.cpu_secs * 1e6 / self.ops.max(1) as f64
    }
}

/// User plus system CPU seconds of this process so far, all threads (`/proc/self/stat`).
fn process_cpu_secs() -> f64 {
    static TICKS_PER_SEC: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    let hz = *TICKS_PER_SEC.get_or_init(|| {
        let out = std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .expect("getconf CLK_TCK");
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("CLK_TCK")
    });
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    // the fields after the command name (which is in parentheses and may hold spaces)
    let rest = stat.rsplit_once(')').expect("stat format").1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name
    let ticks: u64 =
        fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    ticks as f64 / hz
}

/// Run `workers` concurrent loops of `op` on `node` for `secs` seconds.
async fn run_phase<F, Fut>(
    node: &Arc<Node>,
    clock: &Arc<SystemClock>,
    workers: usize,
    secs: u64,
    op: F,
) -> Phase
where
    F: Fn(Arc<Node>, usize, u64) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let start = clock.now();
    let cpu_start = process_cpu_secs();
    let stop = start + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for w in 0..workers {
        let node = Arc::clone(node);
        let clock = Arc::clone(clock);
        let op = op.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0u64;
            let mut i = 0u64;
            while clock.now() < stop {
                let t0 = clock.now();
                let ok = op(Arc::clone(&node), w, i).await;
                let t1 = clock.now();
                if ok {
                    latencies.push(t1 - t0);
                } else {
                    errors += 1;
                }
                i += 1;
            }
            (latencies, errors)
        }));
    }
    let mut latencies = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await.expect("worker panicked");
        latencies.extend(l);
        errors += e;
    }
    let secs = (clock.now() - start).as_secs_f64();
    let cpu_secs = process_cpu_secs() - cpu_start;
    latencies.sort_unstable();
    Phase {
        ops: latencies.len() as u64,
        errors,
        secs,
        latencies,
        cpu_secs,
    }
}

fn read_key(w: usize, i: u64) -> Bytes {
    // spread the readers over the preloaded keys
    let k = (i.wrapping_mul(7919) + w as u64 * 131) % READ_KEYS;
    Bytes::from(format!("read/{k:06}"))
}

async fn put_phase(node: &Arc<Node>, clock: &Arc<SystemClock>, writers: usize) -> Phase {
    let value = Bytes::from(vec![0x5au8; VALUE_BYTES]);
    run_phase(node, clock, writers, PUT_SECS, move |node, w, i| {
        let value = value.clone();
        async move {
            let key = Bytes::from(format!("put/{writers:02}/{w:02}/{i:09}"));
            node.put(key, value).await.is_ok()
        }
    })
    .await
}

async fn get_phase(
    node: &Arc<Node>,
    clock: &Arc<SystemClock>,
    consistency: ReadConsistency,
) -> Phase {
    run_phase(
        node,
        clock,
        READERS,
        GET_SECS,
        move |node, w, i| async move {
            let req = RangeRequest::new(KeyRange::key(read_key(w, i)));
            match node.range(&req, consistency).await {
                Ok(r) => r.body.count == 1,
                Err(_) => false,
            }
        },
    )
    .await
}

/// The log fsyncs `node` has done (its `etcd_disk_wal_fsync_duration_seconds` count): each
/// is one group commit of the Raft log.
fn log_fsyncs(node: &Node) -> u64 {
    histogram_count(node, "etcd_disk_wal_fsync_duration_seconds")
}

/// The engine writes of applied entries `node` has done (its
/// `etcd_disk_backend_commit_duration_seconds` count): a run of ready KV entries is one.
fn apply_writes(node: &Node) -> u64 {
    histogram_count(node, "etcd_disk_backend_commit_duration_seconds")
}

fn histogram_count(node: &Node, name: &str) -> u64 {
    let text = node.metrics_text().expect("render metrics");
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix("_count "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as u64)
        .unwrap_or_else(|| panic!("{name}_count in the metrics"))
}

fn print_put_header() {
    println!(
        "{:<22} {:>8} {:>6} {:>10} {:>9} {:>9} {:>9} {:>12} {:>14} {:>16} {:>11}",
        "put (on leader)",
        "ops",
        "errors",
        "ops/s",
        "p50 ms",
        "p99 ms",
        "max ms",
        "÷ fsync/s",
        "puts/log fsync",
        "puts/apply write",
        "CPU us/put"
    );
}

/// One put phase's row; `fsyncs` and `applies` are the leader's log fsyncs and engine
/// writes of applied entries during the phase.
fn print_put_row(label: &str, p: &Phase, fsync_per_sec: f64, fsyncs: u64, applies: u64) {
    println!(
        "{:<22} {:>8} {:>6} {:>10.0} {:>9.2} {:>9.2} {:>9.2} {:>11.2}x {:>14.1} {:>16.1} {:>11.1}",
        label,
        p.ops,
        p.errors,
        p.rate(),
        ms(quantile(&p.latencies, 0.50)),
        ms(quantile(&p.latencies, 0.99)),
        ms(p.latencies.last().copied().unwrap_or_default()),
        p.rate() / fsync_per_sec,
        p.ops as f64 / fsyncs.max(1) as f64,
        p.ops as f64 / applies.max(1) as f64,
        p.cpu_us_per_op(),
    );
}

fn print_get_row(label: &str, p: &Phase) {
    println!(
        "{:<34} {:>8} {:>6} {:>10.0} {:>9.3} {:>9.3}",
        label,
        p.ops,
        p.errors,
        p.rate(),
        ms(quantile(&p.latencies, 0.50)),
        ms(quantile(&p.latencies, 0.99)),
    );
}

/// Preload the keys the readers read, let the follower catch up, then run the get phases.
async fn read_phases(leader: &Arc<Node>, follower: &Arc<Node>, clock: &Arc<SystemClock>) {
    // the keys the readers read, then let the follower catch up
    let value = Bytes::from(vec![0x3cu8; VALUE_BYTES]);
    let mut last = 0;
    for k in 0..READ_KEYS {
        let r = leader
            .put(Bytes::from(format!("read/{k:06}")), value.clone())
            .await
            .expect("preload put");
        last = r.header.revision.get();
    }
    let status = leader.status().await.expect("status");
    follower
        .wait_for_applied(status.applied_index, Duration::from_secs(30))
        .await
        .expect("follower catches up");
    println!();
    println!(
        "{:<34} {:>8} {:>6} {:>10} {:>9} {:>9}   ({READERS} readers, {READ_KEYS} keys, revision {last})",
        "get", "ops", "errors", "ops/s", "p50 ms", "p99 ms"
    );
    for (label, node) in [("leader", leader), ("follower", follower)] {
        for consistency in [ReadConsistency::Linearizable, ReadConsistency::Serializable] {
            let p = get_phase(node, clock, consistency).await;
            print_get_row(&format!("{consistency:?} on {label}"), &p);
        }
    }
}

/// Put throughput over the fsync rate measured before and after the put phases.
fn print_ratios(rates: &[(usize, f64)], before: f64, after: f64) {
    println!();
    for (writers, rate) in rates {
        println!(
            "ratio at {writers:>2} writers: {rate:.0} puts/s / {before:.0} fsync/s (before) = {:.2}x, / {after:.0} fsync/s (after) = {:.2}x",
            rate / before,
            rate / after
        );
    }
    if let Some((_, rate)) = rates.iter().find(|(w, _)| *w == 64) {
        for (label, fsync) in [("before", before), ("after", after)] {
            let ratio = rate / fsync;
            let verdict = if ratio >= TARGET_RATIO {
                "MET"
            } else {
                "NOT MET"
            };
            println!(
                "target (64 writers >= {TARGET_RATIO}x fsync rate, baseline {label}): {verdict} ({ratio:.2}x)"
            );
        }
    }
}

async fn bench() {
    let clock = Arc::new(SystemClock::new());
    let root = tempfile::tempdir().expect("tempdir");
    println!("data in {}", root.path().display());

    let (fsyncs, fsync_per_sec) = fsync_rate(root.path(), &clock);
    println!(
        "fsync baseline: {fsyncs} x ({FSYNC_RECORD_BYTES} B write + sync_data) in {FSYNC_SECS} s = {fsync_per_sec:.0} fsync/s ({:.3} ms each)",
        1e3 / fsync_per_sec
    );

    let dirs: Vec<_> = (0..3)
        .map(|_| tempfile::tempdir_in(root.path()).expect("tempdir"))
        .collect();
    let net = InMemoryNetwork::new();
    let nodes = start_cluster(&net, &dirs).await;
    let leader_id = agreed_leader(&nodes).await;
    let nodes: Vec<Arc<Node>> = nodes.into_iter().map(Arc::new).collect();
    let leader = nodes
        .iter()
        .find(|n| n.id() == leader_id)
        .expect("leader among nodes");
    let follower = nodes
        .iter()
        .find(|n| n.id() != leader_id)
        .expect("a follower");
    println!("leader: {leader_id}, follower read from: {}", follower.id());
    println!();

    print_put_header();
    let mut rates = Vec::new();
    for writers in WRITERS {
        let (fsyncs_before, applies_before) = (log_fsyncs(leader), apply_writes(leader));
        let p = put_phase(leader, &clock, writers).await;
        let fsyncs = log_fsyncs(leader) - fsyncs_before;
        let applies = apply_writes(leader) - applies_before;
        let label = format!("{writers} writers");
        print_put_row(&label, &p, fsync_per_sec, fsyncs, applies);
        rates.push((writers, p.rate()));
    }

    // the disk again, after the writes: the machine is shared, its fsync rate drifts
    let (fsyncs, fsync_after) = fsync_rate(root.path(), &clock);
    println!();
    println!(
        "fsync baseline after puts: {fsyncs} x in {FSYNC_SECS} s = {fsync_after:.0} fsync/s ({:.3} ms each)",
        1e3 / fsync_after
    );

    read_phases(leader, follower, &clock).await;

    print_ratios(&rates, fsync_per_sec, fsync_after);

    for n in &nodes {
        n.shutdown().await;
    }
}

fn main() {
    // `cargo bench` passes `--bench`; a filter-less driver ignores its arguments.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(bench());
}
