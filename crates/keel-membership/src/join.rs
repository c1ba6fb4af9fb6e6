//! [`verify_join`]: the checks a member runs before joining a running cluster.

use crate::bootstrap::{BootstrapConfig, ClusterState};
use crate::cluster::Cluster;
use crate::error::{MembershipError, Result};
use crate::member::Member;
use crate::url::MemberUrl;
use keel_types::{ClusterId, MemberId};
use std::collections::BTreeSet;

/// What a verified joining member starts with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JoinPlan {
    /// This member's id, as the cluster assigned it at `member add`.
    pub member_id: MemberId,
    /// The cluster's membership as fetched; persist it before catching up.
    pub cluster: Cluster,
}

/// Step (2) of the seed's runtime reconfiguration: a member started with
/// `--initial-cluster-state=existing` fetches the cluster id and member list from the running
/// cluster and checks, before writing anything, that:
/// 1. its data dir, if it has one, belongs to that cluster (`persisted`);
/// 2. it was added: a member has exactly its `--initial-advertise-peer-urls`, and that
///    member's name, if published, is its `--name`;
/// 3. `--initial-cluster` describes the cluster: the same members, each with the same peer
///    URLs (and the same name where the cluster knows it).
///
/// etcd: server/etcdserver/bootstrap.go (`bootstrapExistingClusterNoWAL`) and
/// membership/cluster.go (`ValidateClusterAndAssignIDs`).
///
/// # Errors
/// [`MembershipError::JoinRequiresExisting`], [`MembershipError::ClusterIdMismatch`],
/// [`MembershipError::MemberNotAdded`], [`MembershipError::JoinNameMismatch`],
/// [`MembershipError::InitialClusterMismatch`], or an invariant error for a malformed list.
///
/// # Examples
/// ```
/// use keel_membership::*;
/// use keel_types::{ClusterId, MemberId};
/// let flags = BootstrapFlags {
///     name: "n2".into(),
///     initial_cluster: "n1=http://a:2380,n2=http://b:2380".into(),
///     initial_cluster_state: "existing".into(),
///     initial_advertise_peer_urls: "http://b:2380".into(),
///     ..BootstrapFlags::default()
/// };
/// let config = BootstrapConfig::from_flags(&flags)?;
/// let n1 = Member::new(MemberId::new(1), vec![MemberUrl::parse("http://a:2380")?], false)?
///     .with_name(MemberName::new("n1")?);
/// let n2 = Member::new(MemberId::new(0x22), vec![MemberUrl::parse("http://b:2380")?], true)?;
/// let plan = verify_join(&config, ClusterId::new(7), &[n1, n2], None)?;
/// assert_eq!(plan.member_id, MemberId::new(0x22));
/// # Ok::<(), keel_membership::MembershipError>(())
/// ```
pub fn verify_join(
    config: &BootstrapConfig,
    cluster_id: ClusterId,
    members: &[Member],
    persisted: Option<ClusterId>,
) -> Result<JoinPlan> {
    if config.state() != ClusterState::Existing {
        return Err(MembershipError::JoinRequiresExisting);
    }
    if let Some(local) = persisted {
        if local != cluster_id {
            return Err(MembershipError::ClusterIdMismatch {
                local,
                remote: cluster_id,
            });
        }
    }
    let member_id = find_self(config, cluster_id, members)?;
    check_initial_cluster(config, cluster_id, members)?;
    let cluster = Cluster::new(cluster_id, members.to_vec(), BTreeSet::new())?;
    Ok(JoinPlan { member_id, cluster })
}

fn find_self(
    config: &BootstrapConfig,
    cluster_id: ClusterId,
    members: &[Member],
) -> Result<MemberId> {
    let Some(me) = members.iter().find(|m| m.peer_urls() == config.peer_urls()) else {
        return Err(MembershipError::MemberNotAdded {
            name: config.name().to_string(),
            peer_urls: MemberUrl::join(config.peer_urls()),
            cluster_id,
        });
    };
    if let Some(name) = me.name() {
        if name != config.name() {
            return Err(MembershipError::JoinNameMismatch {
                id: me.id(),
                peer_urls: MemberUrl::join(me.peer_urls()),
                cluster_name: name.to_string(),
                name: config.name().to_string(),
            });
        }
    }
    Ok(me.id())
}

fn check_initial_cluster(
    config: &BootstrapConfig,
    cluster_id: ClusterId,
    members: &[Member],
) -> Result<()> {
    let initial = config.initial_cluster();
    let mismatch = |detail: String| MembershipError::InitialClusterMismatch { cluster_id, detail };
    if initial.len() != members.len() {
        return Err(mismatch(format!(
            "it lists {} members, the cluster has {}",
            initial.len(),
            members.len()
        )));
    }
    for member in members {
        let urls = MemberUrl::join(member.peer_urls());
        let Some((name, _)) = initial.members().find(|(_, u)| *u == member.peer_urls()) else {
            return Err(mismatch(format!(
                "member {} with peer URLs {urls} is not listed",
                member.id()
            )));
        };
        if let Some(cluster_name) = member.name() {
            if cluster_name != name {
                return Err(mismatch(format!(
                    "member {} with peer URLs {urls} is named {:?}, not {:?}",
                    member.id(),
                    cluster_name.as_str(),
                    name.as_str()
                )));
            }
        }
    }
    Ok(())
}
