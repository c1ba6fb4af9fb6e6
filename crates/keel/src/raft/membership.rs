//! Runtime membership on openraft: member records derived from openraft's membership entries,
//! the leader's view for keel-membership's rules, and the execution of a rule's plan with
//! openraft's `add_learner` / `change_membership` (joint consensus).
//!
//! Member records (keel-membership's `MEMBERS_CF`) are *derived* from openraft's membership
//! entries rather than replicated as a separate request. Why:
//! 1. openraft's membership is what decides quorums; a second, independently replicated copy
//!    could disagree with it (a crash or a leader change between the two proposals). Deriving
//!    the records when a membership entry is applied makes disagreement impossible.
//! 2. The records are written in the same engine batch as that entry's applied-state marker
//!    (state_machine invariant 1), so after any crash the records match the applied membership.
//! 3. Joint configurations are applied like any other: a member is a voter in the records as
//!    soon as it votes in either half, a learner otherwise.
//! 4. Removed ids are remembered: any member of the previous records missing from the new
//!    membership is recorded as removed, so it can never be re-added (etcd: "ID removed").
//!
//! What openraft's membership carries per member ([`MemberNode`]) is exactly what a record
//! needs from the change: name and peer URLs. Client URLs stay empty for embedded members.

use super::consensus::Consensus;
use super::network::{Message, Network, PeerMessage, PeerReply, Reply};
use super::{MemberNode, TypeConfig};
use crate::error::NodeError;
use crate::limits::FORWARD_RETRY_PAUSE;
use crate::response::MemberStatus;
use keel_membership::schema::MEMBERS_CF;
use keel_membership::{
    persist, ChangeRequest, Cluster, LogIndex, Member, MemberName, MemberUrl, MembershipError,
    ReconfigContext, Step,
};
use keel_storage::engine::Engine;
use keel_types::{ClusterId, MemberId};
use openraft::async_runtime::watch::WatchReceiver;
use openraft::errors::{ClientWriteError, RaftError};
use openraft::{ChangeMembers, Instant as _, ServerState};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

type Membership = openraft::Membership<u64, MemberNode>;

/// The member records that correspond to openraft's `membership`, given the records before it
/// (module docs, premises 3 and 4).
///
/// # Errors
/// A record that keel-membership refuses (bad URL or name): the membership entry was built by a
/// leader from validated input, so this means corruption.
pub(super) fn derive_cluster(
    cluster_id: ClusterId,
    previous: Option<&Cluster>,
    membership: &Membership,
) -> Result<Cluster, MembershipError> {
    let voters: BTreeSet<u64> = membership.voter_ids().collect();
    let mut members = Vec::new();
    for (id, node) in membership.nodes() {
        // A member added without a name (etcd's MemberAdd names no one) stays unnamed until
        // it starts and publishes its name. A node without URLs (openraft's default node)
        // gets the builder's default for a member configured without them.
        let name = node.name.clone();
        let urls = if node.peer_urls.is_empty() {
            vec![MemberUrl::parse(&format!("unix://member-{id}"))?]
        } else {
            node.peer_urls
                .iter()
                .map(|u| MemberUrl::parse(u))
                .collect::<Result<Vec<_>, _>>()?
        };
        let client_urls = node
            .client_urls
            .iter()
            .map(|u| MemberUrl::parse(u))
            .collect::<Result<Vec<_>, _>>()?;
        let mut member = Member::new(MemberId::new(*id), urls, !voters.contains(id))?
            .with_client_urls(client_urls)?;
        if !name.is_empty() {
            member = member.with_name(MemberName::new(name)?);
        }
        members.push(member);
    }
    let mut removed: BTreeSet<MemberId> = BTreeSet::new();
    if let Some(previous) = previous {
        removed.extend(previous.removed().iter().copied());
        removed.extend(
            previous
                .members()
                .map(Member::id)
                .filter(|id| membership.get_node(&id.get()).is_none()),
        );
    }
    Cluster::new(cluster_id, members, removed)
}

