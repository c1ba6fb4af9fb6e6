//! The simulated cluster: in-process nodes over the in-memory network, each on a
//! [`Backing`] (in-memory engines by default; the RocksDB tier brings its own), and the
//! faults the schedule injects.

use keel::runtime::{self, RuntimeClock};
use keel::{Clock, InMemoryNetwork, LessorConfig, Node, NodeBuilder, SnapshotPolicy, Timings};
use keel_storage::engine::{ColumnFamily, Durability, Engine, MemEngine, ReadView, WriteBatch};
use keel_storage::StorageError;
use keel_types::MemberId;
use std::future::Future;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Raft timings of the simulated members.
pub const TIMINGS: Timings = Timings {
    heartbeat_interval: Duration::from_millis(50),
    election_timeout: Duration::from_millis(300),
    request_timeout: Duration::from_secs(1),
};

/// Snapshots every 100 entries and a log kept 20 entries behind: a member that falls
/// behind (crashed, cut off, just added) often catches up through a snapshot transfer, so
/// the battery exercises snapshot export, chunked transfer and install under its faults.
pub const SNAPSHOTS: SnapshotPolicy = SnapshotPolicy {
    entries_between: 100,
    catch_up_entries: 20,
};

/// A small seeded generator (xorshift64*).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        // Spread small seeds; never zero.
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n.max(1)
    }

    pub fn index(&mut self, len: usize) -> usize {
        usize::try_from(self.below(len as u64)).unwrap()
    }
}

/// A member's disk: the node's engine handle, delegating to an engine the harness also holds
/// (to crash it). The node waits at shutdown until it holds the last handle on its engine;
/// this wrapper is that handle, so the harness's own does not count.
pub struct Disk(pub Arc<dyn Engine>);

impl Engine for Disk {
    fn column_family(&self, name: &str) -> Result<ColumnFamily, StorageError> {
        self.0.column_family(name)
    }
    fn write(&self, batch: WriteBatch, durability: Durability) -> Result<(), StorageError> {
        self.0.write(batch, durability)
    }
    fn flush_buffered(&self) -> Result<(), StorageError> {
        self.0.flush_buffered()
    }
    fn sync(&self) -> Result<(), StorageError> {
        self.0.sync()
    }
    fn view(&self) -> Result<Box<dyn ReadView + '_>, StorageError> {
        self.0.view()
    }
    fn size_bytes(&self) -> Result<u64, StorageError> {
        self.0.size_bytes()
    }
    fn live_bytes(&self) -> Result<u64, StorageError> {
        self.0.live_bytes()
    }
    fn size_bytes_of(&self, column_families: &[&str]) -> Result<u64, StorageError> {
        self.0.size_bytes_of(column_families)
    }
    fn compact_all(&self) -> Result<(), StorageError> {
        self.0.compact_all()
    }
    fn check_healthy(&self) -> Result<(), StorageError> {
        self.0.check_healthy()
    }
}

/// Where a member's data lives, and how the schedule crashes it or fails its disk.
pub trait Backing: Send + Sync {
    /// The engine handle for the member's next start (a [`Disk`]: the node's only handle).
    fn engine(&self) -> Result<Arc<dyn Engine>, String>;
    /// Fail every fsync from now on: the store poisons at its next sync.
    fn fail_syncs(&self);
    /// Crash: every write from now on fails, and the next [`Backing::engine`] finds what
    /// survives the crash.
    fn crash(&self);
}

/// Makes a fresh backing for each member.
pub type Backings = Arc<dyn Fn() -> Arc<dyn Backing> + Send + Sync>;

/// The in-memory backing: a crash keeps exactly the synced writes (a power cut).
struct MemBacking(Mutex<Arc<MemEngine>>);

impl Backing for MemBacking {
    fn engine(&self) -> Result<Arc<dyn Engine>, String> {
        let engine: Arc<dyn Engine> = self.0.lock().unwrap().clone();
        Ok(Arc::new(Disk(engine)))
    }
    fn fail_syncs(&self) {
        self.0.lock().unwrap().fail_syncs();
    }
    fn crash(&self) {
        let mut engine = self.0.lock().unwrap();
        // Writes after the image fail, so the zombie cannot acknowledge them.
        engine.fail_writes();
        engine.fail_syncs();
        *engine = Arc::new(engine.crash());
    }
}

/// In-memory backings (the default of both in-process tiers).
pub fn in_memory() -> Backings {
    Arc::new(|| {
        let engine = Arc::new(MemEngine::new(&Node::column_families()));
        Arc::new(MemBacking(Mutex::new(engine)))
    })
}

