//! The lease checker: what clients observed of one lease and the one key attached to it.
//!
//! The client granted the lease, put one key with it, renewed it (keep-alives) and read the
//! key with linearizable reads; perhaps it revoked the lease. Times are in one monotonic
//! unit (the harness uses microseconds) on the clients' clock.
//!
//! Rules (keel's lease promises, which are etcd's with lease checkpointing on):
//! - **safety**: the lease does not expire earlier than its TTL after the last acknowledged
//!   renew. A renew invoked at `c` and acknowledged before a read was invoked set the
//!   deadline to at least `c + ttl`; if that read returned "absent", the lease had expired
//!   before the read returned at `r`, so `r >= c + ttl` must hold. The grant counts as the
//!   first renew.
//! - **revoke**: once a revoke is acknowledged, no read invoked later sees the key.
//! - **no resurrection**: once a read saw the key gone, no read invoked after that one
//!   returned sees it again (the key is put once, before the first read).
//! - **liveness** is a bound the harness polls with a deadline ([`expiry_deadline`]).

/// A call with its invocation and (for an acknowledged call) completion time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Call {
    /// Invocation time.
    pub call: u64,
    /// Completion time.
    pub ret: u64,
}

/// A linearizable read of the lease's key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyRead {
    /// When it was invoked and answered.
    pub at: Call,
    /// Whether the key was there.
    pub present: bool,
}

/// What one client observed of one lease.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeaseHistory {
    /// The granted TTL, in the history's time unit.
    pub ttl: u64,
    /// The acknowledged grant.
    pub grant: Option<Call>,
    /// The acknowledged keep-alives (unanswered ones constrain nothing: omit them).
    pub renews: Vec<Call>,
    /// The reads of the attached key, all invoked after the attaching put was acknowledged.
    pub reads: Vec<KeyRead>,
    /// The acknowledged revoke, if the client revoked the lease.
    pub revoke: Option<Call>,
}

/// A broken lease promise.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaseViolation {
    /// The key was gone before the TTL had run out since an acknowledged renew.
    EarlyExpiry {
        /// The renew (or grant).
        renew: Call,
        /// The read that found the key gone.
        read: Call,
    },
    /// The key was readable after an acknowledged revoke.
    ReadAfterRevoke {
        /// The revoke.
        revoke: Call,
        /// The read that still saw the key.
        read: Call,
    },
    /// The key came back after a read had found it gone.
    Resurrected {
        /// The read that found it gone.
        gone: Call,
        /// The later read that saw it.
        read: Call,
    },
}

/// Check one lease's history against the rules above.
///
/// # Examples
/// ```
/// use keel_sim::{check_lease, Call, KeyRead, LeaseHistory, LeaseViolation};
/// let mut h = LeaseHistory {
///     ttl: 100,
///     grant: Some(Call { call: 0, ret: 5 }),
///     renews: vec![Call { call: 50, ret: 60 }],
///     reads: vec![KeyRead { at: Call { call: 200, ret: 210 }, present: false }],
///     revoke: None,
/// };
/// assert_eq!(check_lease(&h), Ok(())); // gone at 210, the TTL ran out at 150: fine
/// h.reads[0] = KeyRead { at: Call { call: 100, ret: 120 }, present: false };
/// assert!(matches!(check_lease(&h), Err(LeaseViolation::EarlyExpiry { .. })));
/// ```
///
/// # Errors
/// The first broken rule found.
pub fn check_lease(history: &LeaseHistory) -> Result<(), LeaseViolation> {
    let renews = || history.grant.iter().chain(history.renews.iter());
    for read in &history.reads {
        if read.present {
            if let Some(revoke) = history.revoke.filter(|r| r.ret < read.at.call) {
                return Err(LeaseViolation::ReadAfterRevoke {
                    revoke,
                    read: read.at,
                });
            }
            if let Some(gone) = history
                .reads
                .iter()
                .find(|g| !g.present && g.at.ret < read.at.call)
            {
                return Err(LeaseViolation::Resurrected {
                    gone: gone.at,
                    read: read.at,
                });
            }
            continue;
        }
        // A revoke that may have happened before this read returned explains the absence.
        if history.revoke.is_some_and(|r| r.call <= read.at.ret) {
            continue;
        }
        let latest = renews()
            .filter(|r| r.ret < read.at.call)
            .max_by_key(|r| r.call);
        if let Some(renew) = latest {
            if read.at.ret < renew.call.saturating_add(history.ttl) {
                return Err(LeaseViolation::EarlyExpiry {
                    renew: *renew,
                    read: read.at,
                });
            }
        }
    }
    Ok(())
}

