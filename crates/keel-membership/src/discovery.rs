//! [`Discovery`]: bootstrap a new cluster of an expected size from a token registered in an
//! existing keel (or etcd) cluster's keyspace. For bootstrapping only: never for runtime
//! changes, which go through [`crate::ReconfigRules`].
//!
//! Layout (etcd v3 discovery; etcd: server/etcdserver/api/v3discovery/discovery.go):
//!
//! ```text
//! /_etcd/registry/<token>/_config/size        expected size N, decimal
//! /_etcd/registry/<token>/members/<id hex>    "name=peerURL[,name=peerURL...]", held by a lease
//! ```
//!
//! Members are ordered by the create revision of their registration; the first N form the
//! cluster, so every member derives the same `--initial-cluster`; a member registered after
//! them gets "discovery: cluster is full".
//!
//! Sans-I/O: [`Discovery`] talks to the store through the small [`DiscoveryKv`] trait and never
//! waits. [`Discovery::poll`] answers [`DiscoveryStatus::Waiting`] until N members registered;
//! the caller re-polls when its watch on the members prefix fires, and keeps the registration
//! lease alive until bootstrap completes.

use crate::error::{MembershipError, Result};
use crate::ids::static_member_id;
use crate::initial_cluster::InitialCluster;
use crate::limits::{DISCOVERY_REGISTRATIONS_MAX, DISCOVERY_SIZE_MAX};
use crate::names::{ClusterToken, MemberName};
use crate::url::MemberUrl;
use keel_types::{LeaseId, MemberId, Revision};
use std::collections::BTreeSet;
use std::time::Duration;

/// A key-value entry of the discovery store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiscoveryEntry {
    /// The key.
    pub key: Vec<u8>,
    /// The value.
    pub value: Vec<u8>,
    /// The revision that created the key (orders registrations).
    pub create_revision: Revision,
}

/// The few operations discovery needs from the store holding the token (a keel or etcd
/// cluster, or an in-memory map in tests). Implementations map their failures to
/// [`MembershipError::DiscoveryKv`].
pub trait DiscoveryKv {
    /// The entry at `key`.
    ///
    /// # Errors
    /// Store failure.
    fn get(&self, key: &[u8]) -> Result<Option<DiscoveryEntry>>;

    /// Entries whose key starts with `prefix`, in key order, at most `limit`.
    ///
    /// # Errors
    /// Store failure.
    fn range_prefix(&self, prefix: &[u8], limit: usize) -> Result<Vec<DiscoveryEntry>>;

    /// Grant a lease of `ttl`.
    ///
    /// # Errors
    /// Store failure.
    fn grant_lease(&self, ttl: Duration) -> Result<LeaseId>;

    /// Atomically create `key` (attached to `lease`) unless it exists; `true` when created.
    ///
    /// # Errors
    /// Store failure (or an unknown lease).
    fn create_if_absent(&self, key: &[u8], value: &[u8], lease: Option<LeaseId>) -> Result<bool>;
}

/// Where discovery stands for one member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DiscoveryStatus {
    /// Fewer than the expected number of members have registered.
    Waiting {
        /// Members registered so far.
        registered_count: usize,
        /// The expected size.
        size: usize,
    },
    /// The cluster is complete: bootstrap with this `--initial-cluster`.
    Complete(InitialCluster),
}

/// One member's side of discovery.
///
/// # Examples
/// See `tests/discovery.rs` for a run against an in-memory store.
/// ```
/// use keel_membership::{ClusterToken, Discovery, MemberName, MemberUrl};
/// let token = ClusterToken::new("17fad13-6ee2")?;
/// let d = Discovery::new(token, MemberName::new("n1")?, vec![MemberUrl::parse("http://a:2380")?])?;
/// assert_eq!(
///     String::from_utf8_lossy(&d.member_key()),
///     format!("/_etcd/registry/17fad13-6ee2/members/{}", d.member_id())
/// );
/// # Ok::<(), keel_membership::MembershipError>(())
/// ```
#[derive(Clone, Debug)]
pub struct Discovery {
    token: ClusterToken,
    member_id: MemberId,
    name: MemberName,
    peer_urls: Vec<MemberUrl>,
}

impl Discovery {
    /// Discovery for the member `name` with `peer_urls`, under `token` (also the cluster token
    /// its id is derived with).
    ///
    /// # Errors
    /// URL list errors or [`MembershipError::ZeroMemberId`].
    pub fn new(token: ClusterToken, name: MemberName, peer_urls: Vec<MemberUrl>) -> Result<Self> {
        let peer_urls = MemberUrl::normalize_list(peer_urls)?;
        let member_id = static_member_id(&peer_urls, &token)?;
        Ok(Discovery {
            token,
            member_id,
            name,
            peer_urls,
        })
    }

    /// This member's id (static: peer URLs + token).
    pub fn member_id(&self) -> MemberId {
        self.member_id
    }

    /// `/_etcd/registry/<token>/_config/size`.
    pub fn size_key(token: &ClusterToken) -> Vec<u8> {
        format!("/_etcd/registry/{token}/_config/size").into_bytes()
    }

    /// `/_etcd/registry/<token>/members/`.
    pub fn members_prefix(token: &ClusterToken) -> Vec<u8> {
        format!("/_etcd/registry/{token}/members/").into_bytes()
    }

