//! [`Cluster`]: the membership of one cluster: its id, its members and the ids removed from it.

use crate::change::ConfigChange;
use crate::error::{MembershipError, Result};
use crate::limits::{MEMBERS_MAX, REMOVED_IDS_MAX};
use crate::member::Member;
use crate::url::MemberUrl;
use keel_types::{ClusterId, MemberId};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// The membership of one cluster, identical on every replica that applied the same changes.
///
/// A plain value: [`Cluster::apply`] validates a committed [`ConfigChange`] against the
/// structural rules every replica can check (etcd: membership/cluster.go
/// `ValidateConfigurationChange`) and applies it. Leader-only checks (reachability, learner
/// progress, learner limit) are in [`crate::ReconfigRules`].
///
/// Invariants:
/// 1. Every member is stored under its own id and satisfies [`Member::check_invariants`].
/// 2. There is at least one voter.
/// 3. No removed id is a member.
/// 4. No peer URL belongs to two members.
/// 5. At most [`MEMBERS_MAX`] members and [`REMOVED_IDS_MAX`] removed ids.
///
/// # Examples
/// ```
/// use keel_membership::{Cluster, ConfigChange, Member, MemberUrl};
/// use keel_types::{ClusterId, MemberId};
/// let url = |s| MemberUrl::parse(s);
/// let n1 = Member::new(MemberId::new(1), vec![url("http://n1:2380")?], false)?;
/// let mut cluster = Cluster::new(ClusterId::new(9), vec![n1], Default::default())?;
/// let n2 = Member::new(MemberId::new(2), vec![url("http://n2:2380")?], true)?;
/// cluster.apply(&ConfigChange::Add(n2))?;
/// cluster.apply(&ConfigChange::Promote { id: MemberId::new(2) })?;
/// cluster.apply(&ConfigChange::Remove { id: MemberId::new(1) })?;
/// assert_eq!(cluster.to_string(), "voters=2 learners= removed=1");
/// assert!(cluster.apply(&ConfigChange::Remove { id: MemberId::new(1) }).is_err());
/// # Ok::<(), keel_membership::MembershipError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cluster {
    id: ClusterId,
    members: BTreeMap<MemberId, Member>,
    removed: BTreeSet<MemberId>,
}

impl Cluster {
    /// A cluster from its parts (bootstrap, join, load).
    ///
    /// # Errors
    /// [`MembershipError::DuplicateMemberId`] for an id given twice, or
    /// [`MembershipError::Invariant`] when the parts break an invariant.
    pub fn new(id: ClusterId, members: Vec<Member>, removed: BTreeSet<MemberId>) -> Result<Self> {
        let mut by_id = BTreeMap::new();
        for member in members {
            let member_id = member.id();
            if by_id.insert(member_id, member).is_some() {
                return Err(MembershipError::DuplicateMemberId { id: member_id });
            }
        }
        let cluster = Cluster {
            id,
            members: by_id,
            removed,
        };
        cluster.check_invariants()?;
        Ok(cluster)
    }

    /// The cluster id.
    pub fn id(&self) -> ClusterId {
        self.id
    }

    /// Every member, in id order.
    pub fn members(&self) -> impl Iterator<Item = &Member> {
        self.members.values()
    }

    /// The member with this id.
    pub fn member(&self, id: MemberId) -> Option<&Member> {
        self.members.get(&id)
    }

    /// Number of members, voters and learners.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Always false: a cluster has at least one voter (invariant 2).
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Ids of the voters.
    pub fn voters(&self) -> BTreeSet<MemberId> {
        self.members
            .values()
            .filter(|m| !m.is_learner())
            .map(Member::id)
            .collect()
    }

    /// Ids of the learners.
    pub fn learners(&self) -> BTreeSet<MemberId> {
        self.members
            .values()
            .filter(|m| m.is_learner())
            .map(Member::id)
            .collect()
    }

    /// Ids removed from the cluster; none of them may ever come back.
    pub fn removed(&self) -> &BTreeSet<MemberId> {
        &self.removed
    }

    /// Whether `id` was removed.
    pub fn is_removed(&self, id: MemberId) -> bool {
        self.removed.contains(&id)
    }