/// The member records stored in `engine`.
///
/// # Errors
/// Storage failure or corrupted records.
pub(crate) fn load_cluster(engine: &dyn Engine) -> Result<Option<Cluster>, NodeError> {
    let cf = engine.column_family(MEMBERS_CF)?;
    let view = engine.view()?;
    persist::load(&*view, cf).map_err(NodeError::from_membership)
}

/// The records in the API's form, by id.
pub(crate) fn member_list(cluster: &Cluster) -> Vec<MemberStatus> {
    cluster
        .members()
        .map(|m| MemberStatus {
            id: m.id(),
            name: m.name().map(|n| n.as_str().to_owned()).unwrap_or_default(),
            peer_urls: m
                .peer_urls()
                .iter()
                .map(|u| u.as_str().to_owned())
                .collect(),
            client_urls: m
                .client_urls()
                .iter()
                .map(|u| u.as_str().to_owned())
                .collect(),
            is_learner: m.is_learner(),
        })
        .collect()
}

pub(super) fn change_error(e: &RaftError<TypeConfig, ClientWriteError<TypeConfig>>) -> NodeError {
    if let Some(f) = e.forward_to_leader() {
        return NodeError::NotLeader {
            leader: f.leader_id.map(MemberId::new),
        };
    }
    match e {
        RaftError::APIError(ClientWriteError::ChangeMembershipError(c)) => {
            NodeError::ReconfigRefused {
                detail: c.to_string(),
            }
        }
        other => super::consensus::raft_error(other),
    }
}

/// What a joining member checks against the running cluster's records before it starts
/// (etcd: `ValidateClusterAndAssignIDs` for `--initial-cluster-state=existing`; keel-membership's
/// `verify_join` does the same for flag-configured members): the cluster lists `id`, with
/// exactly `peer_urls` and, if the record names it, the name `name`.
///
/// # Errors
/// [`MembershipError::MemberNotAdded`], [`MembershipError::JoinNameMismatch`].
pub(crate) fn verify_added(
    cluster_id: ClusterId,
    members: &[MemberStatus],
    id: MemberId,
    name: &str,
    peer_urls: &[String],
) -> Result<(), MembershipError> {
    let sorted = |u: &[String]| u.iter().cloned().collect::<BTreeSet<_>>();
    let not_added = || MembershipError::MemberNotAdded {
        name: name.to_owned(),
        peer_urls: peer_urls.join(","),
        cluster_id,
    };
    let record = members.iter().find(|m| m.id == id).ok_or_else(not_added)?;
    if sorted(&record.peer_urls) != sorted(peer_urls) {
        return Err(not_added());
    }
    if !record.name.is_empty() && record.name != name {
        return Err(MembershipError::JoinNameMismatch {
            id,
            peer_urls: peer_urls.join(","),
            cluster_name: record.name.clone(),
            name: name.to_owned(),
        });
    }
    Ok(())
}

/// Ask the members `contacts` of a running cluster, in turn, for the cluster id and member
/// records; returns the first answer. A member about to join with
/// [`crate::NodeBuilder::join_existing`] uses it to learn the id it was added under (etcd's
/// joining member finds itself in the member list by its peer URLs).
///
/// # Examples
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use keel::{InMemoryNetwork, NodeBuilder};
/// use keel_types::MemberId;
/// use std::time::Duration;
/// let net = InMemoryNetwork::new();
/// let node = NodeBuilder::new(MemberId::new(1)).network(net.endpoint(MemberId::new(1))).start().await?;
/// net.register(node.id(), node.peer_handler());
/// let (cluster, members) =
///     keel::cluster_members(&*net.endpoint(MemberId::new(9)), &[node.id()], Duration::from_secs(5)).await?;
/// assert_eq!(cluster, node.cluster_id());
/// assert_eq!(members[0].id, node.id());
/// node.shutdown().await;
/// # Ok::<(), keel::NodeError>(())
/// # }).unwrap();
/// ```
///
/// # Errors
/// [`NodeError::Timeout`] if no contact answered within `deadline`; [`NodeError::Config`]
/// without contacts.
pub async fn cluster_members(
    network: &dyn Network,
    contacts: &[MemberId],
    deadline: Duration,
) -> Result<(ClusterId, Vec<MemberStatus>), NodeError> {
    if contacts.is_empty() {
        return Err(NodeError::Config {
            detail: "asking for the member records needs at least one member to contact".into(),
        });
    }
    poll_members(network, contacts, deadline, |_| true)
        .await
        .ok_or(NodeError::Timeout)
}

