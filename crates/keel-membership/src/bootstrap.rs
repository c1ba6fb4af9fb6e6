//! [`BootstrapConfig`]: the seed's member and clustering flags, parsed and validated.

use crate::cluster::Cluster;
use crate::error::{MembershipError, Result};
use crate::ids::static_member_id;
use crate::initial_cluster::InitialCluster;
use crate::names::{ClusterToken, MemberName};
use crate::url::MemberUrl;
use keel_types::{ClusterId, MemberId};

/// `--initial-cluster-state`: bootstrap a new cluster, or join an existing one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClusterState {
    /// All members in `--initial-cluster` start together and form a new cluster.
    New,
    /// This member was added with `member add` and joins a running cluster.
    Existing,
}

impl ClusterState {
    /// Parse the flag's value.
    ///
    /// # Errors
    /// [`MembershipError::InvalidClusterState`].
    pub fn parse(value: &str) -> Result<Self> {
        match value.trim() {
            "new" => Ok(ClusterState::New),
            "existing" => Ok(ClusterState::Existing),
            _ => Err(MembershipError::InvalidClusterState {
                value: value.to_owned(),
            }),
        }
    }
}

/// The raw flag values, as given on the command line; [`Default`] gives etcd's defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootstrapFlags {
    /// `--name`.
    pub name: String,
    /// `--initial-cluster`.
    pub initial_cluster: String,
    /// `--initial-cluster-token`.
    pub initial_cluster_token: String,
    /// `--initial-cluster-state` (`new` or `existing`).
    pub initial_cluster_state: String,
    /// `--initial-advertise-peer-urls`, comma separated.
    pub initial_advertise_peer_urls: String,
    /// `--advertise-client-urls`, comma separated.
    pub advertise_client_urls: String,
}

impl Default for BootstrapFlags {
    /// etcd's defaults (etcd: server/embed/config.go).
    fn default() -> Self {
        BootstrapFlags {
            name: "default".into(),
            initial_cluster: "default=http://localhost:2380".into(),
            initial_cluster_token: "etcd-cluster".into(),
            initial_cluster_state: "new".into(),
            initial_advertise_peer_urls: "http://localhost:2380".into(),
            advertise_client_urls: "http://localhost:2379".into(),
        }
    }
}

/// Validated bootstrap configuration of one member.
///
/// Checks (etcd: server/config/config.go `VerifyBootstrap`, `VerifyJoinExisting`): every URL
/// is valid, no URL is listed twice, `--name` appears in `--initial-cluster`, and its URLs
/// there are exactly `--initial-advertise-peer-urls`.
///
/// Deviation from etcd: URLs are compared as text; etcd also resolves host names before
/// declaring a mismatch.
///
/// # Examples
/// ```
/// use keel_membership::{BootstrapConfig, BootstrapFlags, ClusterState};
/// let config = BootstrapConfig::from_flags(&BootstrapFlags::default())?;
/// assert_eq!(config.state(), ClusterState::New);
/// assert_eq!(config.local_member_id()?.to_string(), "8e9e05c52164694d");
/// assert_eq!(config.new_cluster()?.id().to_string(), "cdf818194e3a8c32");
/// # Ok::<(), keel_membership::MembershipError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootstrapConfig {
    name: MemberName,
    initial_cluster: InitialCluster,
    token: ClusterToken,
    state: ClusterState,
    peer_urls: Vec<MemberUrl>,
    client_urls: Vec<MemberUrl>,
}

impl BootstrapConfig {
    /// Parse and validate the flags.
    ///
    /// # Errors
    /// The first invalid flag: name, state, token, URL errors, initial-cluster errors,
    /// [`MembershipError::LocalMemberMissing`], [`MembershipError::AdvertiseMissingFromFlag`]
    /// or [`MembershipError::AdvertiseMissingFromCluster`].
    pub fn from_flags(flags: &BootstrapFlags) -> Result<Self> {
        let name = MemberName::new(flags.name.trim())?;
        let state = ClusterState::parse(&flags.initial_cluster_state)?;
        let token = ClusterToken::new(flags.initial_cluster_token.trim())?;
        let peer_urls = MemberUrl::parse_list(&flags.initial_advertise_peer_urls)?;
        let client_urls = MemberUrl::parse_list(&flags.advertise_client_urls)?;
        let initial_cluster = InitialCluster::parse(&flags.initial_cluster)?;
        let config = BootstrapConfig {
            name,
            initial_cluster,
            token,
            state,
            peer_urls,
            client_urls,
        };
        config.check_local_member()?;
        Ok(config)
    }

