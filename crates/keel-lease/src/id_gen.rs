//! Deterministic lease id generation.

use keel_types::LeaseId;

/// Chooses lease ids when the client gives none: the `counter`-th output of a seeded
/// SplitMix64 sequence, masked to a positive `i64` (etcd's ids are positive too:
/// etcd: server/etcdserver/v3_server.go `LeaseGrant`).
///
/// The counter is replicated state: every replica applies the same grants in the same order
/// and so draws the same ids; the counter is persisted with the leases so a restarted replica
/// continues the same sequence.
///
/// # Examples
/// ```
/// use keel_lease::IdGenerator;
/// let mut a = IdGenerator::new(7, 0);
/// let mut b = IdGenerator::new(7, 0);
/// let first = a.next(|_| false);
/// assert_eq!(first, b.next(|_| false));
/// assert!(first.get() > 0);
/// assert_eq!(a.counter(), 1);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdGenerator {
    seed: u64,
    counter: u64,
}

impl IdGenerator {
    /// A generator at position `counter` of the sequence of `seed`.
    pub const fn new(seed: u64, counter: u64) -> Self {
        IdGenerator { seed, counter }
    }

    /// How many candidates have been drawn (the persisted position).
    pub const fn counter(&self) -> u64 {
        self.counter
    }

    /// Draw the next id for which `taken` is false. Ids are 63-bit, so with at most
    /// [`crate::limits::LEASE_COUNT_MAX`] (2^30) leases a draw is taken with probability
    /// below 2^-33; the loop ends after the first free candidate.
    pub fn next(&mut self, taken: impl Fn(LeaseId) -> bool) -> LeaseId {
        loop {
            let candidate = splitmix64(
                self.seed
                    .wrapping_add(self.counter.wrapping_mul(0x9E37_79B9_7F4A_7C15)),
            ) & (i64::MAX as u64);
            self.counter = self.counter.wrapping_add(1);
            if let Some(id) = i64::try_from(candidate).ok().and_then(LeaseId::new) {
                if !taken(id) {
                    return id;
                }
            }
        }
    }
}

/// The SplitMix64 finalizer (a bijection of `u64`).
fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_ids_and_skips_taken() {
        let mut a = IdGenerator::new(42, 0);
        let ids: Vec<LeaseId> = (0..100).map(|_| a.next(|_| false)).collect();
        let mut b = IdGenerator::new(42, 0);
        let first = ids[0];
        let skipped = b.next(|id| id == first);
        assert_eq!(skipped, ids[1]);
        assert_eq!(b.counter(), 2);
        let mut c = IdGenerator::new(42, 50);
        assert_eq!(c.next(|_| false), ids[50]);
        assert!(ids.iter().all(|id| id.get() > 0));
        let mut d = IdGenerator::new(43, 0);
        assert_ne!(d.next(|_| false), ids[0]);
    }
}
