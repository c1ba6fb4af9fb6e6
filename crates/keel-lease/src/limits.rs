//! Every limit of keel-lease, in one place.
//!
//! Limits that decide the outcome of a replicated operation (a grant refused or accepted) are
//! constants, not configuration: every replica must reach the same decision for the same entry.

/// The largest lease TTL a grant accepts, in seconds (etcd: `MaxLeaseTTL` = 9,000,000,000 s,
/// server/lease/lessor.go).
pub const TTL_MAX_SECS: i64 = 9_000_000_000;

/// The largest number of leases one lessor holds. Lease slots are addressed by `u32`
/// handles; this keeps a margin below `u32::MAX` (which the wheel reserves as "none").
///
/// Deviation from etcd: etcd has no lease count limit; keel refuses the grant instead of
/// growing without bound.
pub const LEASE_COUNT_MAX: usize = 1 << 30;

/// Milliseconds in a second.
pub(crate) const MILLIS_PER_SEC: u64 = 1_000;

/// The largest TTL in milliseconds (fits in `u64` with a wide margin: 9e12).
pub(crate) const TTL_MAX_MILLIS: u64 = TTL_MAX_SECS.unsigned_abs() * MILLIS_PER_SEC;
