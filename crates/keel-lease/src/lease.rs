//! The values the lessor hands out and takes in.

use bytes::Bytes;
use keel_types::LeaseId;
use std::time::Duration;

/// How many renews a lease has seen since its grant (wrapping). Checkpoints and expiries carry
/// the count they were computed under; applying one whose count no longer matches is a no-op,
/// so a checkpoint or expiry decided before a renew can never undo that renew, whatever order
/// the node's proposals end up in the log.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct RenewCount(u32);

impl RenewCount {
    /// A count from its number.
    pub const fn new(value: u32) -> Self {
        RenewCount(value)
    }

    /// The number.
    pub const fn get(self) -> u32 {
        self.0
    }

    /// The count after one more renew (wrapping after 2^32 renews).
    pub const fn next(self) -> Self {
        RenewCount(self.0.wrapping_add(1))
    }
}

/// A lease as persisted: what every replica agrees on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseRecord {
    /// The id.
    pub id: LeaseId,
    /// The granted TTL in seconds (after raising to the minimum).
    pub ttl_secs: i64,
    /// The remaining TTL of the last applied checkpoint; the full TTL after a grant or renew.
    /// A new primary counts the lease's deadline from this.
    pub remaining: Duration,
    /// Renews since the grant.
    pub renew_count: RenewCount,
}

/// A remaining-TTL checkpoint emitted by the primary, to replicate and then apply on every
/// replica with [`crate::Lessor::apply_checkpoint`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    /// The lease.
    pub id: LeaseId,
    /// The renew count the checkpoint was computed under.
    pub renew_count: RenewCount,
    /// The remaining TTL at emission, rounded up to the millisecond.
    pub remaining: Duration,
}

/// A lease the primary found expired, to revoke through a replicated
/// [`crate::Lessor::revoke_expired`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Expired {
    /// The lease.
    pub id: LeaseId,
    /// The renew count when the expiry was detected.
    pub renew_count: RenewCount,
}

/// What [`crate::Lessor::tick`] found due.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Due {
    /// Leases past their deadline: propose their revoke (batched).
    pub expired: Vec<Expired>,
    /// Remaining-TTL checkpoints: propose them (batched), in this order.
    pub checkpoints: Vec<Checkpoint>,
}

/// The answer of [`crate::Lessor::time_to_live`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TimeToLive {
    /// The lease.
    pub id: LeaseId,
    /// The granted TTL in seconds.
    pub granted_ttl_secs: i64,
    /// Time left: on the primary until its deadline (zero once past); elsewhere the persisted
    /// remaining TTL.
    pub remaining: Duration,
    /// Attached keys, sorted (empty unless asked for).
    pub keys: Vec<Bytes>,
}

/// One change to persisted lease state, produced by the replicated operations and written
/// into the caller's batch by [`crate::LeaseStore::stage`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// Write (create or overwrite) a lease record.
    Put(LeaseRecord),
    /// Delete a lease record and every attachment of the lease.
    Delete(LeaseId),
    /// Record that `key` is attached to the lease.
    Attach(LeaseId, Bytes),
    /// Remove that attachment.
    Detach(LeaseId, Bytes),
    /// The id generator's new position.
    IdCounter(u64),
}
