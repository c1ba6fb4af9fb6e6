//! The simulated cluster: in-process nodes on in-memory engines over the in-memory network,
//! and the faults the schedule injects.

use keel::{InMemoryNetwork, Node, NodeBuilder, Timings};
use keel_storage::engine::{ColumnFamily, Durability, Engine, MemEngine, ReadView, WriteBatch};
use keel_storage::StorageError;
use keel_types::MemberId;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Raft timings of the simulated members.
pub const TIMINGS: Timings = Timings {
    heartbeat_interval: Duration::from_millis(50),
    election_timeout: Duration::from_millis(300),
    request_timeout: Duration::from_secs(1),
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

/// A member's disk: the node's engine handle, delegating to a [`MemEngine`] the harness
/// also holds (to crash it). The node waits at shutdown until it holds the last handle on
/// its engine; this wrapper is that handle, so the harness's own does not count.
struct Disk(Arc<MemEngine>);

impl Engine for Disk {
    fn column_family(&self, name: &str) -> Result<ColumnFamily, StorageError> {
        self.0.column_family(name)
    }
    fn write(&self, batch: WriteBatch, durability: Durability) -> Result<(), StorageError> {
        self.0.write(batch, durability)
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

struct Member {
    id: MemberId,
    engine: Arc<MemEngine>,
    /// `None` while crashed.
    node: Option<Node>,
}

/// The members, their engines and the network between them.
pub struct Cluster {
    pub net: InMemoryNetwork,
    pub ids: Vec<MemberId>,
    members: Mutex<Vec<Member>>,
    origin: Instant,
}

impl Cluster {
    /// Start `size` members with fresh engines.
    pub async fn start(size: u64) -> Arc<Cluster> {
        let ids: Vec<MemberId> = (1..=size).map(MemberId::new).collect();
        let cluster = Arc::new(Cluster {
            net: InMemoryNetwork::new(),
            ids: ids.clone(),
            members: Mutex::new(Vec::new()),
            origin: Instant::now(),
        });
        for id in ids {
            let engine = Arc::new(MemEngine::new(&Node::column_families()));
            let node = cluster.boot(id, &engine).await;
            cluster.members.lock().unwrap().push(Member {
                id,
                engine,
                node: Some(node),
            });
        }
        cluster
    }

    async fn boot(&self, id: MemberId, engine: &Arc<MemEngine>) -> Node {
        let shared: Arc<dyn Engine> = Arc::new(Disk(engine.clone()));
        let node = NodeBuilder::new(id)
            .name(format!("n{id}"))
            .engine(shared)
            .initial_members(self.ids.iter().map(|i| (*i, format!("n{i}"))))
            .network(self.net.endpoint(id))
            .timings(TIMINGS)
            .start()
            .await
            .unwrap_or_else(|e| panic!("member {id} did not start: {e}"));
        self.net.register(id, node.peer_handler());
        node
    }

    /// Microseconds since the cluster started (the histories' clock).
    pub fn now(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_micros()).unwrap()
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
            let status = tokio::time::timeout(Duration::from_millis(500), node.status()).await;
            if let Ok(Ok(status)) = status {
                if status.leader.is_some() {
                    return status.leader;
                }
            }
        }
        None
    }

    /// Kill member `id` as a power cut would: nothing it writes from now on reaches its
    /// disk, it can no longer talk, and what it had synced is what a restart finds.
    pub async fn crash(&self, id: MemberId) {
        // Cut it off first: a reply it sends after the disk image is taken must not count.
        self.net.isolate(id);
        self.net.unregister(id);
        let old = {
            let mut members = self.members.lock().unwrap();
            let m = members.iter_mut().find(|m| m.id == id).unwrap();
            let Some(node) = m.node.take() else {
                return;
            };
            // Writes after the image fail, so the zombie cannot acknowledge them.
            m.engine.fail_writes();
            m.engine.fail_syncs();
            m.engine = Arc::new(m.engine.crash());
            node
        };
        old.shutdown().await;
    }

    /// Restart every crashed member from its synced image.
    pub async fn restart_crashed(&self) {
        let down: Vec<(MemberId, Arc<MemEngine>)> = {
            let members = self.members.lock().unwrap();
            members
                .iter()
                .filter(|m| m.node.is_none())
                .map(|m| (m.id, m.engine.clone()))
                .collect()
        };
        for (id, engine) in down {
            self.net.rejoin(id);
            let node = self.boot(id, &engine).await;
            let mut members = self.members.lock().unwrap();
            members.iter_mut().find(|m| m.id == id).unwrap().node = Some(node);
        }
    }

    /// Stop every member.
    pub async fn shutdown(&self) {
        for node in self.live() {
            node.shutdown().await;
        }
    }
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
    /// A random member killed, restarted at the phase's end.
    Crash,
    /// The leader killed, restarted at the phase's end.
    KillLeader,
    /// No fault: load only.
    Calm,
}

impl Fault {
    const ALL: [Fault; 7] = [
        Fault::Partition,
        Fault::OneWay,
        Fault::IsolateLeader,
        Fault::Delay,
        Fault::Crash,
        Fault::KillLeader,
        Fault::Calm,
    ];

    pub fn pick(rng: &mut Rng) -> Fault {
        Fault::ALL[rng.index(Fault::ALL.len())]
    }
}

/// Inject `fault` (healed by [`heal`]).
pub async fn inject(cluster: &Cluster, fault: Fault, rng: &mut Rng) {
    let mut ids = cluster.ids.clone();
    match fault {
        Fault::Partition => {
            // Fisher-Yates, then a minority of 1..=(n-1)/2 members.
            for i in (1..ids.len()).rev() {
                ids.swap(i, rng.index(i + 1));
            }
            let minority = 1 + rng.index((ids.len() - 1) / 2);
            let (a, b) = ids.split_at(minority);
            cluster.net.partition(&[a, b]);
        }
        Fault::OneWay => {
            for _ in 0..=rng.below(1) {
                let from = ids[rng.index(ids.len())];
                let to = ids[rng.index(ids.len())];
                if from != to {
                    cluster.net.block(from, to);
                }
            }
        }
        Fault::IsolateLeader => {
            if let Some(leader) = cluster.leader().await {
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
        Fault::Crash => {
            let victim = ids[rng.index(ids.len())];
            cluster.crash(victim).await;
        }
        Fault::KillLeader => {
            if let Some(leader) = cluster.leader().await {
                cluster.crash(leader).await;
            }
        }
        Fault::Calm => {}
    }
}

/// Undo every fault: links restored, crashed members restarted from their disks.
pub async fn heal(cluster: &Cluster) {
    cluster.net.heal();
    cluster.restart_crashed().await;
}