struct Member {
    id: MemberId,
    name: String,
    backing: Arc<dyn Backing>,
    /// `None` while crashed.
    node: Option<Node>,
    /// Added at runtime (restarts join through the others, not the first configuration).
    joined: bool,
    /// Its disk has failed (fsyncs error); it is restarted at the heal.
    disk_failed: bool,
}

/// The members, their engines and the network between them.
pub struct Cluster {
    pub net: InMemoryNetwork,
    /// The first configuration.
    initial: Vec<MemberId>,
    members: Mutex<Vec<Member>>,
    backings: Backings,
    /// The runtime's clock: real time on tokio, virtual time on the simulation runtime. The
    /// members measure lease time on it too, so client timestamps and lease deadlines agree.
    clock: Arc<RuntimeClock>,
    /// What the schedule did and when (for failure reports).
    events: Mutex<Vec<(u64, String)>>,
    /// The highest revision the watcher has received (compaction stays at or below it).
    pub watch_progress: AtomicU64,
}

impl Cluster {
    /// Start `size` members on fresh backings made by `backings`.
    pub async fn start(size: u64, backings: Backings) -> Result<Arc<Cluster>, String> {
        let ids: Vec<MemberId> = (1..=size).map(MemberId::new).collect();
        let cluster = Arc::new(Cluster {
            net: InMemoryNetwork::new(),
            initial: ids.clone(),
            members: Mutex::new(Vec::new()),
            backings: backings.clone(),
            clock: Arc::new(RuntimeClock::new()),
            events: Mutex::new(Vec::new()),
            watch_progress: AtomicU64::new(0),
        });
        for id in ids {
            let member = Member {
                id,
                name: format!("n{id}"),
                backing: backings(),
                node: None,
                joined: false,
                disk_failed: false,
            };
            let node = cluster.boot(&member).await?;
            cluster.members.lock().unwrap().push(Member {
                node: Some(node),
                ..member
            });
        }
        Ok(cluster)
    }

    async fn boot(&self, m: &Member) -> Result<Node, String> {
        let shared = m.backing.engine()?;
        let builder = NodeBuilder::new(m.id)
            .name(m.name.clone())
            .peer_urls([format!("unix://{}", m.name)])
            .engine(shared)
            .network(self.net.endpoint(m.id))
            .clock(self.clock.clone())
            .timings(TIMINGS)
            .snapshot_policy(SNAPSHOTS)
            .lessor_config(LessorConfig {
                election_timeout: TIMINGS.election_timeout,
                // Checkpoints well inside the lease client's TTL, so leader changes resume
                // from checkpointed remaining TTLs.
                checkpoint_interval: Some(Duration::from_millis(500)),
                ..LessorConfig::default()
            });
        let builder = if m.joined {
            builder.join_existing(self.ids().into_iter().filter(|i| *i != m.id))
        } else {
            builder.initial_members(self.initial.iter().map(|i| (*i, format!("n{i}"))))
        };
        let node = builder
            .start()
            .await
            .map_err(|e| format!("member {} did not start: {e:?}", m.id))?;
        self.net.register(m.id, node.peer_handler());
        Ok(node)
    }

    /// Record a schedule event at the current time.
    pub fn note(&self, what: String) {
        let now = self.now();
        self.events.lock().unwrap().push((now, what));
    }

    /// The recorded schedule events, one per line.
    pub fn timeline(&self) -> String {
        let events = self.events.lock().unwrap();
        let lines: Vec<String> = events.iter().map(|(t, e)| format!("  [{t}] {e}")).collect();
        lines.join("\n")
    }

    /// The current members (running or crashed).
    pub fn ids(&self) -> Vec<MemberId> {
        self.members.lock().unwrap().iter().map(|m| m.id).collect()
    }

    /// Microseconds since the cluster started (the histories' clock).
    pub fn now(&self) -> u64 {
        u64::try_from(self.clock.now().as_micros()).unwrap()
    }

    /// The running nodes.
    pub fn live(&self) -> Vec<Node> {
        let members = self.members.lock().unwrap();
        members.iter().filter_map(|m| m.node.clone()).collect()
    }

    /// A running node chosen by `rng` (`None` only if every member is down).
    pub fn pick(&self, rng: &mut Rng) -> Option<Node> {
        let live = self.live();
        (!live.is_empty()).then(|| live[rng.index(live.len())].clone())
    }

    /// The leader some running member knows of, if any.
    pub async fn leader(&self) -> Option<MemberId> {
        for node in self.live() {
            let status = runtime::timeout(Duration::from_millis(500), node.status()).await;
            if let Some(Ok(status)) = status {
                if status.leader.is_some() {
                    return status.leader;
                }
            }
        }
        None
    }

