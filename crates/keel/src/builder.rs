//! [`NodeBuilder`]: configure and start a [`Node`].

use crate::codec;
use crate::error::NodeError;
use crate::limits::{
    ELECTION_TIMEOUT_DEFAULT, HEARTBEAT_INTERVAL_DEFAULT, REQUEST_TIMEOUT_DEFAULT,
    SNAPSHOT_CATCH_UP_ENTRIES_DEFAULT, SNAPSHOT_ENTRIES_DEFAULT,
};
use crate::node::Node;
use crate::raft::{Consensus, ConsensusConfig, Network, NoNetwork};
use crate::watch::WatchRegistry;
use keel_storage::engine::{Durability, Engine, MemEngine};
use keel_storage::{DurableLog, MvccLimits, MvccStore, LOG_CF};
use keel_types::{ClusterId, MemberId};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Key of the cluster id in the log's metadata.
const META_CLUSTER_ID: &str = "cluster_id";

/// The node's timings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timings {
    /// Raft heartbeat interval (etcd: 100 ms).
    pub heartbeat_interval: Duration,
    /// Minimum election timeout; each timeout is drawn between it and twice it (etcd: 1 s).
    pub election_timeout: Duration,
    /// Deadline of one client call, forwarding and retries included.
    pub request_timeout: Duration,
}

/// When the node snapshots its state and purges its log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapshotPolicy {
    /// Applied entries between two snapshots.
    pub entries_between: u64,
    /// Entries kept in the log behind the latest snapshot.
    pub catch_up_entries: u64,
}

impl Default for SnapshotPolicy {
    fn default() -> Self {
        SnapshotPolicy {
            entries_between: SNAPSHOT_ENTRIES_DEFAULT,
            catch_up_entries: SNAPSHOT_CATCH_UP_ENTRIES_DEFAULT,
        }
    }
}

impl Default for Timings {
    fn default() -> Self {
        Timings {
            heartbeat_interval: HEARTBEAT_INTERVAL_DEFAULT,
            election_timeout: ELECTION_TIMEOUT_DEFAULT,
            request_timeout: REQUEST_TIMEOUT_DEFAULT,
        }
    }
}

/// Where the node keeps its state.
enum Storage {
    Memory,
    Dir(PathBuf),
    Engine(Arc<dyn Engine>),
}

/// Configures a [`Node`]. By default: a single-member cluster (this member), in memory, no
/// network, etcd's timings.
///
/// # Examples
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let dir = tempfile::tempdir().unwrap();
/// let node = keel::NodeBuilder::new(keel_types::MemberId::new(7))
///     .name("seven")
///     .data_dir(dir.path())
///     .start()
///     .await?;
/// assert_eq!(node.members().await?[0].name, "seven");
/// node.shutdown().await;
/// # Ok::<(), keel::NodeError>(())
/// # }).unwrap();
/// ```
pub struct NodeBuilder {
    id: MemberId,
    name: Option<String>,
    storage: Storage,
    network: Option<Arc<dyn Network>>,
    initial_members: BTreeMap<MemberId, String>,
    timings: Timings,
    snapshots: SnapshotPolicy,
}

impl std::fmt::Debug for NodeBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeBuilder")
            .field("id", &self.id)
            .field("initial_members", &self.initial_members)
            .field("timings", &self.timings)
            .finish_non_exhaustive()
    }
}

impl NodeBuilder {
    /// A builder for member `id`.
    pub fn new(id: MemberId) -> Self {
        NodeBuilder {
            id,
            name: None,
            storage: Storage::Memory,
            network: None,
            initial_members: BTreeMap::new(),
            timings: Timings::default(),
            snapshots: SnapshotPolicy::default(),
        }
    }