    /// This member's registration key.
    pub fn member_key(&self) -> Vec<u8> {
        let mut key = Self::members_prefix(&self.token);
        key.extend_from_slice(self.member_id.to_string().as_bytes());
        key
    }

    /// Create a token of expected `size` (the operator's step before starting members);
    /// `false` if the token already had a size.
    ///
    /// # Errors
    /// [`MembershipError::DiscoveryBadSize`] for 0 or more than [`DISCOVERY_SIZE_MAX`], or a
    /// store failure.
    pub fn configure_size(kv: &dyn DiscoveryKv, token: &ClusterToken, size: usize) -> Result<bool> {
        if size == 0 || size > DISCOVERY_SIZE_MAX {
            return Err(MembershipError::DiscoveryBadSize {
                value: size.to_string(),
            });
        }
        kv.create_if_absent(&Self::size_key(token), size.to_string().as_bytes(), None)
    }

    /// Register this member under a lease of `lease_ttl` (unless the cluster is already full)
    /// and report the status. Registering again (after a restart) keeps the first registration.
    /// Returns the lease to keep alive until bootstrap completes.
    ///
    /// # Errors
    /// "discovery: size key not found", "discovery: size key is bad", "discovery: cluster is
    /// full", registration errors of [`Discovery::poll`], or a store failure.
    pub fn register(
        &self,
        kv: &dyn DiscoveryKv,
        lease_ttl: Duration,
    ) -> Result<(LeaseId, DiscoveryStatus)> {
        self.poll(kv)?;
        let lease = kv.grant_lease(lease_ttl)?;
        let value = self.registration_value();
        if !kv.create_if_absent(&self.member_key(), value.as_bytes(), Some(lease))? {
            let existing = kv.get(&self.member_key())?.map(|e| e.value);
            if existing.as_deref() != Some(value.as_bytes()) {
                return Err(MembershipError::DiscoveryKv {
                    detail: format!(
                        "member {} registered with different peer URLs",
                        self.member_id
                    ),
                });
            }
        }
        Ok((lease, self.poll(kv)?))
    }

    /// Read the registrations and report where discovery stands.
    ///
    /// # Errors
    /// "discovery: size key not found", "discovery: size key is bad", "discovery: cluster is
    /// full" (N members registered before this one), "discovery: found duplicate name",
    /// "discovery: invalid peer URL", or a store failure.
    pub fn poll(&self, kv: &dyn DiscoveryKv) -> Result<DiscoveryStatus> {
        let size = self.read_size(kv)?;
        let prefix = Self::members_prefix(&self.token);
        let mut entries = kv.range_prefix(&prefix, DISCOVERY_REGISTRATIONS_MAX + 1)?;
        if entries.len() > DISCOVERY_REGISTRATIONS_MAX {
            return Err(MembershipError::DiscoveryKv {
                detail: format!("more than {DISCOVERY_REGISTRATIONS_MAX} registrations"),
            });
        }
        entries.sort_by(|a, b| (a.create_revision, &a.key).cmp(&(b.create_revision, &b.key)));
        let me = self.member_key();
        match entries.iter().position(|e| e.key == me) {
            Some(index) if index >= size => return Err(MembershipError::DiscoveryFull { size }),
            None if entries.len() >= size => return Err(MembershipError::DiscoveryFull { size }),
            _ => {}
        }
        if entries.len() < size {
            return Ok(DiscoveryStatus::Waiting {
                registered_count: entries.len(),
                size,
            });
        }
        entries.truncate(size);
        initial_cluster_of(&entries).map(DiscoveryStatus::Complete)
    }

    fn read_size(&self, kv: &dyn DiscoveryKv) -> Result<usize> {
        let entry = kv
            .get(&Self::size_key(&self.token))?
            .ok_or(MembershipError::DiscoverySizeNotFound)?;
        let text = String::from_utf8_lossy(&entry.value).into_owned();
        match text.trim().parse::<usize>() {
            Ok(size) if size > 0 && size <= DISCOVERY_SIZE_MAX => Ok(size),
            _ => Err(MembershipError::DiscoveryBadSize { value: text }),
        }
    }

    fn registration_value(&self) -> String {
        self.peer_urls
            .iter()
            .map(|u| format!("{}={u}", self.name))
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// The `--initial-cluster` the first `size` registrations describe.
fn initial_cluster_of(entries: &[DiscoveryEntry]) -> Result<InitialCluster> {
    let mut names = BTreeSet::new();
    let mut pairs = Vec::new();
    for entry in entries {
        let value = String::from_utf8_lossy(&entry.value).into_owned();
        let invalid = || MembershipError::DiscoveryInvalidUrl {
            value: value.clone(),
        };
        let one = InitialCluster::parse(&value).map_err(|_| invalid())?;
        let mut members = one.members();
        let (Some((name, urls)), None) = (members.next(), members.next()) else {
            return Err(invalid());
        };
        if !names.insert(name.clone()) {
            return Err(MembershipError::DiscoveryDuplicateName {
                name: name.to_string(),
            });
        }
        pairs.extend(urls.iter().map(|u| (name.clone(), u.clone())));
    }
    InitialCluster::from_pairs(pairs)
}
