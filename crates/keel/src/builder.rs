//! [`NodeBuilder`]: configure and start a [`Node`].

use crate::codec;
use crate::error::NodeError;
use crate::limits::{
    ELECTION_TIMEOUT_DEFAULT, HEARTBEAT_INTERVAL_DEFAULT, REQUEST_TIMEOUT_DEFAULT,
    SNAPSHOT_CATCH_UP_ENTRIES_DEFAULT, SNAPSHOT_ENTRIES_DEFAULT,
};
use crate::node::Node;
use crate::raft::{
    fetch_members, verify_added, Consensus, ConsensusConfig, MemberNode, Network, NoNetwork,
};
use crate::watch::WatchRegistry;
use keel_storage::engine::{Durability, Engine, MemEngine};
use keel_storage::{DurableLog, MvccLimits, MvccStore, LOG_CF};
use keel_types::{ClusterId, MemberId};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Key of the cluster id in the log's metadata.
pub(crate) const META_CLUSTER_ID: &str = "cluster_id";

/// The node's timings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timings {
    /// Raft heartbeat interval (etcd: 100 ms). It must exceed the worst round trip between
    /// members: a heartbeat whose reply takes longer is abandoned, and a leader that gets no
    /// quorum of heartbeat replies in time serves no linearizable read.
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
pub(crate) enum Storage {
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
    pub(crate) storage: Storage,
    network: Option<Arc<dyn Network>>,
    initial_members: BTreeMap<MemberId, String>,
    /// Peer URLs of initial members other than this one (etcd's --initial-cluster).
    initial_peer_urls: BTreeMap<MemberId, Vec<String>>,
    peer_urls: Vec<String>,
    client_urls: Vec<String>,
    join: Option<Vec<MemberId>>,
    /// Rewrite the membership to this member alone at start (etcd's `--force-new-cluster`).
    force_new_cluster: bool,
    /// While leading, promote learners the rules find in sync.
    auto_promote: bool,
    /// Client requests slower than this are logged.
    slow_request: Duration,
    /// The space quota of the replicated state.
    quota_bytes: u64,
    /// The store's request limits.
    mvcc_limits: MvccLimits,
    timings: Timings,
    snapshots: SnapshotPolicy,
    /// Time for the lessor (lease deadlines); the Raft timers use the runtime's time.
    clock: Arc<dyn keel_types::Clock>,
    /// The lessor's configuration; `None`: the default with the Raft election timeout.
    lessor: Option<keel_lease::LessorConfig>,
    /// Token lifetime and password hashing cost.
    auth: AuthConfig,
}

