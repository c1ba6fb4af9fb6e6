//! Every limit of keel-membership, in one place.
//!
//! etcd has few hard limits here; keel bounds everything that comes from flags, the network or
//! disk so that parsing and validation do bounded work.

/// Most members (voters and learners) a cluster may hold. etcd recommends at most 7 voters;
/// this bound only keeps every loop over members small.
pub const MEMBERS_MAX: usize = 128;

/// Most peer URLs (and, separately, client URLs) one member may list.
pub const URLS_PER_MEMBER_MAX: usize = 16;

/// Longest accepted URL, in bytes.
pub const URL_LEN_MAX_BYTES: usize = 1024;

/// Longest accepted member name, in bytes.
pub const NAME_LEN_MAX_BYTES: usize = 256;

/// Longest accepted cluster or discovery token, in bytes.
pub const TOKEN_LEN_MAX_BYTES: usize = 256;

/// Longest accepted `--initial-cluster` value, in bytes.
pub const INITIAL_CLUSTER_LEN_MAX_BYTES: usize = 64 * 1024;

/// Most removed member ids remembered. A removed id must never rejoin, so the set is never
/// trimmed; a removal that would exceed it is refused instead.
pub const REMOVED_IDS_MAX: usize = 65_536;

/// Default most learners at once. Deviation from etcd: etcd allows 1; keel adds every new
/// member as a learner first, so a few concurrent additions must fit.
pub const LEARNERS_MAX_DEFAULT: usize = 3;

/// A learner is promotable when its match index is at least this percentage of the leader's.
/// etcd: server/etcdserver/server.go (`readyPercentThreshold = 0.9`).
pub const LEARNER_READY_PERCENT: u64 = 90;

/// Largest expected size a discovery token may announce.
pub const DISCOVERY_SIZE_MAX: usize = MEMBERS_MAX;

/// Most registrations read under one discovery token. Registrations past the expected size
/// only tell a late member that the cluster is full, so a bounded read is enough; a token with
/// more is refused.
pub const DISCOVERY_REGISTRATIONS_MAX: usize = 4 * DISCOVERY_SIZE_MAX;