    /// `--name`.
    pub fn name(&self) -> &MemberName {
        &self.name
    }

    /// `--initial-cluster`.
    pub fn initial_cluster(&self) -> &InitialCluster {
        &self.initial_cluster
    }

    /// `--initial-cluster-token`.
    pub fn token(&self) -> &ClusterToken {
        &self.token
    }

    /// `--initial-cluster-state`.
    pub fn state(&self) -> ClusterState {
        self.state
    }

    /// `--initial-advertise-peer-urls`, sorted.
    pub fn peer_urls(&self) -> &[MemberUrl] {
        &self.peer_urls
    }

    /// `--advertise-client-urls`, sorted.
    pub fn client_urls(&self) -> &[MemberUrl] {
        &self.client_urls
    }

    /// This member's id when bootstrapping a new cluster (static: peer URLs + token). A member
    /// joining an existing cluster gets its id from [`crate::verify_join`] instead.
    ///
    /// # Errors
    /// [`MembershipError::ZeroMemberId`].
    pub fn local_member_id(&self) -> Result<MemberId> {
        static_member_id(&self.peer_urls, &self.token)
    }

    /// The cluster `--initial-cluster-state=new` bootstraps: every listed member a voter,
    /// this member's client URLs filled in.
    ///
    /// # Errors
    /// Id collisions ([`MembershipError::DuplicateMemberId`]).
    pub fn new_cluster(&self) -> Result<Cluster> {
        self.initial_cluster.to_cluster(&self.token)
    }

    fn check_local_member(&self) -> Result<()> {
        let Some(listed) = self.initial_cluster.peer_urls(&self.name) else {
            return Err(MembershipError::LocalMemberMissing {
                name: self.name.to_string(),
            });
        };
        let missing: Vec<String> = listed
            .iter()
            .filter(|u| !self.peer_urls.contains(u))
            .map(|u| format!("{}={u}", self.name))
            .collect();
        if !missing.is_empty() {
            return Err(MembershipError::AdvertiseMissingFromFlag {
                missing: missing.join(","),
                advertised: MemberUrl::join(&self.peer_urls),
            });
        }
        let extra: Vec<&MemberUrl> = self
            .peer_urls
            .iter()
            .filter(|u| !listed.contains(u))
            .collect();
        if !extra.is_empty() {
            let entry: Vec<String> = self
                .peer_urls
                .iter()
                .map(|u| format!("{}={u}", self.name))
                .collect();
            return Err(MembershipError::AdvertiseMissingFromCluster {
                missing: extra
                    .iter()
                    .map(|u| u.as_str())
                    .collect::<Vec<_>>()
                    .join(","),
                entry: entry.join(","),
            });
        }
        Ok(())
    }
}

/// Refuse to start on a data dir that belongs to another cluster: `persisted` is the cluster
/// id found in the data dir (`None` for a fresh one), `expected` the one the configuration
/// describes (a new cluster's id, or the id of the cluster being joined).
///
/// # Errors
/// [`MembershipError::DataDirClusterMismatch`].
///
/// # Examples
/// ```
/// use keel_membership::check_data_dir;
/// use keel_types::ClusterId;
/// assert!(check_data_dir(None, ClusterId::new(1)).is_ok());
/// assert!(check_data_dir(Some(ClusterId::new(1)), ClusterId::new(1)).is_ok());
/// assert_eq!(
///     check_data_dir(Some(ClusterId::new(2)), ClusterId::new(1)).unwrap_err().to_string(),
///     "data dir belongs to cluster 2, but the configuration is for cluster 1"
/// );
/// ```
pub fn check_data_dir(persisted: Option<ClusterId>, expected: ClusterId) -> Result<()> {
    match persisted {
        Some(persisted) if persisted != expected => Err(MembershipError::DataDirClusterMismatch {
            persisted,
            expected,
        }),
        _ => Ok(()),
    }
}
