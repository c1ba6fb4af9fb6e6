//! [`ReconfigRules`]: etcd's reconfiguration rules as a pure function from (cluster, leader's
//! view, request) to a plan.
//!
//! The checks, in order (etcd: server/etcdserver/server.go `mayAddMember`, `mayRemoveMember`,
//! `mayPromoteMember`, `isLearnerReady`; membership/cluster.go `ValidateConfigurationChange`):
//! 1. structural validity on the current cluster ([`Cluster::validate`]): removed id, existing
//!    id or peer URL, unknown member, promoting a voter;
//! 2. learner limit for an added learner;
//! 3. learner readiness for a promotion (match index >= 90% of the leader's), checked even
//!    when the strict check is off, as etcd does;
//! 4. with the strict check on, a quorum of reachable voters in *both* the old and the new
//!    voter set: joint consensus needs both, and a configuration without such a quorum cannot
//!    commit anything afterwards.
//!
//! Deviation from etcd: etcd lets a one-voter cluster add a second, unstarted voter
//! (`IsReadyToAddVotingMember`); keel refuses it, since adding a learner first and promoting it
//! once caught up never risks the quorum.

use crate::change::ConfigChange;
use crate::cluster::Cluster;
use crate::config::ReconfigConfig;
use crate::context::ReconfigContext;
use crate::error::{MembershipError, Result};
use crate::limits::LEARNER_READY_PERCENT;
use crate::member::Member;
use crate::step::Step;
use crate::url::MemberUrl;
use keel_types::MemberId;
use std::collections::BTreeSet;

/// A membership change requested through the API (etcd's MemberAdd / MemberRemove /
/// MemberUpdate / MemberPromote, plus a one-step replace).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChangeRequest {
    /// Add a member. `id` comes from [`crate::runtime_member_id`].
    Add {
        /// The new member's id.
        id: MemberId,
        /// Its peer URLs.
        peer_urls: Vec<MemberUrl>,
        /// Add as a learner (keel's default) or directly as a voter.
        is_learner: bool,
    },
    /// Promote a caught-up learner to voter.
    Promote {
        /// The learner.
        id: MemberId,
    },
    /// Remove a member (the leader may remove itself).
    Remove {
        /// The member.
        id: MemberId,
    },
    /// Change a member's peer URLs.
    UpdatePeerUrls {
        /// The member.
        id: MemberId,
        /// Its new peer URLs.
        peer_urls: Vec<MemberUrl>,
    },
    /// Replace voter `old` with caught-up learner `learner` in one joint-consensus step.
    Replace {
        /// The voter to remove.
        old: MemberId,
        /// The learner to promote.
        learner: MemberId,
    },
}

/// What to do for an accepted request: the Raft steps, in order, and the change to record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// The change every replica applies ([`Cluster::apply`]) and persists.
    pub change: ConfigChange,
    /// Raft operations, in order.
    pub steps: Vec<Step>,
    /// The membership after the change.
    pub next: Cluster,
    /// The leader removes itself: it steps down once the new voter set has committed.
    pub removes_leader: bool,
}

/// etcd's reconfiguration rules. See the module documentation for the order of checks.
///
/// # Examples
/// ```
/// use keel_membership::*;
/// use keel_types::{ClusterId, MemberId};
/// let id = MemberId::new;
/// let n1 = Member::new(id(1), vec![MemberUrl::parse("http://n1:2380")?], false)?;
/// let cluster = Cluster::new(ClusterId::new(7), vec![n1], Default::default())?;
/// let rules = ReconfigRules::new(ReconfigConfig::default())?;
/// let ctx = ReconfigContext::new(id(1), LogIndex::new(10));
///
/// // Adding a voter that has not started would need it for quorum: refused.
/// let urls = vec![MemberUrl::parse("http://n2:2380")?];
/// let add = |is_learner| ChangeRequest::Add { id: id(2), peer_urls: urls.clone(), is_learner };
/// let err = rules.plan(&cluster, &ctx, add(false)).unwrap_err();
/// assert_eq!(err.to_string(), "etcdserver: re-configuration failed due to not enough started members");
///
/// // As a learner it is fine.
/// let plan = rules.plan(&cluster, &ctx, add(true))?;
/// assert_eq!(plan.steps.len(), 1);
/// assert_eq!(plan.next.to_string(), "voters=1 learners=2 removed=");
/// # Ok::<(), keel_membership::MembershipError>(())
/// ```
#[derive(Clone, Debug, Default)]
pub struct ReconfigRules {
    config: ReconfigConfig,
}