/// Ask `contacts` in turn for the cluster id and member records until an answer satisfies
/// `enough` or `deadline` passes; the last answer either way (`None`: nobody answered).
async fn poll_members(
    network: &dyn Network,
    contacts: &[MemberId],
    deadline: Duration,
    enough: impl Fn(&[MemberStatus]) -> bool,
) -> Option<(ClusterId, Vec<MemberStatus>)> {
    let mut last = None;
    let work = async {
        loop {
            for contact in contacts {
                if let Some(answer) = ask_members(network, *contact).await {
                    let done = enough(&answer.1);
                    last = Some(answer);
                    if done {
                        return;
                    }
                }
            }
            super::rt::sleep(FORWARD_RETRY_PAUSE).await;
        }
    };
    let _ = super::rt::timeout(deadline, work).await;
    last
}

/// One contact's cluster id and member records, if it answered.
async fn ask_members(
    network: &dyn Network,
    contact: MemberId,
) -> Option<(ClusterId, Vec<MemberStatus>)> {
    match network.send(contact, PeerMessage(Message::Members)).await {
        Ok(PeerReply(Reply::Members {
            cluster_id,
            members,
        })) => Some((cluster_id, members)),
        _ => None,
    }
}

/// Ask `contacts` (members of a running cluster), in turn, for the cluster id and records,
/// until one lists member `id` or `deadline` passes; the last answer is returned either way
/// (a contact may not have applied the member's addition yet).
///
/// # Errors
/// [`NodeError::Timeout`] if no contact answered, [`NodeError::Config`] without contacts.
pub(crate) async fn fetch_members(
    network: &dyn Network,
    contacts: &[MemberId],
    id: MemberId,
    deadline: Duration,
) -> Result<(ClusterId, Vec<MemberStatus>), NodeError> {
    if contacts.is_empty() {
        return Err(NodeError::Config {
            detail: "joining an existing cluster needs at least one member to contact".into(),
        });
    }
    poll_members(network, contacts, deadline, |members| {
        members.iter().any(|m| m.id == id)
    })
    .await
    .ok_or(NodeError::Timeout)
}

impl Consensus {
    /// The member records this member has applied.
    ///
    /// # Errors
    /// Storage failure, corrupted records, [`NodeError::Raft`] if none were ever recorded.
    pub(crate) fn cluster(&self) -> Result<Cluster, NodeError> {
        if let Some(cluster) = load_cluster(self.store.engine().as_ref())? {
            return Ok(cluster);
        }
        // The first configuration is not applied yet (it commits with the first leader):
        // derive the records from it as they will be applied.
        let metrics = self.raft.metrics();
        let membership = metrics
            .borrow_watched()
            .membership_config
            .membership()
            .clone();
        derive_cluster(self.cluster_id, None, &membership).map_err(NodeError::Reconfig)
    }

    /// Members whose last heartbeat acknowledgement to this leader is recent (within the
    /// election timeout); empty on a non-leader. etcd: `isConnectedSince`.
    pub(crate) fn reachable(&self) -> BTreeSet<MemberId> {
        let metrics = self.raft.metrics();
        let m = metrics.borrow_watched();
        let Some(heartbeat) = &m.heartbeat else {
            return BTreeSet::new();
        };
        let mut reachable: BTreeSet<MemberId> = heartbeat
            .iter()
            .filter(|(_, acked)| {
                acked
                    .as_ref()
                    .is_some_and(|at| at.elapsed() <= self.reachable_window)
            })
            .map(|(id, _)| MemberId::new(*id))
            .collect();
        reachable.insert(self.id);
        reachable
    }

