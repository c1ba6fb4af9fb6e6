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

/// A node restarted on `engine` after a crash with `acked` steps acknowledged: it shows the
/// state after `acked` steps or after the one in flight, never a part of it, and its next
/// write gets the next revision.
async fn restarted_holds(engine: Arc<dyn Engine>, expected: &[Seen], acked: usize, what: &str) {
    let node = start(engine).await;
    let got = seen(&node).await;
    let step = if got == expected[acked] {
        acked
    } else {
        acked + 1
    };
    assert!(
        expected.get(step) == Some(&got),
        "{what}: {acked} steps acknowledged, the restarted node shows none of the states \
         after {acked} or {} steps: {got:#?}",
        acked + 1
    );
    let next = node.put(&b"after"[..], &b"restart"[..]).await.unwrap();
    assert_eq!(next.header.revision, got.revision.next(), "{what}");
    node.shutdown().await;
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
            restarted_holds(
                Arc::new(image),
                &expected,
                acked,
                &format!("failpoint {k}, {kind}"),
            )
            .await;
            restarts += 1;
        }
    }
}

/// An engine that arms its failpoint when a snapshot install begins: `after` writes later
/// (the install's marker write is the 0th) every write fails, as if the process died.
struct DiesDuringInstall {
    inner: Arc<MemEngine>,
    meta: keel_storage::engine::ColumnFamily,
    after: u64,
}

impl DiesDuringInstall {
    fn starts_install(&self, batch: &keel_storage::engine::WriteBatch) -> bool {
        batch.ops().any(|op| {
            matches!(op, keel_storage::engine::BatchOp::Put { cf, key, .. }
                if cf == self.meta && key == keel_storage::schema::META_INSTALLING)
        })
    }
}

impl Engine for DiesDuringInstall {
    fn column_family(
        &self,
        name: &str,
    ) -> keel_storage::Result<keel_storage::engine::ColumnFamily> {
        self.inner.column_family(name)
    }
    fn write(
        &self,
        batch: keel_storage::engine::WriteBatch,
        durability: keel_storage::engine::Durability,
    ) -> keel_storage::Result<()> {
        if self.starts_install(&batch) {
            self.inner.fail_after_writes(self.after);
        }
        self.inner.write(batch, durability)
    }
    fn flush_buffered(&self) -> keel_storage::Result<()> {
        self.inner.flush_buffered()
    }
    fn sync(&self) -> keel_storage::Result<()> {
        self.inner.sync()
    }
    fn view(&self) -> keel_storage::Result<Box<dyn keel_storage::engine::ReadView + '_>> {
        self.inner.view()
    }
    fn size_bytes(&self) -> keel_storage::Result<u64> {
        self.inner.size_bytes()
    }
    fn live_bytes(&self) -> keel_storage::Result<u64> {
        self.inner.live_bytes()
    }
    fn size_bytes_of(&self, column_families: &[&str]) -> keel_storage::Result<u64> {
        self.inner.size_bytes_of(column_families)
    }
    fn compact_all(&self) -> keel_storage::Result<()> {
        self.inner.compact_all()
    }
    fn check_healthy(&self) -> keel_storage::Result<()> {
        self.inner.check_healthy()
    }
}

fn member(id: MemberId, net: &keel::InMemoryNetwork, engine: Arc<dyn Engine>) -> NodeBuilder {
    let ids = (1..=3).map(MemberId::new);
    NodeBuilder::new(id)
        .engine(engine)
        .initial_members(ids.map(|i| (i, format!("n{i}"))))
        .network(net.endpoint(id))
        .timings(Timings {
            heartbeat_interval: Duration::from_millis(20),
            election_timeout: Duration::from_millis(150),
            request_timeout: Duration::from_secs(5),
        })
        .snapshot_policy(SnapshotPolicy {
            entries_between: 10,
            catch_up_entries: 0,
        })
}