impl ReconfigRules {
    /// Rules with a validated config.
    ///
    /// # Errors
    /// [`MembershipError::InvalidConfig`].
    pub fn new(config: ReconfigConfig) -> Result<Self> {
        config.validate()?;
        Ok(ReconfigRules { config })
    }

    /// The config in force.
    pub fn config(&self) -> &ReconfigConfig {
        &self.config
    }

    /// Decide whether `request` is allowed on `cluster` given the leader's view `ctx`, and how
    /// to carry it out.
    ///
    /// # Errors
    /// etcd's errors: member ID already exist, Peer URLs already exists, member not found,
    /// ID removed, can only promote a learner member (which is in sync with leader), too many
    /// learner members in cluster, re-configuration failed due to not enough started members,
    /// given member URLs are invalid; and [`MembershipError::NotAVoter`] for replacing a
    /// learner.
    pub fn plan(
        &self,
        cluster: &Cluster,
        ctx: &ReconfigContext,
        request: ChangeRequest,
    ) -> Result<Plan> {
        let change = to_change(request)?;
        cluster.validate(&change)?;
        self.check_learner_limit(cluster, &change)?;
        check_learner_ready(ctx, &change)?;
        let mut next = cluster.clone();
        next.apply(&change)?;
        let (old_voters, new_voters) = (cluster.voters(), next.voters());
        if self.config.strict_reconfig_check && old_voters != new_voters {
            check_reachable_quorum(&old_voters, ctx)?;
            check_reachable_quorum(&new_voters, ctx)?;
        }
        let steps = steps_for(&change, &old_voters, &new_voters);
        let removes_leader =
            cluster.member(ctx.leader).is_some() && next.member(ctx.leader).is_none();
        Ok(Plan {
            change,
            steps,
            next,
            removes_leader,
        })
    }

    fn check_learner_limit(&self, cluster: &Cluster, change: &ConfigChange) -> Result<()> {
        if let ConfigChange::Add(member) = change {
            if member.is_learner() && cluster.learners().len() + 1 > self.config.learners_max {
                return Err(MembershipError::TooManyLearners {
                    max: self.config.learners_max,
                });
            }
        }
        Ok(())
    }
}

fn to_change(request: ChangeRequest) -> Result<ConfigChange> {
    Ok(match request {
        ChangeRequest::Add {
            id,
            peer_urls,
            is_learner,
        } => ConfigChange::Add(Member::new(id, peer_urls, is_learner)?),
        ChangeRequest::Promote { id } => ConfigChange::Promote { id },
        ChangeRequest::Remove { id } => ConfigChange::Remove { id },
        ChangeRequest::UpdatePeerUrls { id, peer_urls } => {
            let peer_urls = MemberUrl::normalize_list(peer_urls).map_err(|e| {
                MembershipError::BadMemberUrls {
                    detail: e.to_string(),
                }
            })?;
            ConfigChange::UpdatePeerUrls { id, peer_urls }
        }
        ChangeRequest::Replace { old, learner } => ConfigChange::Replace { old, learner },
    })
}

/// etcd: `isLearnerReady`: the learner's match index must reach 90% of the leader's.
fn check_learner_ready(ctx: &ReconfigContext, change: &ConfigChange) -> Result<()> {
    let learner = match change {
        ConfigChange::Promote { id } => *id,
        ConfigChange::Replace { learner, .. } => *learner,
        _ => return Ok(()),
    };
    let leader_match = ctx.leader_last_index.get();
    let learner_match = ctx.matched(learner).map(|i| i.get());
    let ready = learner_match.is_some_and(|m| {
        u128::from(m) * 100 >= u128::from(leader_match) * u128::from(LEARNER_READY_PERCENT)
    });
    if ready {
        Ok(())
    } else {
        Err(MembershipError::LearnerNotReady {
            id: learner,
            learner_match,
            leader_match,
        })
    }
}