/// Authentication settings (etcd's `--auth-token-ttl` and `--bcrypt-cost`).
///
/// # Examples
/// ```
/// use std::time::Duration;
/// let config = keel::AuthConfig { bcrypt_cost: 4, ..Default::default() };
/// assert_eq!(config.token_ttl, Duration::from_secs(300));
/// let builder = keel::Node::builder(keel_types::MemberId::new(1)).auth(config);
/// # drop(builder);
/// ```
#[derive(Clone, Debug)]
pub struct AuthConfig {
    /// How long a token lives without being used (etcd: 300 s).
    pub token_ttl: Duration,
    /// bcrypt cost of password hashes, 4..=31 (etcd: 10). Each step doubles the time an
    /// authentication takes, for users and for password guessers alike.
    pub bcrypt_cost: u32,
    /// Sign JWT tokens with these keys instead of issuing simple tokens (etcd's
    /// `--auth-token jwt,...`); `token_ttl` then does not apply (the JWT's own ttl does).
    pub jwt: Option<crate::auth::JwtConfig>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            token_ttl: Duration::from_secs(300),
            bcrypt_cost: keel_auth::limits::BCRYPT_COST_DEFAULT,
            jwt: None,
        }
    }
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
            initial_peer_urls: BTreeMap::new(),
            peer_urls: Vec::new(),
            client_urls: Vec::new(),
            join: None,
            force_new_cluster: false,
            auto_promote: false,
            slow_request: crate::metrics::SLOW_REQUEST,
            quota_bytes: crate::limits::QUOTA_BACKEND_BYTES_DEFAULT,
            auth: AuthConfig::default(),
            mvcc_limits: MvccLimits::default(),
            timings: Timings::default(),
            snapshots: SnapshotPolicy::default(),
            clock: Arc::new(keel_types::SystemClock::new()),
            lessor: None,
        }
    }

    /// The clock lease deadlines are measured with (default: [`keel_types::SystemClock`]).
    /// Tests and simulations inject a [`keel_types::ManualClock`].
    pub fn clock(mut self, clock: Arc<dyn keel_types::Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The lessor's configuration (tick, checkpoint interval, expiry retry, id seed). Default:
    /// keel-lease's defaults with the election timeout of [`NodeBuilder::timings`]. Every member
    /// of a cluster must use the same `election_timeout` and `id_seed`.
    pub fn lessor_config(mut self, config: keel_lease::LessorConfig) -> Self {
        self.lessor = Some(config);
        self
    }

    /// Promote learners automatically once caught up (default off, as in etcd, where an
    /// operator runs `member promote`). While this member leads, it tries every election
    /// timeout to promote each learner, through the same rules as
    /// [`crate::Node::member_promote`]: a learner is promoted once its log reaches 90% of the
    /// leader's and it is reachable. Set it on every member, so that a new leader keeps
    /// promoting.
    ///
    /// # Examples
    /// ```
    /// let builder = keel::Node::builder(keel_types::MemberId::new(1)).auto_promote_learners(true);
    /// # drop(builder);
    /// ```
    pub fn auto_promote_learners(mut self, on: bool) -> Self {
        self.auto_promote = on;
        self
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

    /// The members of the cluster's first configuration with their names and peer URLs, this
    /// one included (etcd's `--initial-cluster`, with ids derived by keel-membership). As
    /// [`NodeBuilder::initial_members`], plus the URLs the member records show for the others;
    /// this member's own URLs come from [`NodeBuilder::peer_urls`].
    pub fn initial_cluster(
        mut self,
        members: impl IntoIterator<Item = (MemberId, String, Vec<String>)>,
    ) -> Self {
        self.initial_members.clear();
        self.initial_peer_urls.clear();
        for (id, name, urls) in members {
            self.initial_members.insert(id, name);
            self.initial_peer_urls.insert(id, urls);
        }
        self
    }

    /// The URLs clients reach this member at (etcd's `--advertise-client-urls`; default: none,
    /// an embedded member). Published in the member records once the node runs.
    pub fn client_urls(mut self, urls: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.client_urls = urls.into_iter().map(Into::into).collect();
        self
    }

    /// How other members reach this one (default: `unix://<name>`, an in-process address).
    /// Recorded in the member records; a joining member must give the URLs it was added with.
    pub fn peer_urls(mut self, urls: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.peer_urls = urls.into_iter().map(Into::into).collect();
        self
    }

    /// Join a running cluster instead of forming one (etcd's
    /// `--initial-cluster-state=existing`): the member must first have been added with
    /// [`Node::member_add`] under this id, name and peer URLs. On the first start the node asks
    /// `contacts` for the cluster id and member records, verifies it was added (same name and
    /// peer URLs), records the cluster id and never initializes a configuration; it then
    /// catches up from the leader by log or snapshot once registered with the network. On a
    /// later start (the data directory has a cluster id) it just restarts.
    pub fn join_existing(mut self, contacts: impl IntoIterator<Item = MemberId>) -> Self {
        self.join = Some(contacts.into_iter().collect());
        self
    }

    /// Token lifetime and password hashing cost (default: etcd's, see [`AuthConfig`]).
    pub fn auth(mut self, config: AuthConfig) -> Self {
        self.auth = config;
        self
    }

    /// Log client requests slower than `threshold` (default [`crate::metrics::SLOW_REQUEST`],
    /// etcd's `--warning-apply-duration`): one `request took too long` warning each.
    pub fn slow_request_threshold(mut self, threshold: Duration) -> Self {
        self.slow_request = threshold;
        self
    }

    /// The request limits (key, value and request size, txn operations: etcd's
    /// `--max-request-bytes` and `--max-txn-ops`; default [`MvccLimits::default`]). Give
    /// every member the same limits: they decide what applies.
    pub fn mvcc_limits(mut self, limits: MvccLimits) -> Self {
        self.mvcc_limits = limits;
        self
    }

    /// The space quota of the replicated state (etcd's `--quota-backend-bytes`; default
    /// [`crate::limits::QUOTA_BACKEND_BYTES_DEFAULT`], 0 also means the default). Over it, the
    /// NOSPACE alarm refuses writes that grow the state (see [`Node::alarms`]).
    pub fn quota_backend_bytes(mut self, bytes: u64) -> Self {
        self.quota_bytes = if bytes == 0 {
            crate::limits::QUOTA_BACKEND_BYTES_DEFAULT
        } else {
            bytes
        };
        self
    }

    /// Disaster recovery (etcd's `--force-new-cluster`): start from this member's data
    /// directory as the only member of its cluster, whatever the membership was. First the
    /// entries this member's log holds up to its persisted commit index are applied (as etcd
    /// applies its WAL up to the hard state's commit); then the Raft log, the vote and the
    /// member records are dropped. The keyspace, leases, member id and cluster id are kept.
    /// Entries this member held but had not learned were committed are lost, as they are when
    /// etcd forces a new cluster. Other members' data must then be discarded and the members
    /// re-added. Ignores [`NodeBuilder::join_existing`] and the initial members.
    ///
    /// # Examples
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// use keel::NodeBuilder;
    /// use keel_types::MemberId;
    /// let dir = tempfile::tempdir().unwrap();
    /// let node = NodeBuilder::new(MemberId::new(1)).data_dir(dir.path()).start().await?;
    /// node.put(&b"kept"[..], &b"yes"[..]).await?;
    /// let cluster = node.cluster_id();
    /// node.shutdown().await;
    /// let node = NodeBuilder::new(MemberId::new(1))
    ///     .data_dir(dir.path())
    ///     .force_new_cluster(true)
    ///     .start()
    ///     .await?;
    /// assert_eq!(node.cluster_id(), cluster);
    /// assert_eq!(node.get(&b"kept"[..]).await?.body.unwrap().value.as_ref(), b"yes");
    /// # node.shutdown().await;
    /// # Ok::<(), keel::NodeError>(())
    /// # }).unwrap();
    /// ```
    pub fn force_new_cluster(mut self, force: bool) -> Self {
        self.force_new_cluster = force;
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
        let me = self.self_node()?;
        let join = self.join.clone().filter(|_| !self.force_new_cluster);
        let members = self.members_at_start(&me, join.is_some())?;
        let network = self.network.clone().unwrap_or_else(|| Arc::new(NoNetwork));
        let metrics = Arc::new(self.metrics());
        let lessor = self.lessor_config_or_default();
        let engine = open_engine(self.storage)?;
        let (store, log) = open_store_and_log(&engine, self.mvcc_limits)?;
        let lease = Arc::new(open_lease(engine.as_ref(), lessor, &self.clock)?);
        let auth = Arc::new(open_auth(engine.as_ref(), &self.clock, self.auth.clone())?);
        let (log, kept_cluster_id) =
            force_reset(self.force_new_cluster, &store, log, &lease, &metrics, &auth)?;
        let cluster_id = match &join {
            None => first_cluster_id(&log, kept_cluster_id, &members)?,
            Some(contacts) => {
                join_cluster(
                    &log,
                    &*network,
                    contacts,
                    self.id,
                    &me,
                    self.timings.request_timeout,
                )
                .await?
            }
        };
        let config = ConsensusConfig {
            id: self.id,
            initial_members: members,
            join: join.is_some(),
            cluster_id,
            heartbeat_interval: self.timings.heartbeat_interval,
            election_timeout: self.timings.election_timeout,
            recovery_timeout: self.timings.request_timeout,
            snapshot_entries_between: self.snapshots.entries_between,
            snapshot_catch_up_entries: self.snapshots.catch_up_entries,
            lease: Arc::clone(&lease),
            metrics: Arc::clone(&metrics),
            auth: Arc::clone(&auth),
        };
        let watches = Arc::new(WatchRegistry::default());
        let wake = Arc::clone(&watches);
        let on_install = Arc::new(move || wake.wake_all());
        let consensus =
            Consensus::start(config, engine, Arc::clone(&store), log, network, on_install).await?;
        consensus.spawn_lease_driver(Arc::clone(&lease), self.timings.request_timeout);
        let node = Node::new(
            self.id,
            me.name.clone(),
            cluster_id,
            self.timings.request_timeout,
            consensus,
            store,
            lease,
            auth,
            watches,
            metrics,
            self.quota_bytes,
        );
        node.spawn_publish(me.client_urls.clone());
        if self.auto_promote {
            node.spawn_auto_promote(self.timings.election_timeout);
        }
        Ok(node)
    }

    fn metrics(&self) -> crate::metrics::Metrics {
        crate::metrics::Metrics::new(Arc::clone(&self.clock), self.slow_request)
    }

    /// The members to initialize with: this member alone when forcing a new cluster, none
    /// when joining, the initial members otherwise.
    fn members_at_start(
        &self,
        me: &MemberNode,
        joining: bool,
    ) -> Result<BTreeMap<MemberId, MemberNode>, NodeError> {
        if self.force_new_cluster {
            Ok(BTreeMap::from([(self.id, me.clone())]))
        } else if joining {
            Ok(BTreeMap::new())
        } else {
            self.first_members(me)
        }
    }

    /// The lessor's configuration: the given one, or the default with the Raft election
    /// timeout.
    fn lessor_config_or_default(&self) -> keel_lease::LessorConfig {
        self.lessor.clone().unwrap_or(keel_lease::LessorConfig {
            election_timeout: self.timings.election_timeout,
            ..keel_lease::LessorConfig::default()
        })
    }

    /// This member's record: its name (given, from the initial members, or `member-<id>`) and
    /// its peer URLs, validated and normalized as the member records keep them.
    fn self_node(&self) -> Result<MemberNode, NodeError> {
        let name = self
            .name
            .clone()
            .or_else(|| self.initial_members.get(&self.id).cloned())
            .unwrap_or_else(|| format!("member-{}", self.id));
        let peer_urls = if self.peer_urls.is_empty() {
            vec![default_peer_url(&name)]
        } else {
            self.peer_urls.clone()
        };
        // Validated and normalized as the member records keep them.
        let peer_urls = peer_urls
            .iter()
            .map(|u| keel_membership::MemberUrl::parse(u).map(|u| u.as_str().to_owned()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(NodeError::Reconfig)?;
        let client_urls = self
            .client_urls
            .iter()
            .map(|u| keel_membership::MemberUrl::parse(u).map(|u| u.as_str().to_owned()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(NodeError::Reconfig)?;
        Ok(MemberNode {
            name,
            peer_urls,
            client_urls,
        })
    }

    /// The first configuration's members (this one with its peer URLs, the others at their
    /// default URLs), checking that this member is among them under its name.
    fn first_members(&self, me: &MemberNode) -> Result<BTreeMap<MemberId, MemberNode>, NodeError> {
        let mut names = self.initial_members.clone();
        if names.is_empty() {
            names.insert(self.id, me.name.clone());
        }
        match names.get(&self.id) {
            Some(n) if *n == me.name => {}
            Some(n) => {
                return Err(NodeError::Config {
                    detail: format!(
                        "member {} is named {n:?} in the initial members, not {:?}",
                        self.id, me.name
                    ),
                })
            }
            None => {
                return Err(NodeError::Config {
                    detail: format!("member {} is not among the initial members", self.id),
                })
            }
        }
        Ok(names
            .into_iter()
            .map(|(id, name)| {
                let node = if id == self.id {
                    me.clone()
                } else {
                    let peer_urls = match self.initial_peer_urls.get(&id) {
                        Some(urls) if !urls.is_empty() => urls.clone(),
                        _ => vec![default_peer_url(&name)],
                    };
                    MemberNode {
                        peer_urls,
                        name,
                        client_urls: Vec::new(),
                    }
                };
                (id, node)
            })
            .collect())
    }
}

/// The peer URL of a member that gave none: an in-process address derived from its name.
fn default_peer_url(name: &str) -> String {
    format!("unix://{name}")
}

/// The join check (see [`NodeBuilder::join_existing`]): a data directory that already has a
/// cluster id restarts as is; otherwise fetch the records, verify this member was added,
/// record the cluster id.
async fn join_cluster(
    log: &DurableLog,
    network: &dyn Network,
    contacts: &[MemberId],
    id: MemberId,
    me: &MemberNode,
    deadline: Duration,
) -> Result<ClusterId, NodeError> {
    if let Some(bytes) = log.meta(META_CLUSTER_ID)? {
        return codec::decode("cluster id", &bytes);
    }
    let (cluster_id, members) = fetch_members(network, contacts, id, deadline).await?;
    verify_added(cluster_id, &members, id, &me.name, &me.peer_urls).map_err(NodeError::Reconfig)?;
    check_cluster_id(log, cluster_id)?;
    Ok(cluster_id)
}

/// The RocksDB engine in `dir`, with the node's column families.
///
/// Buffered writes stay in the process until the next fsync (`manual_wal_flush`): every
/// applied entry is a buffered write, and without this each cost a `write(2)` of its own.
/// Nothing is lost by it that a crash of the machine would not lose anyway: entries are on
/// disk before they count toward commit, and the state re-applies from them after a crash;
/// the one buffered write that must survive a crash of the process, the committed log id,
/// is handed to the OS when it is saved (`raft::log_store`, invariant 3).
#[cfg(feature = "rocksdb")]
pub(crate) fn open_dir_engine(dir: &std::path::Path) -> Result<Arc<dyn Engine>, NodeError> {
    let mut options = keel_storage::engine::RocksOptions::new(&Node::column_families());
    options.manual_wal_flush = true;
    Ok(Arc::new(keel_storage::engine::RocksEngine::open(
        dir, &options,
    )?))
}

/// Without the `rocksdb` feature there is no on-disk engine.
#[cfg(not(feature = "rocksdb"))]
pub(crate) fn open_dir_engine(dir: &std::path::Path) -> Result<Arc<dyn Engine>, NodeError> {
    Err(NodeError::Config {
        detail: format!(
            "data directory {}: this build of keel has no RocksDB engine (feature \"rocksdb\"); \
             use NodeBuilder::engine",
            dir.display()
        ),
    })
}

/// With `force` (`--force-new-cluster`): apply the log up to its persisted commit index, then
/// drop the log, the vote and the member records (see [`NodeBuilder::force_new_cluster`]),
/// and return the reopened (empty) log and the cluster id the old log recorded. Without,
/// return `log` as it is.
fn force_reset(
    force: bool,
    store: &Arc<MvccStore>,
    log: Arc<DurableLog>,
    lease: &Arc<crate::lease::LeaseState>,
    metrics: &Arc<crate::metrics::Metrics>,
    auth: &Arc<crate::auth::AuthGate>,
) -> Result<(Arc<DurableLog>, Option<ClusterId>), NodeError> {
    if !force {
        return Ok((log, None));
    }
    let recorded = crate::node::recorded_cluster_id(&log)?;
    let applied = match recorded {
        Some(id) => crate::raft::apply_committed_offline(store, &log, id, lease, metrics, auth)?,
        // the id is recorded before the first entry: a directory without one has no log
        None => 0,
    };
    tracing::info!(applied, "forcing a new cluster: applied the committed log");
    let engine = store.engine();
    drop(log);
    crate::node::force_reset(engine)?;
    // the log's bounds changed underneath the old handle
    let log = Arc::new(DurableLog::open(Arc::clone(engine))?);
    Ok((log, recorded))
}

/// The engine the builder's storage names, with the node's column families.
fn open_engine(storage: Storage) -> Result<Arc<dyn Engine>, NodeError> {
    let cfs = Node::column_families();
    Ok(match storage {
        Storage::Memory => Arc::new(MemEngine::new(&cfs)),
        Storage::Engine(e) => e,
        Storage::Dir(dir) => open_dir_engine(&dir)?,
    })
}

/// The cluster id of a member not joining: the one a forced new cluster kept, else the
/// initial members' (checked against the recorded one, see [`check_cluster_id`]).
fn first_cluster_id(
    log: &DurableLog,
    kept: Option<ClusterId>,
    members: &BTreeMap<MemberId, MemberNode>,
) -> Result<ClusterId, NodeError> {
    let id = kept.unwrap_or_else(|| keel_membership::cluster_id_of(members.keys().copied()));
    check_cluster_id(log, id)?;
    Ok(id)
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
    // snapshot installs are resumable: a member that crashes during one finishes it at start
    cfs.push(keel_storage::snapshot::STAGING_CF);
    // the last snapshot built or received, kept on disk
    cfs.push(keel_storage::snapshot_store::STORE_CF);
    cfs.push(keel_membership::schema::MEMBERS_CF);
    cfs.push(keel_lease::LEASE_CF);
    cfs.push(keel_auth::AUTH_CF);
    cfs
}

/// The MVCC store and the Raft log on `engine`. A physical compaction that a crash
/// interrupted (its entry applied, its batches not all written) is finished first, as etcd
/// resumes a scheduled compaction at restart; the entry is not applied again.
fn open_store_and_log(
    engine: &Arc<dyn Engine>,
    limits: MvccLimits,
) -> Result<(Arc<MvccStore>, Arc<DurableLog>), NodeError> {
    let store = MvccStore::open_with(Arc::clone(engine), limits, Durability::Buffered)?;
    while !store.compact_step(crate::limits::COMPACTION_STEP_KEYS_MAX)? {}
    let log = DurableLog::open(Arc::clone(engine))?;
    Ok((Arc::new(store), Arc::new(log)))
}

/// The auth state, recovered from `engine`.
fn open_auth(
    engine: &dyn Engine,
    clock: &Arc<dyn keel_types::Clock>,
    config: AuthConfig,
) -> Result<crate::auth::AuthGate, NodeError> {
    crate::auth::AuthGate::open(engine, Arc::clone(clock), config).map_err(NodeError::Auth)
}

/// The lessor, recovered from `engine`.
fn open_lease(
    engine: &dyn Engine,
    config: keel_lease::LessorConfig,
    clock: &Arc<dyn keel_types::Clock>,
) -> Result<crate::lease::LeaseState, NodeError> {
    crate::lease::LeaseState::open(engine, config, Arc::clone(clock)).map_err(NodeError::Lease)
}