/// The latest time by which a lease that is no longer renewed must be gone, given `slack`
/// (the promised bound past the TTL: the expiry tick, an election, a heal): the last
/// acknowledged renew's completion plus TTL plus slack; `None` without a grant.
///
/// # Examples
/// ```
/// use keel_sim::{expiry_deadline, Call, LeaseHistory};
/// let h = LeaseHistory { ttl: 100, grant: Some(Call { call: 0, ret: 5 }), ..LeaseHistory::default() };
/// assert_eq!(expiry_deadline(&h, 30), Some(135));
/// ```
pub fn expiry_deadline(history: &LeaseHistory, slack: u64) -> Option<u64> {
    history
        .grant
        .iter()
        .chain(history.renews.iter())
        .map(|r| r.ret)
        .max()
        .map(|last| last.saturating_add(history.ttl).saturating_add(slack))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(call: u64, ret: u64) -> Call {
        Call { call, ret }
    }

    fn read(c: u64, r: u64, present: bool) -> KeyRead {
        KeyRead {
            at: call(c, r),
            present,
        }
    }

    fn base() -> LeaseHistory {
        LeaseHistory {
            ttl: 100,
            grant: Some(call(0, 10)),
            renews: vec![call(80, 90), call(150, 160)],
            reads: vec![],
            revoke: None,
        }
    }

    #[test]
    fn expiry_after_the_ttl_since_the_last_acknowledged_renew_is_safe() {
        let mut h = base();
        // The renew invoked at 150 was acknowledged only at 400, after the read was invoked:
        // only the one invoked at 80 counts, so gone at 190 is allowed.
        h.renews[1] = call(150, 400);
        h.reads = vec![read(20, 30, true), read(185, 190, false)];
        assert_eq!(check_lease(&h), Ok(()));
    }

    #[test]
    fn expiry_before_the_ttl_since_an_acknowledged_renew_is_early() {
        let mut h = base();
        h.reads = vec![read(200, 220, false)];
        assert_eq!(
            check_lease(&h),
            Err(LeaseViolation::EarlyExpiry {
                renew: call(150, 160),
                read: call(200, 220)
            })
        );
    }

    #[test]
    fn a_read_after_an_acknowledged_revoke_must_miss_the_key() {
        let mut h = base();
        h.revoke = Some(call(100, 110));
        h.reads = vec![read(105, 120, false), read(111, 115, true)];
        assert_eq!(
            check_lease(&h),
            Err(LeaseViolation::ReadAfterRevoke {
                revoke: call(100, 110),
                read: call(111, 115)
            })
        );
        // Concurrent with the revoke, either answer is allowed.
        h.reads = vec![read(105, 120, true), read(106, 119, false)];
        assert_eq!(check_lease(&h), Ok(()));
    }

    #[test]
    fn a_key_does_not_come_back() {
        let mut h = base();
        h.renews.clear();
        h.reads = vec![read(200, 210, false), read(220, 230, true)];
        assert_eq!(
            check_lease(&h),
            Err(LeaseViolation::Resurrected {
                gone: call(200, 210),
                read: call(220, 230)
            })
        );
    }

    #[test]
    fn the_expiry_deadline_counts_from_the_last_acknowledgement() {
        assert_eq!(expiry_deadline(&base(), 50), Some(310));
        assert_eq!(expiry_deadline(&LeaseHistory::default(), 50), None);
    }
}