/// Poll `node`'s local keyspace until it equals `want` (`true`) or `dies` is poisoned
/// (`false`), up to 10 s.
async fn catches_up_or_dies(
    node: &Node,
    want: &[(Vec<u8>, Vec<u8>)],
    dies: &MemEngine,
    what: &str,
) -> bool {
    let poll = async {
        loop {
            if dies.check_healthy().is_err() {
                return false;
            }
            // (a read fails once the engine is poisoned: checked on the next turn)
            let read = RangeRequest::new(KeyRange::all());
            if let Ok(all) = node.range(&read, ReadConsistency::Serializable).await {
                if all
                    .body
                    .kvs
                    .iter()
                    .map(|kv| (kv.key.to_vec(), kv.value.to_vec()))
                    .eq(want.iter().cloned())
                {
                    return true;
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    let shown = tokio::time::timeout(Duration::from_secs(10), poll).await;
    match shown {
        Ok(caught_up) => caught_up,
        Err(_) => panic!(
            "{what}: neither caught up nor died in 10 s: {:?}",
            node.status().await
        ),
    }
}

/// Keys and values, as compared.
type Kvs = Vec<(Vec<u8>, Vec<u8>)>;

/// A 3-member cluster where one follower missed 30 writes that the others snapshotted and
/// purged: the running members, the follower's id and disk (as a clean stop left it), and
/// the keyspace it must reach.
async fn a_member_behind_a_purge(
    net: &keel::InMemoryNetwork,
) -> (Vec<Node>, MemberId, MemEngine, Kvs) {
    // weak handles only: shutdown waits until a node's engine has no other user
    let mut engines = Vec::new();
    let mut nodes = Vec::new();
    for id in (1..=3).map(MemberId::new) {
        let engine = Arc::new(MemEngine::new(&Node::column_families()));
        engines.push(Arc::downgrade(&engine));
        let node = member(id, net, engine).start().await.unwrap();
        net.register(id, node.peer_handler());
        nodes.push(node);
    }
    let leader = nodes[0]
        .wait_for_leader(Duration::from_secs(10))
        .await
        .unwrap();
    let lagging = (1..=3).map(MemberId::new).find(|id| *id != leader).unwrap();
    let at = (lagging.get() - 1) as usize;
    net.unregister(lagging);
    let disk = engines[at].upgrade().unwrap().reopen(&[]); // a clean stop keeps every write
    nodes.remove(at).shutdown().await;
    for i in 0..30u32 {
        nodes[0]
            .put(format!("key{i:02}"), format!("value{i}"))
            .await
            .unwrap();
    }
    // (nodes[0] may be a follower: the reference is a linearizable read)
    let all = RangeRequest::new(KeyRange::all());
    let read = nodes[0]
        .range(&all, ReadConsistency::Linearizable)
        .await
        .unwrap();
    let want: Kvs = (read.body.kvs.iter())
        .map(|kv| (kv.key.to_vec(), kv.value.to_vec()))
        .collect();
    assert_eq!(want.len(), 30);
    // the others have purged what the lagging member lacks: it must take a snapshot
    for node in &nodes {
        let purged = |s: &keel::Status| s.purged_index.is_some_and(|p| p >= 20);
        node.wait_for_status(Duration::from_secs(10), purged)
            .await
            .unwrap();
    }
    (nodes, lagging, disk, want)
}

/// One run: the member behind a purge restarts and dies `after` writes into the snapshot
/// install; it is restarted from the `kind` crash image and must catch up. Returns false
/// when the install finished before the failpoint.
async fn install_interrupted(after: u64, kind: &str) -> bool {
    let net = keel::InMemoryNetwork::new();
    let (nodes, lagging, disk, want) = a_member_behind_a_purge(&net).await;
    let engine = Arc::new(disk);
    let meta = engine.column_family(keel_storage::schema::META_CF).unwrap();
    let dying = Arc::new(DiesDuringInstall {
        inner: engine.clone(),
        meta,
        after,
    });
    let node = member(lagging, &net, dying).start().await.unwrap();
    net.register(lagging, node.peer_handler());
    let what = format!("failpoint {after}, {kind}");
    catches_up_or_dies(&node, &want, &engine, &what).await;
    net.unregister(lagging);
    node.shutdown().await;
    // (holding the inner engine does not delay shutdown: the node waits on its wrapper)
    let finished = engine.check_healthy().is_ok();
    let image = if kind == "power cut" {
        engine.crash()
    } else {
        engine.reopen(&[])
    };
    if !finished {
        let restarted = member(lagging, &net, Arc::new(image))
            .start()
            .await
            .unwrap_or_else(|e| panic!("{what}: restart failed: {e}"));
        net.register(lagging, restarted.peer_handler());
        let healthy = MemEngine::new(&[]);
        assert!(catches_up_or_dies(&restarted, &want, &healthy, &what).await);
        restarted.shutdown().await;
    }
    for n in nodes {
        n.shutdown().await;
    }
    !finished
}

/// A member that missed entries the others purged catches up by a snapshot install; it dies
/// at each write of the install in turn. Restarted from either crash image, it must start
/// and catch up to exactly the others' keyspace: an interrupted install is finished from its
/// staged copy, never served half done and never leaves a member that cannot start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_crashed_at_every_write_of_a_snapshot_install_restarts_and_catches_up() {
    for kind in ["process kill", "power cut"] {
        let mut after = 0;
        while install_interrupted(after, kind).await {
            after += 1;
        }
        assert!(after > 2, "the install made only {after} writes");
        eprintln!("snapshot install, {kind}: {after} failpoints checked");
    }
}

#[path = "../../keel-storage/tests/support/abort.rs"]
mod abort;

const NODE_CHILD_ENV: &str = "KEEL_NODE_FAILPOINT";

fn rocks(dir: &std::path::Path) -> keel_storage::engine::RocksEngine {
    let options = keel_storage::engine::RocksOptions::new(&Node::column_families());
    keel_storage::engine::RocksEngine::open(dir, &options).unwrap()
}

/// The child of the RocksDB tier: start a node on `dir`, die just before the node's `k`-th
/// write after start, print `ack <step>` once each step is acknowledged.
async fn node_child(spec: &str) {
    use std::io::Write as _;
    let (k, dir) = spec.split_once(' ').unwrap();
    let engine = Arc::new(abort::AbortAt::new(rocks(std::path::Path::new(dir))));
    let node = start(engine.clone()).await;
    engine.arm(k.parse().unwrap());
    let mut out = std::io::stdout();
    for (at, step) in workload().iter().enumerate() {
        run(&node, at, step).await.unwrap();
        writeln!(out, "ack {at}").unwrap();
        out.flush().unwrap();
    }
    node.shutdown().await;
}

/// The same workload on a real RocksDB directory, in a child process that dies (`abort()`)
/// just before the node's first, second, third ... write: RocksDB's own recovery rebuilds
/// what the restarted node finds (a killed process's disk: what reached RocksDB's WAL). It
/// must hold every acknowledged step (and possibly the one in flight, never a part of it) and
/// keep serving writes at the next revision.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_on_rocksdb_killed_at_every_write_restarts_with_every_acknowledged_step() {
    use std::io::BufRead as _;
    use std::os::unix::process::ExitStatusExt as _;
    if let Ok(spec) = std::env::var(NODE_CHILD_ENV) {
        return node_child(&spec).await;
    }
    let name = "a_node_on_rocksdb_killed_at_every_write_restarts_with_every_acknowledged_step";
    let expected = reference().await;
    let steps = workload().len();
    let root = tempfile::tempdir().unwrap();
    for k in 0u64.. {
        let dir = root.path().join(format!("crash-{k}"));
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args([name, "--exact", "--nocapture"])
            .env(NODE_CHILD_ENV, format!("{k} {}", dir.display()))
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        let acked = stdout
            .lines()
            .map(Result::unwrap)
            .filter(|l| l.starts_with("ack "))
            .count();
        let status = child.wait().unwrap();
        if status.success() {
            assert_eq!(
                acked, steps,
                "a child that completed acknowledged every step"
            );
            assert!(k > 40, "the workload made only {k} writes");
            eprintln!("RocksDB: {k} failpoints, {k} restarts checked");
            return;
        }
        assert_eq!(status.signal(), Some(6), "failpoint {k}: {status:?}");
        restarted_holds(
            Arc::new(rocks(&dir)),
            &expected,
            acked,
            &format!("failpoint {k}"),
        )
        .await;
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