    /// The member that owns `url` as a peer URL.
    pub fn peer_url_owner(&self, url: &MemberUrl) -> Option<MemberId> {
        self.members
            .values()
            .find(|m| m.peer_urls().contains(url))
            .map(Member::id)
    }

    /// Check that `change` is structurally valid for this cluster, without applying it.
    ///
    /// # Errors
    /// etcd's texts: [`MembershipError::IdRemoved`], [`MembershipError::MemberExists`],
    /// [`MembershipError::PeerUrlExists`], [`MembershipError::MemberNotFound`],
    /// [`MembershipError::MemberNotLearner`]; also [`MembershipError::TooManyMembers`],
    /// [`MembershipError::TooManyRemoved`] and [`MembershipError::NotEnoughStartedMembers`]
    /// for a change that would leave no voter.
    pub fn validate(&self, change: &ConfigChange) -> Result<()> {
        match change {
            ConfigChange::Add(member) => self.validate_add(member),
            ConfigChange::Promote { id } => {
                if !self.existing(*id)?.is_learner() {
                    return Err(MembershipError::MemberNotLearner { id: *id });
                }
                Ok(())
            }
            ConfigChange::Remove { id } => {
                let member = self.existing(*id)?;
                self.validate_removal(member)
            }
            ConfigChange::UpdatePeerUrls { id, peer_urls } => {
                self.existing(*id)?;
                MemberUrl::normalize_list(peer_urls.clone()).map_err(|e| {
                    MembershipError::BadMemberUrls {
                        detail: e.to_string(),
                    }
                })?;
                self.check_urls_free(peer_urls, Some(*id))
            }
            ConfigChange::Replace { old, learner } => {
                let old_member = self.existing(*old)?;
                if !self.existing(*learner)?.is_learner() {
                    return Err(MembershipError::MemberNotLearner { id: *learner });
                }
                if old_member.is_learner() {
                    return Err(MembershipError::NotAVoter { id: *old });
                }
                self.check_removed_capacity()
            }
            ConfigChange::Publish { id, .. } => self.existing(*id).map(|_| ()),
        }
    }

    /// Validate and apply a committed change.
    ///
    /// # Errors
    /// As [`Cluster::validate`]; on error the cluster is unchanged.
    pub fn apply(&mut self, change: &ConfigChange) -> Result<()> {
        self.validate(change)?;
        match change {
            ConfigChange::Add(member) => {
                self.members.insert(member.id(), member.clone());
            }
            ConfigChange::Promote { id } => self.set_learner(*id, false),
            ConfigChange::Remove { id } => self.remove(*id),
            ConfigChange::UpdatePeerUrls { id, peer_urls } => {
                let urls = MemberUrl::normalize_list(peer_urls.clone()).map_err(|e| {
                    MembershipError::BadMemberUrls {
                        detail: e.to_string(),
                    }
                })?;
                if let Some(m) = self.members.get_mut(id) {
                    m.set_peer_urls(urls);
                }
            }
            ConfigChange::Replace { old, learner } => {
                self.set_learner(*learner, false);
                self.remove(*old);
            }
            ConfigChange::Publish {
                id,
                name,
                client_urls,
            } => {
                if let Some(m) = self.members.get_mut(id) {
                    *m = m
                        .clone()
                        .with_name(name.clone())
                        .with_client_urls(client_urls.clone())?;
                }
            }
        }
        debug_assert_eq!(self.check_invariants(), Ok(()));
        Ok(())
    }

    /// Check the numbered invariants above.
    ///
    /// # Errors
    /// [`MembershipError::Invariant`] naming the first that fails.
    pub fn check_invariants(&self) -> Result<()> {
        let mut urls = BTreeSet::new();
        for (id, member) in &self.members {
            if *id != member.id() {
                return Err(MembershipError::invariant(
                    1,
                    format!("member {} stored under {id}", member.id()),
                ));
            }
            member.check_invariants()?;
            if self.removed.contains(id) {
                return Err(MembershipError::invariant(
                    3,
                    format!("removed id {id} is a member"),
                ));
            }
            for url in member.peer_urls() {
                if !urls.insert(url) {
                    return Err(MembershipError::invariant(
                        4,
                        format!("peer URL {url} listed twice"),
                    ));
                }
            }
        }
        if self.voters().is_empty() {
            return Err(MembershipError::invariant(2, "no voter"));
        }
        if self.members.len() > MEMBERS_MAX || self.removed.len() > REMOVED_IDS_MAX {
            return Err(MembershipError::invariant(
                5,
                "too many members or removed ids",
            ));
        }
        Ok(())
    }