    /// Kill member `id`: nothing it writes from now on reaches its disk, it can no longer
    /// talk, and a restart finds what its backing keeps after a crash (in memory: what it had
    /// synced, as after a power cut).
    pub async fn crash(&self, id: MemberId) {
        self.note(format!("crash n{id}"));
        // Cut it off first: a reply it sends after the disk image is taken must not count.
        self.net.isolate(id);
        self.net.unregister(id);
        let old = {
            let mut members = self.members.lock().unwrap();
            let Some(m) = members.iter_mut().find(|m| m.id == id) else {
                return;
            };
            let Some(node) = m.node.take() else {
                return;
            };
            m.backing.crash();
            m.disk_failed = false;
            node
        };
        old.shutdown().await;
    }

    /// Make member `id`'s disk fail every fsync from now on, while it keeps running: its
    /// store poisons at the next sync and it must stop serving rather than answer wrongly.
    pub fn fail_disk(&self, id: MemberId) {
        let mut members = self.members.lock().unwrap();
        if let Some(m) = members.iter_mut().find(|m| m.id == id && m.node.is_some()) {
            self.note(format!("disk fails on n{id}"));
            m.backing.fail_syncs();
            m.disk_failed = true;
        }
    }

    /// Kill the members whose disk failed (to be restarted from what they had synced).
    pub async fn crash_failed_disks(&self) {
        let failed: Vec<MemberId> = {
            let members = self.members.lock().unwrap();
            members
                .iter()
                .filter(|m| m.disk_failed)
                .map(|m| m.id)
                .collect()
        };
        for id in failed {
            self.crash(id).await;
        }
    }

    /// Restart every crashed member from its synced image.
    pub async fn restart_crashed(&self) -> Result<(), String> {
        let down: Vec<Member> = {
            let members = self.members.lock().unwrap();
            members
                .iter()
                .filter(|m| m.node.is_none())
                .map(|m| Member {
                    name: m.name.clone(),
                    backing: m.backing.clone(),
                    node: None,
                    disk_failed: false,
                    ..*m
                })
                .collect()
        };
        for m in down {
            self.net.rejoin(m.id);
            let node = self.boot(&m).await?;
            self.note(format!("restarted n{}", m.id));
            let mut members = self.members.lock().unwrap();
            if let Some(slot) = members.iter_mut().find(|s| s.id == m.id) {
                slot.node = Some(node);
            }
        }
        Ok(())
    }

    /// Replace a random voter under load, as an operator would: add a learner, start it,
    /// promote it once in sync, remove the old member and stop it.
    pub async fn replace(&self, rng: &mut Rng, serial: u64) -> Result<(), String> {
        let bound = Duration::from_secs(10);
        let name = format!("r{serial}");
        let url = format!("unix://{name}");
        let via = self.pick(rng).ok_or("no member running")?;
        let added = runtime::timeout(bound, via.member_add(&name, &[&url]))
            .await
            .ok_or_else(|| format!("member add of {name} did not answer"))?
            .map_err(|e| format!("member add of {name}: {e}"))?;
        let member = Member {
            id: added.member_id,
            name,
            backing: (self.backings)(),
            node: None,
            joined: true,
            disk_failed: false,
        };
        let node = self.boot(&member).await?;
        self.note(format!("added learner n{}", member.id));
        self.members.lock().unwrap().push(Member {
            node: Some(node),
            ..member
        });
        promote_when_in_sync(self, rng, added.member_id, bound).await?;
        let victims: Vec<MemberId> = self
            .ids()
            .into_iter()
            .filter(|i| *i != added.member_id)
            .collect();
        let victim = victims[rng.index(victims.len())];
        let via = self
            .live()
            .into_iter()
            .find(|n| n.id() != victim)
            .ok_or("nobody to ask")?;
        runtime::timeout(bound, via.member_remove(victim))
            .await
            .ok_or_else(|| format!("member remove of {victim} did not answer"))?
            .map_err(|e| format!("member remove of {victim}: {e}"))?;
        self.note(format!("removed n{victim}"));
        self.net.unregister(victim);
        let gone = {
            let mut members = self.members.lock().unwrap();
            let at = members.iter().position(|m| m.id == victim);
            at.map(|at| members.remove(at))
        };
        if let Some(node) = gone.and_then(|m| m.node) {
            node.shutdown().await;
        }
        Ok(())
    }

    /// Stop every member.
    pub async fn shutdown(&self) {
        for node in self.live() {
            node.shutdown().await;
        }
    }
}

/// Call `op` on random running members until it succeeds once, for at most `bound`;
/// `None` when it never did.
pub async fn on_any_member<T, E, Fut>(
    cluster: &Cluster,
    rng: &mut Rng,
    bound: Duration,
    op: impl Fn(Node) -> Fut,
) -> Option<T>
where
    Fut: Future<Output = Result<T, E>>,
{
    let work = async {
        loop {
            if let Some(node) = cluster.pick(rng) {
                if let Ok(done) = op(node).await {
                    return done;
                }
            }
            runtime::sleep(Duration::from_millis(20)).await;
        }
    };
    runtime::timeout(bound, work).await
}