    /// [`NodeError::NotLeader`] unless this member is the leader.
    pub(super) fn require_leader(&self) -> Result<(), NodeError> {
        let metrics = self.raft.metrics();
        let m = metrics.borrow_watched();
        if m.state == ServerState::Leader {
            Ok(())
        } else {
            Err(NodeError::NotLeader {
                leader: m.current_leader.map(MemberId::new),
            })
        }
    }

    /// The leader's view for the rules: last log index, match indexes, reachable members.
    fn reconfig_context(&self) -> Result<ReconfigContext, NodeError> {
        let reachable = self.reachable();
        let metrics = self.raft.metrics();
        let m = metrics.borrow_watched();
        if m.state != ServerState::Leader {
            return Err(NodeError::NotLeader {
                leader: m.current_leader.map(MemberId::new),
            });
        }
        let last = m.last_log_index.unwrap_or(0);
        let mut ctx = ReconfigContext::new(self.id, LogIndex::new(last)).with_reachable(reachable);
        for (id, matched) in m.replication.iter().flatten() {
            if let Some(log_id) = matched {
                ctx = ctx.with_matched(MemberId::new(*id), LogIndex::new(log_id.index));
            }
        }
        Ok(ctx)
    }

    /// The last log index, used as the time component of new member ids (unique: every add
    /// appends an entry, and adds are serialized).
    pub(crate) fn last_log_index(&self) -> u64 {
        self.raft
            .metrics()
            .borrow_watched()
            .last_log_index
            .unwrap_or(0)
    }

    /// Plan `request` with keel-membership's rules against the applied records and the
    /// leader's view, execute the plan's steps with openraft, and return the records after.
    /// `name` names an added member. Changes are serialized on this leader.
    ///
    /// # Errors
    /// [`NodeError::NotLeader`], [`NodeError::Reconfig`] (the rules' etcd errors),
    /// [`NodeError::ReconfigRefused`] (openraft refused, e.g. a change already in progress),
    /// [`NodeError::Timeout`] (a step did not commit within `deadline`).
    pub(crate) async fn reconfigure(
        &self,
        request: ChangeRequest,
        name: Option<String>,
        deadline: Duration,
    ) -> Result<Cluster, NodeError> {
        let _serial = self.reconfig_lock.lock().await;
        self.settle_membership(deadline).await?;
        let cluster = self.cluster()?;
        let ctx = self.reconfig_context()?;
        let plan = self
            .rules
            .plan(&cluster, &ctx, request)
            .map_err(NodeError::Reconfig)?;
        tracing::info!(change = %plan.change, steps = plan.steps.len(), "reconfiguring");
        for step in &plan.steps {
            (self.bounded(deadline, self.execute(step, name.as_deref(), &cluster))).await?;
        }
        self.cluster()
    }

    /// Wait until this member has applied its effective membership: a fresh leader's first
    /// configuration, or a previous change still finishing, is committed before the next
    /// change is planned against the records (openraft allows one change at a time).
    pub(super) async fn settle_membership(&self, deadline: Duration) -> Result<(), NodeError> {
        let index = self
            .raft
            .metrics()
            .borrow_watched()
            .membership_config
            .log_id()
            .map(|l| l.index);
        let applied = async {
            (self.raft.wait(None))
                .applied_index_at_least(index, "apply the effective membership")
                .await
                .map(drop)
                .map_err(|_| NodeError::Stopped)
        };
        self.bounded(deadline, applied).await
    }

