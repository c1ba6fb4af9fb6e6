//! [`ReconfigContext`]: what the leader knows about its followers when a change is requested.

use keel_types::MemberId;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// A Raft log index (etcd's and openraft's *index*, not a store revision).
///
/// # Examples
/// ```
/// use keel_membership::LogIndex;
/// assert_eq!(LogIndex::new(90).get(), 90);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LogIndex(u64);

impl LogIndex {
    /// An index from its number.
    pub const fn new(value: u64) -> Self {
        LogIndex(value)
    }

    /// The index number.
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for LogIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The leader's view of the cluster, supplied by the node from its Raft metrics when a change
/// is requested. The rules never measure anything themselves.
///
/// # Examples
/// ```
/// use keel_membership::{LogIndex, ReconfigContext};
/// use keel_types::MemberId;
/// let ctx = ReconfigContext::new(MemberId::new(1), LogIndex::new(100))
///     .with_reachable([MemberId::new(2)])
///     .with_matched(MemberId::new(2), LogIndex::new(95));
/// assert!(ctx.is_reachable(MemberId::new(1)), "the leader always reaches itself");
/// assert_eq!(ctx.matched(MemberId::new(2)), Some(LogIndex::new(95)));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReconfigContext {
    /// The leader deciding the change.
    pub leader: MemberId,
    /// The leader's last log index (its own match index).
    pub leader_last_index: LogIndex,
    /// Members the leader heard from recently (etcd: `isConnectedSince`). The leader counts as
    /// reachable whether listed or not.
    pub reachable: BTreeSet<MemberId>,
    /// Replication progress: the highest index known to be stored on each member.
    pub matched: BTreeMap<MemberId, LogIndex>,
}

impl ReconfigContext {
    /// A context where only the leader is reachable.
    pub fn new(leader: MemberId, leader_last_index: LogIndex) -> Self {
        ReconfigContext {
            leader,
            leader_last_index,
            reachable: BTreeSet::new(),
            matched: BTreeMap::new(),
        }
    }

    /// This context with `ids` reachable too.
    pub fn with_reachable(mut self, ids: impl IntoIterator<Item = MemberId>) -> Self {
        self.reachable.extend(ids);
        self
    }

    /// This context with `id`'s match index set.
    pub fn with_matched(mut self, id: MemberId, index: LogIndex) -> Self {
        self.matched.insert(id, index);
        self
    }

    /// Whether `id` is reachable (the leader always is).
    pub fn is_reachable(&self, id: MemberId) -> bool {
        id == self.leader || self.reachable.contains(&id)
    }

    /// `id`'s match index, if the leader tracks one.
    pub fn matched(&self, id: MemberId) -> Option<LogIndex> {
        self.matched.get(&id).copied()
    }
}
