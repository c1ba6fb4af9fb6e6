//! [`ConfigChange`]: a committed membership change, as replicated and applied on every member.

use crate::member::Member;
use crate::names::MemberName;
use crate::url::MemberUrl;
use keel_types::MemberId;
use std::fmt;

/// A membership change as it is recorded in the log and applied to every replica's
/// [`crate::Cluster`] (etcd's `ConfChange` with its member context). Produced by
/// [`crate::ReconfigRules::plan`] on the leader, or [`ConfigChange::Publish`] by a starting
/// member.
///
/// # Examples
/// ```
/// use keel_membership::ConfigChange;
/// use keel_types::MemberId;
/// let c = ConfigChange::Promote { id: MemberId::new(4) };
/// assert_eq!(c.to_string(), "promote 4");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigChange {
    /// Add a member (learner or voter).
    Add(Member),
    /// Make a learner a voter.
    Promote {
        /// The learner.
        id: MemberId,
    },
    /// Remove a member; its id is remembered as removed.
    Remove {
        /// The member.
        id: MemberId,
    },
    /// Replace a member's peer URLs.
    UpdatePeerUrls {
        /// The member.
        id: MemberId,
        /// The new URLs (sorted, non-empty).
        peer_urls: Vec<MemberUrl>,
    },
    /// Swap a voter out and a learner in, in one joint-consensus step.
    Replace {
        /// The voter removed.
        old: MemberId,
        /// The learner promoted.
        learner: MemberId,
    },
    /// A started member publishes its name and client URLs (etcd's attribute update).
    Publish {
        /// The member.
        id: MemberId,
        /// Its `--name`.
        name: MemberName,
        /// Its `--advertise-client-urls`.
        client_urls: Vec<MemberUrl>,
    },
}

impl fmt::Display for ConfigChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigChange::Add(m) => write!(f, "add {m}"),
            ConfigChange::Promote { id } => write!(f, "promote {id}"),
            ConfigChange::Remove { id } => write!(f, "remove {id}"),
            ConfigChange::UpdatePeerUrls { id, peer_urls } => {
                write!(f, "update {id} {}", MemberUrl::join(peer_urls))
            }
            ConfigChange::Replace { old, learner } => write!(f, "replace {old} with {learner}"),
            ConfigChange::Publish { id, name, .. } => write!(f, "publish {id} {name}"),
        }
    }
}
