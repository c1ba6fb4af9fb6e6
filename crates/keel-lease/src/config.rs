//! The lessor's configuration.

use crate::error::{LeaseError, Result};
use std::time::Duration;

/// Configuration of a [`crate::Lessor`].
///
/// Every replica of a cluster must use the same `election_timeout` and `id_seed`: the first
/// decides the minimum TTL written into granted leases, the second the ids the lessor chooses,
/// and both are part of replicated state. The other fields only affect the primary's timing.
///
/// # Examples
/// ```
/// use keel_lease::LessorConfig;
/// use std::time::Duration;
/// let config = LessorConfig::default();
/// assert_eq!(config.min_ttl_secs(), 2); // ceil(1.5 x 1 s)
/// assert!(config.validate().is_ok());
/// let bad = LessorConfig { tick: Duration::ZERO, ..LessorConfig::default() };
/// assert!(bad.validate().is_err());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LessorConfig {
    /// Raft election timeout. The minimum TTL is `ceil(1.5 x election_timeout)` in whole
    /// seconds, and [`crate::Lessor::promote`] extends every deadline by it (the grace).
    /// etcd: server/lease/lessor.go (`minLeaseTTL`, `Promote(extend)`).
    pub election_timeout: Duration,
    /// Resolution of the expiry wheel: a lease is reported at most one tick after its deadline.
    /// Whole milliseconds, from 1 ms to [`LessorConfig::TICK_MAX`].
    pub tick: Duration,
    /// How often the primary checkpoints a lease's remaining TTL (`None` = never).
    /// Deviation from etcd: on by default (etcd: off, 5 min when on); see the crate docs for
    /// why it bounds expiry across leader changes.
    pub checkpoint_interval: Option<Duration>,
    /// After reporting a lease expired, report it again after this long if it still exists
    /// (its revoke was lost). etcd: `expiredLeaseRetryInterval` (3 s).
    pub expired_retry: Duration,
    /// Seed of the lessor's id generator (ids chosen when the client gives none).
    pub id_seed: u64,
}

impl Default for LessorConfig {
    fn default() -> Self {
        LessorConfig {
            election_timeout: Duration::from_millis(1000),
            tick: Duration::from_millis(100),
            checkpoint_interval: Some(Duration::from_secs(60)),
            expired_retry: Duration::from_secs(3),
            id_seed: 0,
        }
    }
}

impl LessorConfig {
    /// The largest wheel tick.
    pub const TICK_MAX: Duration = Duration::from_secs(60);
    /// The largest election timeout.
    pub const ELECTION_TIMEOUT_MAX: Duration = Duration::from_secs(3600);

    /// The minimum TTL in seconds: `ceil(1.5 x election_timeout)`, at least 1.
    pub fn min_ttl_secs(&self) -> i64 {
        let millis = u64::try_from(self.election_timeout.as_millis()).unwrap_or(u64::MAX);
        let secs = millis.saturating_mul(3).div_ceil(2000).max(1);
        i64::try_from(secs).unwrap_or(i64::MAX)
    }

    /// Check every field's range.
    ///
    /// # Errors
    /// [`LeaseError::InvalidConfig`] naming the first field out of range.
    pub fn validate(&self) -> Result<()> {
        let invalid = |detail: String| Err(LeaseError::InvalidConfig { detail });
        if self.tick < Duration::from_millis(1) || self.tick > Self::TICK_MAX {
            return invalid(format!("tick {:?} outside [1ms, 60s]", self.tick));
        }
        if self.tick.subsec_nanos() % 1_000_000 != 0 {
            return invalid(format!("tick {:?} is not whole milliseconds", self.tick));
        }
        if self.election_timeout.is_zero() || self.election_timeout > Self::ELECTION_TIMEOUT_MAX {
            return invalid(format!(
                "election timeout {:?} outside (0, 1h]",
                self.election_timeout
            ));
        }
        if let Some(interval) = self.checkpoint_interval {
            if interval < self.tick {
                return invalid(format!("checkpoint interval {interval:?} below the tick"));
            }
        }
        if self.expired_retry < self.tick {
            return invalid(format!(
                "expired retry {:?} below the tick",
                self.expired_retry
            ));
        }
        Ok(())
    }
}
