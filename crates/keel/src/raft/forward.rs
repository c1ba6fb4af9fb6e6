//! Membership calls made on any member: a follower forwards the change to the leader, which
//! plans and executes it with keel-membership's rules (etcd's server does the same for
//! MemberAdd/Remove/Update/Promote received by a follower).
//!
//! Also the publication of a member's client URLs (etcd's attribute update after start): a
//! member whose record lacks the client URLs it serves on asks the leader to set them.

use super::consensus::{resendable, Consensus};
use super::network::{Message, PeerMessage, Reply};
use super::MemberNode;
use crate::error::NodeError;
use crate::limits::FORWARD_RETRY_PAUSE;
use crate::response::MemberStatus;
use keel_membership::{ChangeRequest, MemberUrl, MembershipError};
use keel_types::MemberId;
use openraft::ChangeMembers;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// A membership change as it travels from the member that received the call to the leader.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum RemoteChange {
    /// etcd MemberAdd.
    Add {
        id: MemberId,
        name: String,
        peer_urls: Vec<String>,
        is_learner: bool,
    },
    /// etcd MemberPromote.
    Promote { id: MemberId },
    /// etcd MemberRemove.
    Remove { id: MemberId },
    /// etcd MemberUpdate.
    Update {
        id: MemberId,
        peer_urls: Vec<String>,
    },
    /// A member publishes its name and the client URLs it serves on.
    Publish {
        id: MemberId,
        name: String,
        client_urls: Vec<String>,
    },
}

fn parse_urls(urls: &[String]) -> Result<Vec<MemberUrl>, NodeError> {
    urls.iter()
        .map(|u| MemberUrl::parse(u))
        .collect::<Result<Vec<_>, _>>()
        .map_err(NodeError::Reconfig)
}

impl Consensus {
    /// Carry out `change` on the leader, forwarding it there if this member is not the leader,
    /// and return the member records after it, within `deadline`.
    ///
    /// A change refused by the leader comes back as [`NodeError::ReconfigRefused`] carrying
    /// the leader's message (etcd's text), unless it was refused here.
    ///
    /// # Errors
    /// The rules' errors, [`NodeError::Timeout`], [`NodeError::Stopped`].
    pub(crate) async fn change(
        &self,
        change: RemoteChange,
        deadline: Duration,
    ) -> Result<Vec<MemberStatus>, NodeError> {
        let work = async {
            loop {
                let leader = match self.change_local(change.clone(), deadline).await {
                    Err(NodeError::NotLeader { leader }) => leader.filter(|l| *l != self.id),
                    other => return other,
                };
                if let Some(leader) = leader {
                    let message = PeerMessage(Message::Reconfigure(change.clone()));
                    match self.network().send(leader, message).await.map(|r| r.0) {
                        Ok(Reply::Members { members, .. }) => return Ok(members),
                        Ok(Reply::Refused {
                            detail,
                            by_rules: true,
                        }) => return Err(NodeError::ReconfigRejected { message: detail }),
                        Ok(Reply::Refused {
                            detail,
                            by_rules: false,
                        }) => return Err(NodeError::ReconfigRefused { detail }),
                        Ok(Reply::NotLeader { .. }) => {}
                        Ok(other) => {
                            return Err(NodeError::Network {
                                detail: format!("unexpected reply to a member change: {other:?}"),
                            })
                        }
                        Err(e) => resendable(leader, e)?,
                    }
                }
                super::rt::sleep(FORWARD_RETRY_PAUSE).await;
            }
        };
        self.bounded(deadline, work).await
    }

    /// Carry out `change` if this member leads ([`NodeError::NotLeader`] otherwise).
    pub(crate) async fn change_local(
        &self,
        change: RemoteChange,
        deadline: Duration,
    ) -> Result<Vec<MemberStatus>, NodeError> {
        let (request, name) = match change {
            RemoteChange::Add {
                id,
                name,
                peer_urls,
                is_learner,
            } => (
                ChangeRequest::Add {
                    id,
                    peer_urls: parse_urls(&peer_urls)?,
                    is_learner,
                },
                Some(name),
            ),
            RemoteChange::Promote { id } => (ChangeRequest::Promote { id }, None),
            RemoteChange::Remove { id } => (ChangeRequest::Remove { id }, None),
            RemoteChange::Update { id, peer_urls } => (
                ChangeRequest::UpdatePeerUrls {
                    id,
                    peer_urls: parse_urls(&peer_urls)?,
                },
                None,
            ),
            RemoteChange::Publish {
                id,
                name,
                client_urls,
            } => {
                return self.publish_local(id, &name, &client_urls, deadline).await;
            }
        };
        let cluster = self.reconfigure(request, name, deadline).await?;
        Ok(super::member_list(&cluster))
    }

    /// Set member `id`'s name and client URLs in openraft's membership (and so in the
    /// records), on the leader.
    async fn publish_local(
        &self,
        id: MemberId,
        name: &str,
        client_urls: &[String],
        deadline: Duration,
    ) -> Result<Vec<MemberStatus>, NodeError> {
        let urls: Vec<String> = parse_urls(client_urls)?
            .iter()
            .map(|u| u.as_str().to_owned())
            .collect();
        let _serial = self.reconfig_lock.lock().await;
        self.require_leader()?;
        self.settle_membership(deadline).await?;
        let current = self.status_membership();
        let Some(node) = current.get(&id.get()) else {
            return Err(NodeError::Reconfig(MembershipError::MemberNotFound { id }));
        };
        if name.is_empty() {
            return Err(NodeError::Reconfig(MembershipError::InvalidName {
                name: String::new(),
                reason: "a name must not be empty",
            }));
        }
        if node.client_urls != urls || node.name != name {
            let node = MemberNode {
                name: name.to_owned(),
                client_urls: urls,
                ..node.clone()
            };
            let change = ChangeMembers::SetNodes([(id.get(), node)].into());
            let write = async {
                (self.raft.change_membership(change, false).await)
                    .map_err(|e| super::membership::change_error(&e))
            };
            self.bounded(deadline, write).await?;
        }
        Ok(super::member_list(&self.cluster()?))
    }

    /// Serve a change forwarded by another member.
    pub(crate) async fn serve_change(&self, change: RemoteChange, deadline: Duration) -> Reply {
        match self.change_local(change, deadline).await {
            Ok(members) => Reply::Members {
                cluster_id: self.cluster_id,
                members,
            },
            Err(NodeError::NotLeader { leader }) => Reply::NotLeader {
                leader: leader.map(MemberId::get),
            },
            Err(e) => Reply::Refused {
                by_rules: matches!(e, NodeError::Reconfig(_)),
                detail: e.to_string(),
            },
        }
    }
}