    fn existing(&self, id: MemberId) -> Result<&Member> {
        if self.removed.contains(&id) {
            return Err(MembershipError::IdRemoved { id });
        }
        self.members
            .get(&id)
            .ok_or(MembershipError::MemberNotFound { id })
    }

    fn validate_add(&self, member: &Member) -> Result<()> {
        let id = member.id();
        if self.removed.contains(&id) {
            return Err(MembershipError::IdRemoved { id });
        }
        if self.members.contains_key(&id) {
            return Err(MembershipError::MemberExists { id });
        }
        self.check_urls_free(member.peer_urls(), None)?;
        if self.members.len() >= MEMBERS_MAX {
            return Err(MembershipError::TooManyMembers { max: MEMBERS_MAX });
        }
        Ok(())
    }

    fn validate_removal(&self, member: &Member) -> Result<()> {
        if !member.is_learner() && self.voters().len() == 1 {
            return Err(MembershipError::NotEnoughStartedMembers {
                reachable_count: 0,
                voter_count: 0,
            });
        }
        self.check_removed_capacity()
    }

    fn check_removed_capacity(&self) -> Result<()> {
        if self.removed.len() >= REMOVED_IDS_MAX {
            return Err(MembershipError::TooManyRemoved {
                max: REMOVED_IDS_MAX,
            });
        }
        Ok(())
    }

    fn check_urls_free(&self, urls: &[MemberUrl], except: Option<MemberId>) -> Result<()> {
        for url in urls {
            match self.peer_url_owner(url) {
                Some(owner) if Some(owner) != except => {
                    return Err(MembershipError::PeerUrlExists {
                        url: url.to_string(),
                    });
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn set_learner(&mut self, id: MemberId, is_learner: bool) {
        if let Some(m) = self.members.get_mut(&id) {
            m.set_learner(is_learner);
        }
    }

    fn remove(&mut self, id: MemberId) {
        self.members.remove(&id);
        self.removed.insert(id);
    }
}

impl fmt::Display for Cluster {
    /// `voters=1,2 learners=3 removed=4` (ids in hex, as etcd prints them).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |ids: &mut dyn Iterator<Item = &MemberId>| {
            ids.map(ToString::to_string).collect::<Vec<_>>().join(",")
        };
        write!(
            f,
            "voters={} learners={} removed={}",
            list(&mut self.voters().iter()),
            list(&mut self.learners().iter()),
            list(&mut self.removed.iter())
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: u64, learner: bool) -> Member {
        let url = MemberUrl::parse(&format!("http://m{id}:2380")).unwrap();
        Member::new(MemberId::new(id), vec![url], learner).unwrap()
    }

    #[test]
    fn new_refuses_broken_parts() {
        let id = ClusterId::new(1);
        assert_eq!(
            Cluster::new(id, vec![member(1, true)], BTreeSet::new()).unwrap_err(),
            MembershipError::invariant(2, "no voter")
        );
        assert!(matches!(
            Cluster::new(
                id,
                vec![member(1, false)],
                BTreeSet::from([MemberId::new(1)])
            ),
            Err(MembershipError::Invariant { number: 3, .. })
        ));
        assert_eq!(
            Cluster::new(
                id,
                vec![member(1, false), member(1, false)],
                BTreeSet::new()
            )
            .unwrap_err(),
            MembershipError::DuplicateMemberId {
                id: MemberId::new(1)
            }
        );
    }

    #[test]
    fn apply_refuses_and_leaves_unchanged() {
        let mut c =
            Cluster::new(ClusterId::new(1), vec![member(1, false)], BTreeSet::new()).unwrap();
        let before = c.clone();
        let err = c
            .apply(&ConfigChange::Remove {
                id: MemberId::new(1),
            })
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "etcdserver: re-configuration failed due to not enough started members"
        );
        assert_eq!(c, before);
        assert_eq!(
            c.apply(&ConfigChange::Add(member(1, true)))
                .unwrap_err()
                .to_string(),
            "etcdserver: member ID already exist"
        );
    }
}
