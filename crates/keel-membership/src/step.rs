//! [`Step`]: one membership operation for the Raft layer to execute.

use crate::url::MemberUrl;
use keel_types::MemberId;
use std::collections::BTreeSet;
use std::fmt;

/// One operation for the Raft layer (openraft, in the `keel` crate) to execute, in order.
/// This crate never depends on openraft; the node maps each step onto it.
///
/// A [`Step::ChangeVoters`] that changes several voters at once is safe: the Raft layer runs it
/// as joint consensus (old and new voter sets must both agree), which is why the rules check
/// the reachable quorum of both sets.
///
/// # Examples
/// ```
/// use keel_membership::Step;
/// use keel_types::MemberId;
/// let s = Step::ChangeVoters { voters: [1, 2, 3].map(MemberId::new).into() };
/// assert_eq!(s.to_string(), "change-voters 1,2,3");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Add a non-voting node that receives the log (openraft `add_learner`).
    AddLearner {
        /// Its id.
        id: MemberId,
        /// Where to reach it.
        peer_urls: Vec<MemberUrl>,
    },
    /// Make `voters` the voter set (openraft `change_membership`, joint consensus); learners
    /// not listed stay learners.
    ChangeVoters {
        /// The complete new voter set.
        voters: BTreeSet<MemberId>,
    },
    /// Forget a node that is no longer a voter (a removed learner, or a voter after the
    /// [`Step::ChangeVoters`] that dropped it has committed).
    RemoveNode {
        /// Its id.
        id: MemberId,
    },
    /// Reach a node at new peer URLs.
    UpdateNode {
        /// Its id.
        id: MemberId,
        /// The new URLs.
        peer_urls: Vec<MemberUrl>,
    },
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::AddLearner { id, .. } => write!(f, "add-learner {id}"),
            Step::ChangeVoters { voters } => {
                let ids: Vec<String> = voters.iter().map(ToString::to_string).collect();
                write!(f, "change-voters {}", ids.join(","))
            }
            Step::RemoveNode { id } => write!(f, "remove-node {id}"),
            Step::UpdateNode { id, peer_urls } => {
                write!(f, "update-node {id} {}", MemberUrl::join(peer_urls))
            }
        }
    }
}