/// A majority of `voters` must be reachable.
fn check_reachable_quorum(voters: &BTreeSet<MemberId>, ctx: &ReconfigContext) -> Result<()> {
    let reachable_count = voters.iter().filter(|id| ctx.is_reachable(**id)).count();
    let quorum = voters.len() / 2 + 1;
    if reachable_count < quorum {
        return Err(MembershipError::NotEnoughStartedMembers {
            reachable_count,
            voter_count: voters.len(),
        });
    }
    Ok(())
}

fn steps_for(
    change: &ConfigChange,
    old_voters: &BTreeSet<MemberId>,
    new_voters: &BTreeSet<MemberId>,
) -> Vec<Step> {
    let change_voters = || Step::ChangeVoters {
        voters: new_voters.clone(),
    };
    match change {
        ConfigChange::Add(member) => {
            let add = Step::AddLearner {
                id: member.id(),
                peer_urls: member.peer_urls().to_vec(),
            };
            if member.is_learner() {
                vec![add]
            } else {
                vec![add, change_voters()]
            }
        }
        ConfigChange::Promote { .. } => vec![change_voters()],
        ConfigChange::Remove { id } if old_voters.contains(id) => {
            vec![change_voters(), Step::RemoveNode { id: *id }]
        }
        ConfigChange::Remove { id } => vec![Step::RemoveNode { id: *id }],
        ConfigChange::Replace { old, .. } => vec![change_voters(), Step::RemoveNode { id: *old }],
        ConfigChange::UpdatePeerUrls { id, peer_urls } => vec![Step::UpdateNode {
            id: *id,
            peer_urls: peer_urls.clone(),
        }],
        ConfigChange::Publish { .. } => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::LogIndex;
    use keel_types::ClusterId;

    fn cluster(voters: &[u64], learners: &[u64]) -> Cluster {
        let m = |id: u64, l| {
            let url = MemberUrl::parse(&format!("http://m{id}:2380")).unwrap();
            Member::new(MemberId::new(id), vec![url], l).unwrap()
        };
        let members = voters
            .iter()
            .map(|i| m(*i, false))
            .chain(learners.iter().map(|i| m(*i, true)));
        Cluster::new(ClusterId::new(1), members.collect(), BTreeSet::new()).unwrap()
    }

    #[test]
    fn learner_readiness_is_ninety_percent() {
        let c = cluster(&[1], &[2]);
        let rules = ReconfigRules::default();
        let promote = || ChangeRequest::Promote {
            id: MemberId::new(2),
        };
        let ctx = |m| {
            ReconfigContext::new(MemberId::new(1), LogIndex::new(100))
                .with_reachable([MemberId::new(2)])
                .with_matched(MemberId::new(2), LogIndex::new(m))
        };
        assert!(matches!(
            rules.plan(&c, &ctx(89), promote()),
            Err(MembershipError::LearnerNotReady { .. })
        ));
        assert!(rules.plan(&c, &ctx(90), promote()).is_ok());
        let unknown = ReconfigContext::new(MemberId::new(1), LogIndex::new(0));
        assert!(
            rules.plan(&c, &unknown, promote()).is_err(),
            "no progress known: not ready"
        );
    }

    #[test]
    fn strict_off_skips_quorum_only() {
        let c = cluster(&[1, 2, 3], &[]);
        let rules = ReconfigRules::new(ReconfigConfig {
            strict_reconfig_check: false,
            ..ReconfigConfig::default()
        })
        .unwrap();
        let ctx = ReconfigContext::new(MemberId::new(1), LogIndex::new(1));
        assert!(rules
            .plan(
                &c,
                &ctx,
                ChangeRequest::Remove {
                    id: MemberId::new(2)
                }
            )
            .is_ok());
        assert!(ReconfigRules::default()
            .plan(
                &c,
                &ctx,
                ChangeRequest::Remove {
                    id: MemberId::new(2)
                }
            )
            .is_err());
    }
}