/// Promote learner `id`, retrying while the leader does not yet see it in sync.
async fn promote_when_in_sync(
    cluster: &Cluster,
    rng: &mut Rng,
    id: MemberId,
    bound: Duration,
) -> Result<(), String> {
    on_any_member(cluster, rng, bound, |node| async move {
        node.member_promote(id).await
    })
    .await
    .map(|_| ())
    .ok_or_else(|| format!("learner {id} never promoted"))
}

/// The kinds of fault a phase injects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fault {
    /// A symmetric partition: a minority apart from the rest.
    Partition,
    /// One or two directed links cut.
    OneWay,
    /// The leader cut off from everyone.
    IsolateLeader,
    /// Random delays on links (messages overtake each other).
    Delay,
    /// Lossy links: on about half the links, every 2nd to 5th message is lost.
    Loss,
    /// A random member killed, restarted at the phase's end.
    Crash,
    /// The leader killed, restarted at the phase's end.
    KillLeader,
    /// A voter replaced by a new member (add learner, promote, remove the old one).
    Replace,
    /// A random member's disk fails every fsync; it is restarted at the phase's end.
    DiskFailure,
    /// The history up to a fresh marker compacted away while the clients work.
    Compact,
    /// No fault: load only.
    Calm,
}

impl Fault {
    const ALL: [Fault; 11] = [
        Fault::Partition,
        Fault::OneWay,
        Fault::IsolateLeader,
        Fault::Delay,
        Fault::Loss,
        Fault::Crash,
        Fault::KillLeader,
        Fault::Replace,
        Fault::DiskFailure,
        Fault::Compact,
        Fault::Calm,
    ];

    pub fn pick(rng: &mut Rng) -> Fault {
        Fault::ALL[rng.index(Fault::ALL.len())]
    }
}

/// Inject `fault` (healed by [`heal`]); `serial` names a replacement member.
pub async fn inject(
    cluster: &Cluster,
    fault: Fault,
    rng: &mut Rng,
    serial: u64,
) -> Result<(), String> {
    let mut ids = cluster.ids();
    match fault {
        Fault::Partition => {
            // Fisher-Yates, then a minority of 1..=(n-1)/2 members.
            for i in (1..ids.len()).rev() {
                ids.swap(i, rng.index(i + 1));
            }
            let minority = 1 + rng.index((ids.len() - 1) / 2);
            let (a, b) = ids.split_at(minority);
            cluster.note(format!("partition {a:?} | {b:?}"));
            cluster.net.partition(&[a, b]);
        }
        Fault::OneWay => {
            for _ in 0..=rng.below(1) {
                let from = ids[rng.index(ids.len())];
                let to = ids[rng.index(ids.len())];
                if from != to {
                    cluster.note(format!("block n{from} -> n{to}"));
                    cluster.net.block(from, to);
                }
            }
        }
        Fault::IsolateLeader => {
            if let Some(leader) = cluster.leader().await {
                cluster.note(format!("isolate leader n{leader}"));
                cluster.net.isolate(leader);
            }
        }
        Fault::Delay => {
            for &from in &ids {
                for &to in &ids {
                    if from != to && rng.below(2) == 0 {
                        let ms = 1 + rng.below(40);
                        cluster.net.delay(from, to, Duration::from_millis(ms));
                    }
                }
            }
        }
        Fault::Loss => {
            for &from in &ids {
                for &to in &ids {
                    if from != to && rng.below(2) == 0 {
                        let n = u32::try_from(2 + rng.below(4)).unwrap();
                        cluster.note(format!("n{from} -> n{to} loses 1 in {n}"));
                        cluster.net.drop_every(from, to, n);
                    }
                }
            }
        }
        Fault::Crash => {
            let victim = ids[rng.index(ids.len())];
            cluster.crash(victim).await;
        }
        Fault::KillLeader => {
            if let Some(leader) = cluster.leader().await {
                cluster.crash(leader).await;
            }
        }
        Fault::Replace => cluster.replace(rng, serial).await?,
        Fault::DiskFailure => cluster.fail_disk(ids[rng.index(ids.len())]),
        // Run by the schedule itself (it keeps the compacted log).
        Fault::Compact | Fault::Calm => {}
    }
    Ok(())
}

/// Undo every fault: links restored, crashed members restarted from their disks.
pub async fn heal(cluster: &Cluster) -> Result<(), String> {
    cluster.net.heal();
    cluster.crash_failed_disks().await;
    cluster.restart_crashed().await
}