    /// The member's human-readable name (default `member-<id>`).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Keep state in a RocksDB database in `dir` (created if missing).
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.storage = Storage::Dir(dir.into());
        self
    }

    /// Keep state in `engine`, which must have [`Node::column_families`] registered.
    pub fn engine(mut self, engine: Arc<dyn Engine>) -> Self {
        self.storage = Storage::Engine(engine);
        self
    }

    /// How this member reaches the others (default: nobody, for a single-member cluster).
    pub fn network(mut self, network: Arc<dyn Network>) -> Self {
        self.network = Some(network);
        self
    }

    /// The members of the cluster's first configuration, this one included (default: only
    /// this member). Used on the very first start of a fresh data directory; on later starts
    /// it must describe the same cluster.
    pub fn initial_members(
        mut self,
        members: impl IntoIterator<Item = (MemberId, String)>,
    ) -> Self {
        self.initial_members = members.into_iter().collect();
        self
    }

    /// The node's timings.
    pub fn timings(mut self, timings: Timings) -> Self {
        self.timings = timings;
        self
    }

    /// When to snapshot and purge the log.
    pub fn snapshot_policy(mut self, policy: SnapshotPolicy) -> Self {
        self.snapshots = policy;
        self
    }

    /// Open the storage, recover from it, start consensus and (on a fresh directory)
    /// initialize the first configuration.
    ///
    /// # Errors
    /// [`NodeError::Config`] (this member not among the initial members, bad timings),
    /// [`NodeError::ClusterMismatch`] (the data belongs to another cluster), storage or
    /// consensus failure.
    pub async fn start(self) -> Result<Node, NodeError> {
        let name = self
            .name
            .clone()
            .unwrap_or_else(|| format!("member-{}", self.id));
        let mut members = self.initial_members.clone();
        if members.is_empty() {
            members.insert(self.id, name.clone());
        }
        match members.get(&self.id) {
            Some(n) if *n == name || self.name.is_none() => {}
            Some(n) => {
                return Err(NodeError::Config {
                    detail: format!(
                        "member {} is named {n:?} in the initial members, not {name:?}",
                        self.id
                    ),
                })
            }
            None => {
                return Err(NodeError::Config {
                    detail: format!("member {} is not among the initial members", self.id),
                })
            }
        }
        let engine = open_engine(self.storage)?;
        let store = Arc::new(MvccStore::open_with(
            Arc::clone(&engine),
            MvccLimits::default(),
            Durability::Buffered,
        )?);
        let log = Arc::new(DurableLog::open(Arc::clone(&engine))?);
        let cluster_id = keel_membership::cluster_id_of(members.keys().copied());
        check_cluster_id(&log, cluster_id)?;
        let config = ConsensusConfig {
            id: self.id,
            initial_members: members,
            heartbeat_interval: self.timings.heartbeat_interval,
            election_timeout: self.timings.election_timeout,
            recovery_timeout: self.timings.request_timeout,
            snapshot_entries_between: self.snapshots.entries_between,
            snapshot_catch_up_entries: self.snapshots.catch_up_entries,
        };
        let network = self.network.unwrap_or_else(|| Arc::new(NoNetwork));
        let watches = Arc::new(WatchRegistry::default());
        let wake = Arc::clone(&watches);
        let on_install = Arc::new(move || wake.wake_all());
        let consensus =
            Consensus::start(config, engine, Arc::clone(&store), log, network, on_install).await?;
        Ok(Node::new(
            self.id,
            cluster_id,
            self.timings.request_timeout,
            consensus,
            store,
            watches,
        ))
    }
}

fn open_engine(storage: Storage) -> Result<Arc<dyn Engine>, NodeError> {
    let cfs = Node::column_families();
    Ok(match storage {
        Storage::Memory => Arc::new(MemEngine::new(&cfs)),
        Storage::Engine(e) => e,
        Storage::Dir(dir) => {
            let options = keel_storage::engine::RocksOptions::new(&cfs);
            Arc::new(keel_storage::engine::RocksEngine::open(dir, &options)?)
        }
    })
}

/// Record the cluster id on first start; refuse data of another cluster afterwards.
fn check_cluster_id(log: &DurableLog, expected: ClusterId) -> Result<(), NodeError> {
    match log.meta(META_CLUSTER_ID)? {
        Some(bytes) => {
            let found: ClusterId = codec::decode("cluster id", &bytes)?;
            if found != expected {
                return Err(NodeError::ClusterMismatch { expected, found });
            }
            Ok(())
        }
        None => {
            let bytes = codec::encode("cluster id", &expected)?;
            log.save_meta(META_CLUSTER_ID, &bytes, Durability::Synced)?;
            Ok(())
        }
    }
}

/// The column families a node's engine needs.
pub(crate) fn column_families() -> Vec<&'static str> {
    let mut cfs: Vec<&'static str> = MvccStore::COLUMN_FAMILIES.to_vec();
    cfs.push(LOG_CF);
    cfs
}