    async fn execute(
        &self,
        step: &Step,
        name: Option<&str>,
        cluster: &Cluster,
    ) -> Result<(), NodeError> {
        let urls = |u: &[MemberUrl]| u.iter().map(|u| u.as_str().to_owned()).collect();
        let current = self.status_membership();
        let change: ChangeMembers<u64, MemberNode> = match step {
            Step::AddLearner { id, peer_urls } => {
                let node = MemberNode {
                    name: name.unwrap_or_default().to_owned(),
                    peer_urls: urls(peer_urls),
                    client_urls: Vec::new(),
                };
                self.raft
                    .add_learner(id.get(), node, false)
                    .await
                    .map_err(|e| change_error(&e))?;
                return Ok(());
            }
            Step::ChangeVoters { voters } => {
                ChangeMembers::ReplaceAllVoters(voters.iter().map(|v| v.get()).collect())
            }
            // Removing a voter already dropped its node with the voter change.
            Step::RemoveNode { id } if !current.contains_key(&id.get()) => return Ok(()),
            Step::RemoveNode { id } => ChangeMembers::RemoveNodes([id.get()].into()),
            Step::UpdateNode { id, peer_urls } => {
                // The applied records, not the metrics: metrics may not show a learner that
                // was added a moment ago yet (regression: member_update lost the name).
                let name = cluster
                    .member(*id)
                    .and_then(|m| m.name())
                    .map(|n| n.as_str().to_owned())
                    .or_else(|| current.get(&id.get()).map(|n| n.name.clone()))
                    .unwrap_or_default();
                let client_urls = current
                    .get(&id.get())
                    .map(|n| n.client_urls.clone())
                    .unwrap_or_default();
                let node = MemberNode {
                    name,
                    peer_urls: urls(peer_urls),
                    client_urls,
                };
                ChangeMembers::SetNodes([(id.get(), node)].into())
            }
        };
        self.raft
            .change_membership(change, false)
            .await
            .map_err(|e| change_error(&e))?;
        Ok(())
    }

    /// The nodes of this member's current (effective) openraft membership.
    pub(super) fn status_membership(&self) -> BTreeMap<u64, MemberNode> {
        let metrics = self.raft.metrics();
        let m = metrics.borrow_watched();
        m.membership_config
            .membership()
            .nodes()
            .map(|(id, n)| (*id, n.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str) -> MemberNode {
        MemberNode {
            name: name.into(),
            peer_urls: vec![format!("unix://{name}")],
            client_urls: Vec::new(),
        }
    }

    #[test]
    fn records_follow_membership_and_remember_removed_ids() {
        let all: BTreeMap<u64, MemberNode> =
            [(1, node("a")), (2, node("b")), (3, node("c"))].into();
        let id = ClusterId::new(9);
        let m = Membership::new(vec![[1, 2].into()], all.clone()).unwrap();
        let first = derive_cluster(id, None, &m).unwrap();
        assert_eq!(first.to_string(), "voters=1,2 learners=3 removed=");
        // Joint (1,2)+(1,3): 3 votes in one half, so it is recorded as a voter.
        let joint = Membership::new(vec![[1, 2].into(), [1, 3].into()], all).unwrap();
        let mid = derive_cluster(id, Some(&first), &joint).unwrap();
        assert_eq!(mid.to_string(), "voters=1,2,3 learners= removed=");
        let rest: BTreeMap<u64, MemberNode> = [(1, node("a")), (3, node("c"))].into();
        let last = Membership::new(vec![[1, 3].into()], rest).unwrap();
        let next = derive_cluster(id, Some(&mid), &last).unwrap();
        assert_eq!(next.to_string(), "voters=1,3 learners= removed=2");
        assert_eq!(
            next.member(MemberId::new(3))
                .unwrap()
                .name()
                .unwrap()
                .as_str(),
            "c"
        );
        assert!(verify_added(
            id,
            &member_list(&next),
            MemberId::new(3),
            "c",
            &["unix://c".into()]
        )
        .is_ok());
        assert!(matches!(
            verify_added(
                id,
                &member_list(&next),
                MemberId::new(3),
                "x",
                &["unix://c".into()]
            ),
            Err(MembershipError::JoinNameMismatch { .. })
        ));
        assert!(matches!(
            verify_added(
                id,
                &member_list(&next),
                MemberId::new(2),
                "b",
                &["unix://b".into()]
            ),
            Err(MembershipError::MemberNotAdded { .. })
        ));
    }
}
