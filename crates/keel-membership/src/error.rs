//! The membership crate's error type.

use keel_storage::StorageError;
use keel_types::{ClusterId, MemberId};

/// Result alias of keel-membership.
pub type Result<T, E = MembershipError> = std::result::Result<T, E>;

/// Everything that can go wrong in keel-membership.
///
/// Display texts mirror etcd's where a client or operator may match on them
/// (etcd: api/v3rpc/rpctypes/error.go, client/pkg/types/urls.go, server/config/config.go,
/// server/etcdserver/api/v3discovery/discovery.go).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MembershipError {
    /// An added member's id is already a member.
    #[error("etcdserver: member ID already exist")]
    MemberExists {
        /// The id.
        id: MemberId,
    },
    /// A peer URL already belongs to another member.
    #[error("etcdserver: Peer URLs already exists")]
    PeerUrlExists {
        /// The URL.
        url: String,
    },
    /// No member has this id.
    #[error("etcdserver: member not found")]
    MemberNotFound {
        /// The id.
        id: MemberId,
    },
    /// The id belonged to a removed member; removed ids never come back.
    ///
    /// etcd's gRPC layer reports this as "etcdserver: member not found"
    /// (etcd: api/v3rpc/util.go `toGRPCErrorMap`); keel-server's status table should too.
    #[error("etcdserver: ID removed")]
    IdRemoved {
        /// The id.
        id: MemberId,
    },
    /// Promotion of a member that is already a voter.
    #[error("etcdserver: can only promote a learner member")]
    MemberNotLearner {
        /// The id.
        id: MemberId,
    },
    /// Promotion of a learner whose log is not caught up with the leader's.
    #[error("etcdserver: can only promote a learner member which is in sync with leader")]
    LearnerNotReady {
        /// The learner.
        id: MemberId,
        /// The learner's match index (`None` = unknown to the leader).
        learner_match: Option<u64>,
        /// The leader's last log index.
        leader_match: u64,
    },
    /// A voter-only operation (replace) named a learner.
    #[error("member {id} is not a voter")]
    NotAVoter {
        /// The id.
        id: MemberId,
    },
    /// Adding a learner would exceed the configured number of learners.
    #[error("etcdserver: too many learner members in cluster")]
    TooManyLearners {
        /// The configured limit.
        max: usize,
    },
    /// Adding a member would exceed [`crate::limits::MEMBERS_MAX`].
    #[error("etcdserver: too many members in cluster")]
    TooManyMembers {
        /// The limit.
        max: usize,
    },
    /// Too many removed ids to remember one more ([`crate::limits::REMOVED_IDS_MAX`]).
    #[error("etcdserver: too many removed members to remember")]
    TooManyRemoved {
        /// The limit.
        max: usize,
    },
    /// The change would leave a voter configuration (old or new) without a quorum of
    /// currently reachable voters.
    #[error("etcdserver: re-configuration failed due to not enough started members")]
    NotEnoughStartedMembers {
        /// Reachable voters in the configuration that fails.
        reachable_count: usize,
        /// Voters in that configuration.
        voter_count: usize,
    },
    /// A member change request with an empty or repeated URL list.
    #[error("etcdserver: given member URLs are invalid")]
    BadMemberUrls {
        /// What was wrong.
        detail: String,
    },
    /// A URL whose scheme is not accepted.
    #[error("URL scheme must be http, https, unix, or unixs: {url}")]
    UrlScheme {
        /// The URL.
        url: String,
    },
    /// An http(s) URL without a `host:port` address.
    #[error("URL address does not have the form \"host:port\": {url}")]
    UrlHostPort {
        /// The URL.
        url: String,
    },
    /// An http(s) URL with a path, query or fragment.
    #[error("URL must not contain a path: {url}")]
    UrlPath {
        /// The URL.
        url: String,
    },
    /// An empty URL list.
    #[error("no valid URLs given")]
    NoUrls,
    /// A value longer than its limit.
    #[error("{what} is too long: {len_bytes} bytes exceeds {max_bytes}")]
    TooLong {
        /// What was too long.
        what: &'static str,
        /// Its length.
        len_bytes: usize,
        /// The limit.
        max_bytes: usize,
    },
    /// A list longer than its limit.
    #[error("too many {what}: {count} exceeds {max}")]
    TooMany {
        /// What there were too many of.
        what: &'static str,
        /// How many were given.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// A member name that is empty or holds `,` or `=`.
    #[error("invalid member name {name:?}: {reason}")]
    InvalidName {
        /// The name.
        name: String,
        /// Why it is invalid.
        reason: &'static str,
    },
    /// An `--initial-cluster` entry that is not `name=url`.
    #[error("--initial-cluster entry {entry:?} is not of the form name=url")]
    InitialClusterEntry {
        /// The entry.
        entry: String,
    },
    /// An empty `--initial-cluster`.
    #[error("initial cluster unset and no discovery URL found")]
    InitialClusterUnset,
    /// A URL listed twice in `--initial-cluster`.
    #[error("initial cluster {initial_cluster} has duplicate url")]
    DuplicateUrl {
        /// The initial cluster, as etcd prints it.
        initial_cluster: String,
    },
    /// Two members derive the same id (a SHA-1 collision, or a zero id).
    #[error("member exists with identical ID {id}")]
    DuplicateMemberId {
        /// The id.
        id: MemberId,
    },
    /// A derived member id of 0, which Raft reserves for "none".
    #[error("cannot use 0 as member id")]
    ZeroMemberId,
    /// `--name` does not appear in `--initial-cluster`.
    #[error("couldn't find local name {name:?} in the initial cluster configuration")]
    LocalMemberMissing {
        /// The name.
        name: String,
    },
    /// `--initial-cluster` lists URLs for this member that it does not advertise.
    #[error(
        "--initial-cluster has {missing} but missing from --initial-advertise-peer-urls={advertised}"
    )]
    AdvertiseMissingFromFlag {
        /// `name=url` pairs missing from the advertised URLs.
        missing: String,
        /// The advertised URLs, comma separated.
        advertised: String,
    },
    /// This member advertises peer URLs that `--initial-cluster` does not list for it.
    #[error(
        "--initial-advertise-peer-urls has {missing} but missing from --initial-cluster={entry}"
    )]
    AdvertiseMissingFromCluster {
        /// URLs missing from the initial cluster, comma separated.
        missing: String,
        /// This member's advertised URLs as `name=url` pairs.
        entry: String,
    },
    /// `--initial-cluster-state` is neither `new` nor `existing`.
    #[error("invalid value {value:?} for --initial-cluster-state: valid values are \"new\", \"existing\"")]
    InvalidClusterState {
        /// The value given.
        value: String,
    },
    /// The data dir already belongs to another cluster.
    #[error(
        "data dir belongs to cluster {persisted}, but the configuration is for cluster {expected}"
    )]
    DataDirClusterMismatch {
        /// The cluster id persisted in the data dir.
        persisted: ClusterId,
        /// The cluster id the configuration describes.
        expected: ClusterId,
    },
    /// Join verification was asked for with `--initial-cluster-state=new`.
    #[error("join verification requires --initial-cluster-state=existing")]
    JoinRequiresExisting,
    /// The cluster has no member with this member's peer URLs.
    #[error(
        "member {name} (peer URLs {peer_urls}) has not been added to cluster {cluster_id}; \
         add it with member add first"
    )]
    MemberNotAdded {
        /// This member's name.
        name: String,
        /// This member's peer URLs, comma separated.
        peer_urls: String,
        /// The cluster asked.
        cluster_id: ClusterId,
    },
    /// The cluster's member with this member's peer URLs was started under another name.
    #[error("member {id} with peer URLs {peer_urls} is named {cluster_name:?} in the cluster, not {name:?}")]
    JoinNameMismatch {
        /// The member's id.
        id: MemberId,
        /// Its peer URLs, comma separated.
        peer_urls: String,
        /// Its name in the cluster.
        cluster_name: String,
        /// The name given with --name.
        name: String,
    },
    /// `--initial-cluster` does not describe the cluster's configuration.
    #[error(
        "--initial-cluster does not match the configuration of cluster {cluster_id}: {detail}"
    )]
    InitialClusterMismatch {
        /// The cluster asked.
        cluster_id: ClusterId,
        /// The first difference found.
        detail: String,
    },
    /// The data dir belongs to another cluster than the one being joined.
    #[error("cluster ID mismatch: local data dir has {local}, the cluster has {remote}")]
    ClusterIdMismatch {
        /// Cluster id persisted locally.
        local: ClusterId,
        /// Cluster id of the cluster being joined.
        remote: ClusterId,
    },
    /// The discovery token has no size key.
    #[error("discovery: size key not found")]
    DiscoverySizeNotFound,
    /// The discovery size key is not a positive number within the limit.
    #[error("discovery: size key is bad")]
    DiscoveryBadSize {
        /// The stored value.
        value: String,
    },
    /// The expected number of members already registered, this one not among them.
    #[error("discovery: cluster is full")]
    DiscoveryFull {
        /// The expected size.
        size: usize,
    },
    /// Two registered members share a name.
    #[error("discovery: found duplicate name")]
    DiscoveryDuplicateName {
        /// The name.
        name: String,
    },
    /// A registration that does not parse as `name=url,...`.
    #[error("discovery: invalid peer URL")]
    DiscoveryInvalidUrl {
        /// The registration's value.
        value: String,
    },
    /// The discovery key-value store failed.
    #[error("discovery: {detail}")]
    DiscoveryKv {
        /// The store's message.
        detail: String,
    },
    /// An invalid reconfiguration config.
    #[error("invalid membership config: {detail}")]
    InvalidConfig {
        /// What was wrong.
        detail: String,
    },
    /// A numbered invariant of a membership value does not hold.
    #[error("membership invariant {number} violated: {detail}")]
    Invariant {
        /// The invariant's number in its type's documentation.
        number: u8,
        /// What was found.
        detail: String,
    },
    /// A persisted member record could not be decoded.
    #[error("corrupted {what}: {detail}")]
    Corrupted {
        /// The kind of record.
        what: &'static str,
        /// What was wrong with it.
        detail: String,
    },
    /// The storage engine failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl MembershipError {
    pub(crate) fn corrupted(what: &'static str, detail: impl Into<String>) -> Self {
        MembershipError::Corrupted {
            what,
            detail: detail.into(),
        }
    }

    pub(crate) fn invariant(number: u8, detail: impl Into<String>) -> Self {
        MembershipError::Invariant {
            number,
            detail: detail.into(),
        }
    }

    /// Whether the error reports broken storage (the node must stop) rather than rejecting
    /// one request or one input.
    pub fn is_fatal(&self) -> bool {
        match self {
            MembershipError::Corrupted { .. } => true,
            MembershipError::Storage(e) => e.is_fatal(),
            _ => false,
        }
    }
}
