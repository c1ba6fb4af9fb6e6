//! [`ReconfigConfig`]: the knobs of the reconfiguration rules.

use crate::error::{MembershipError, Result};
use crate::limits::{LEARNERS_MAX_DEFAULT, MEMBERS_MAX};

/// Configuration of [`crate::ReconfigRules`].
///
/// # Examples
/// ```
/// use keel_membership::ReconfigConfig;
/// let c = ReconfigConfig::default();
/// assert_eq!(c.learners_max, 3);
/// assert!(c.strict_reconfig_check);
/// c.validate()?;
/// # Ok::<(), keel_membership::MembershipError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReconfigConfig {
    /// Most learners at once (etcd's `--max-learners`, whose default is 1; keel's is
    /// [`LEARNERS_MAX_DEFAULT`] because every member is added as a learner first).
    pub learners_max: usize,
    /// Refuse changes that would leave the old or new voter set without a quorum of currently
    /// reachable voters (etcd's `--strict-reconfig-check`, on by default there too).
    pub strict_reconfig_check: bool,
}

impl Default for ReconfigConfig {
    fn default() -> Self {
        ReconfigConfig {
            learners_max: LEARNERS_MAX_DEFAULT,
            strict_reconfig_check: true,
        }
    }
}

impl ReconfigConfig {
    /// Check the values.
    ///
    /// # Errors
    /// [`MembershipError::InvalidConfig`] when `learners_max` exceeds [`MEMBERS_MAX`].
    pub fn validate(&self) -> Result<()> {
        if self.learners_max > MEMBERS_MAX {
            return Err(MembershipError::InvalidConfig {
                detail: format!(
                    "learners_max {} exceeds the member limit {MEMBERS_MAX}",
                    self.learners_max
                ),
            });
        }
        Ok(())
    }
}
