//! The lessor: every lease, its attached keys, and (on the primary) its deadline.

use crate::config::LessorConfig;
use crate::error::{LeaseError, Result};
use crate::id_gen::IdGenerator;
use crate::index::LeaseIndex;
use crate::lease::{Change, Checkpoint, Expired, LeaseRecord, RenewCount, TimeToLive};
use crate::limits::{LEASE_COUNT_MAX, MILLIS_PER_SEC, TTL_MAX_SECS};
use crate::wheel::{Handle, Wheel};
use bytes::Bytes;
use keel_types::LeaseId;
use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

/// One lease as the lessor holds it (the value of its wheel entry).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Slot {
    pub(crate) id: LeaseId,
    pub(crate) ttl_secs: i64,
    /// Persisted remaining TTL (milliseconds), at most the TTL.
    pub(crate) remaining_ms: u64,
    /// Primary only: the deadline (milliseconds on the clock given to `promote`/`tick`).
    pub(crate) expiry_ms: u64,
    pub(crate) renew_count: RenewCount,
}

impl Slot {
    pub(crate) fn ttl_ms(&self) -> u64 {
        self.ttl_secs.unsigned_abs().saturating_mul(MILLIS_PER_SEC)
    }

    pub(crate) fn record(&self) -> LeaseRecord {
        LeaseRecord {
            id: self.id,
            ttl_secs: self.ttl_secs,
            remaining: Duration::from_millis(self.remaining_ms),
            renew_count: self.renew_count,
        }
    }
}

/// Milliseconds of `d`, rounded down (for "has the deadline passed": never early).
pub(crate) fn floor_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Milliseconds of `d`, rounded up (for deadlines and remaining TTLs: never shorter).
pub(crate) fn ceil_ms(d: Duration) -> u64 {
    let ms = floor_ms(d);
    if d.subsec_nanos() % 1_000_000 == 0 {
        ms
    } else {
        ms.saturating_add(1)
    }
}

/// The lessor: a pure state machine of leases (see the crate docs for the node's protocol and
/// the safety and liveness arguments).
///
/// Replicated operations ([`grant`](Lessor::grant), [`renew`](Lessor::renew),
/// [`revoke`](Lessor::revoke), [`revoke_expired`](Lessor::revoke_expired),
/// [`attach`](Lessor::attach), [`detach`](Lessor::detach),
/// [`apply_checkpoint`](Lessor::apply_checkpoint)) run on every replica in log order and record
/// their persisted effects as [`Change`]s, which the node drains into the entry's write batch.
/// The primary's operations ([`promote`](Lessor::promote), [`demote`](Lessor::demote),
/// [`tick`](Lessor::tick)) change only local timing and never persisted state.
///
/// # Invariants
/// 1. `index` maps each lease id to the wheel entry holding that id, and the wheel holds
///    nothing else: `index.len() == wheel.len()`.
/// 2. Every lease has `1 <= ttl_secs <= TTL_MAX_SECS` and `remaining <= ttl`.
/// 3. Every key set in `keys` is non-empty and belongs to a lease in `index`.
/// 4. Not primary: no wheel entry is scheduled. Primary: every entry is scheduled, at a tick
///    no later than the tick of its deadline (or at the expired-retry time once its deadline
///    has passed), so no expiry is missed.
///
/// # Examples
/// ```
/// use keel_lease::{Lessor, LessorConfig};
/// use keel_types::{Clock, LeaseId, ManualClock};
/// use std::time::Duration;
///
/// let clock = ManualClock::new();
/// let mut lessor = Lessor::new(LessorConfig::default())?;
/// lessor.promote(clock.now());
/// let lease = lessor.grant(LeaseId::new(7), 10, clock.now())?;
/// lessor.attach(lease.id, "k1".into())?;
/// clock.advance(Duration::from_secs(9));
/// assert!(lessor.tick(clock.now(), 100).expired.is_empty());
/// clock.advance(Duration::from_millis(1100));
/// let due = lessor.tick(clock.now(), 100);
/// assert_eq!(due.expired[0].id, lease.id);
/// assert_eq!(lessor.revoke_expired(due.expired[0]), Some(vec!["k1".into()]));
/// assert!(lessor.lease(lease.id).is_none());
/// # Ok::<(), keel_lease::LeaseError>(())
/// ```
#[derive(Debug)]
pub struct Lessor {
    config: LessorConfig,
    tick_ms: u64,
    grace_ms: u64,
    checkpoint_ms: Option<u64>,
    retry_ms: u64,
    min_ttl_secs: i64,
    wheel: Wheel<Slot>,
    index: LeaseIndex,
    /// Attached keys of the leases that have any. Lookup only, never iterated.
    keys: HashMap<LeaseId, BTreeSet<Bytes>>,
    ids: IdGenerator,
    primary: bool,
    changes: Vec<Change>,
    popped: Vec<Handle>,
    /// Scratch of [`Lessor::renew_many`] (kept to reuse the allocations).
    batch_hashes: Vec<u64>,
    batch_handles: Vec<Option<Handle>>,
}

impl Lessor {
    /// An empty lessor (not primary).
    ///
    /// # Errors
    /// [`LeaseError::InvalidConfig`].
    pub fn new(config: LessorConfig) -> Result<Self> {
        config.validate()?;
        Ok(Lessor {
            tick_ms: floor_ms(config.tick).max(1),
            grace_ms: ceil_ms(config.election_timeout),
            checkpoint_ms: config.checkpoint_interval.map(ceil_ms),
            retry_ms: ceil_ms(config.expired_retry),
            min_ttl_secs: config.min_ttl_secs(),
            ids: IdGenerator::new(config.id_seed, 0),
            config,
            wheel: Wheel::new(),
            index: LeaseIndex::default(),
            keys: HashMap::new(),
            primary: false,
            changes: Vec::new(),
            popped: Vec::new(),
            batch_hashes: Vec::new(),
            batch_handles: Vec::new(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &LessorConfig {
        &self.config
    }

    /// Whether this lessor is the primary (tracks deadlines and reports expiry).
    pub fn is_primary(&self) -> bool {
        self.primary
    }

    /// Number of leases.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether there is no lease.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// The id generator's position (persisted).
    pub fn id_counter(&self) -> u64 {
        self.ids.counter()
    }

    /// Grant a lease: `id` chosen by the client, or by the lessor's deterministic generator when
    /// `None`. The TTL is raised to the minimum (`ceil(1.5 x election timeout)`); the returned
    /// record holds the granted TTL. On the primary the deadline is `now + TTL`.
    ///
    /// # Errors
    /// [`LeaseError::TtlNotPositive`], [`LeaseError::TtlTooLarge`],
    /// [`LeaseError::AlreadyExists`], [`LeaseError::TooManyLeases`]. Nothing changes on error.
    pub fn grant(
        &mut self,
        id: Option<LeaseId>,
        ttl_secs: i64,
        now: Duration,
    ) -> Result<LeaseRecord> {
        if ttl_secs <= 0 {
            return Err(LeaseError::TtlNotPositive { ttl_secs });
        }
        if ttl_secs > TTL_MAX_SECS {
            return Err(LeaseError::TtlTooLarge {
                ttl_secs,
                max_secs: TTL_MAX_SECS,
            });
        }
        if self.index.len() >= LEASE_COUNT_MAX {
            return Err(LeaseError::TooManyLeases {
                max: LEASE_COUNT_MAX,
            });
        }
        let id = match id {
            Some(id) if self.index.contains(&self.wheel, id) => {
                return Err(LeaseError::AlreadyExists { id })
            }
            Some(id) => id,
            None => {
                let (index, wheel) = (&self.index, &self.wheel);
                let id = self.ids.next(|id| index.contains(wheel, id));
                self.changes.push(Change::IdCounter(self.ids.counter()));
                id
            }
        };
        let ttl_secs = ttl_secs.max(self.min_ttl_secs);
        let mut slot = Slot {
            id,
            ttl_secs,
            remaining_ms: 0,
            expiry_ms: 0,
            renew_count: RenewCount::default(),
        };
        slot.remaining_ms = slot.ttl_ms();
        let handle = self.wheel.insert(slot).ok_or(LeaseError::TooManyLeases {
            max: LEASE_COUNT_MAX,
        })?;
        self.index.insert(&self.wheel, id, handle);
        if self.primary {
            let now_ms = ceil_ms(now);
            self.set_expiry(handle, now_ms.saturating_add(slot.ttl_ms()), now_ms);
        }
        self.changes.push(Change::Put(slot.record()));
        self.debug_check();
        Ok(slot.record())
    }

    /// Renew (keep alive) a lease: its persisted remaining TTL becomes the full TTL and its
    /// renew count advances (voiding checkpoints and expiries computed before); on the primary
    /// its deadline becomes at least `now + TTL`. Returns the TTL in seconds.
    ///
    /// Acknowledge the client only after this ran as part of a replicated entry.
    ///
    /// # Errors
    /// [`LeaseError::NotFound`].
    pub fn renew(&mut self, id: LeaseId, now: Duration) -> Result<i64> {
        let handle = self.handle(id)?;
        self.renew_at(handle, id, now)
    }

    /// Renew a batch of leases: the same results and changes as [`Lessor::renew`] on each id
    /// in order (an id may repeat), faster on a large lessor. The lookups of the whole batch
    /// run first, in one short loop, so that their cache misses overlap (a renew does not move
    /// any lease, so they stay valid); then each renew finds its lease's slot in cache. The
    /// node applies a replicated batch of keep-alives with it.
    ///
    /// # Examples
    /// ```
    /// use keel_lease::{LeaseError, Lessor, LessorConfig};
    /// use keel_types::LeaseId;
    /// use std::time::Duration;
    /// let mut lessor = Lessor::new(LessorConfig::default()).unwrap();
    /// let a = lessor.grant(None, 60, Duration::ZERO).unwrap().id;
    /// let unknown = LeaseId::new(99).unwrap();
    /// let ttls = lessor.renew_many(&[a, unknown, a], Duration::from_secs(1));
    /// assert_eq!(ttls[0], Ok(60));
    /// assert_eq!(ttls[1], Err(LeaseError::NotFound { id: unknown }));
    /// assert_eq!(ttls[2], Ok(60));
    /// ```
    pub fn renew_many(&mut self, ids: &[LeaseId], now: Duration) -> Vec<Result<i64>> {
        let mut hashes = std::mem::take(&mut self.batch_hashes);
        let mut handles = std::mem::take(&mut self.batch_handles);
        self.index
            .get_many(&self.wheel, ids, &mut hashes, &mut handles);
        let out = ids
            .iter()
            .zip(&handles)
            .map(|(id, handle)| match handle {
                Some(handle) => self.renew_at(*handle, *id, now),
                None => Err(LeaseError::NotFound { id: *id }),
            })
            .collect();
        self.batch_hashes = hashes;
        self.batch_handles = handles;
        out
    }

    /// [`Lessor::renew`] of the lease at `handle`.
    fn renew_at(&mut self, handle: Handle, id: LeaseId, now: Duration) -> Result<i64> {
        let primary = self.primary;
        let Some(slot) = self.wheel.get_mut(handle) else {
            return Err(LeaseError::NotFound { id });
        };
        #[cfg(feature = "planted-bugs")]
        let keep = crate::planted::on(&crate::planted::RENEW_KEEPS_CHECKPOINTED_REMAINING);
        #[cfg(not(feature = "planted-bugs"))]
        let keep = false;
        if !keep {
            slot.remaining_ms = slot.ttl_ms();
        }
        slot.renew_count = slot.renew_count.next();
        let slot = *slot;
        self.changes.push(Change::Put(slot.record()));
        if primary {
            self.extend_expiry(handle, slot, ceil_ms(now));
        }
        self.debug_check();
        Ok(slot.ttl_secs)
    }

    /// Revoke a lease; returns its attached keys, sorted, for the node to delete in the same
    /// revision.
    ///
    /// # Errors
    /// [`LeaseError::NotFound`].
    pub fn revoke(&mut self, id: LeaseId) -> Result<Vec<Bytes>> {
        let handle = self
            .index
            .remove(&self.wheel, id)
            .ok_or(LeaseError::NotFound { id })?;
        self.wheel.remove(handle);
        let keys = self
            .keys
            .remove(&id)
            .map(|set| set.into_iter().collect())
            .unwrap_or_default();
        self.changes.push(Change::Delete(id));
        self.debug_check();
        Ok(keys)
    }

    /// Apply an expiry the primary reported: revoke the lease (returning its keys, sorted) only
    /// if it still exists and was not renewed since the report; otherwise `None` and nothing
    /// changes.
    pub fn revoke_expired(&mut self, expired: Expired) -> Option<Vec<Bytes>> {
        let handle = self.index.get(&self.wheel, expired.id)?;
        let slot = self.wheel.get(handle)?;
        if slot.renew_count != expired.renew_count {
            return None;
        }
        self.revoke(expired.id).ok()
    }

    /// Attach `key` to a lease (a put with this lease). Attaching twice is a no-op.
    ///
    /// # Errors
    /// [`LeaseError::NotFound`].
    pub fn attach(&mut self, id: LeaseId, key: Bytes) -> Result<()> {
        self.handle(id)?;
        if self.keys.entry(id).or_default().insert(key.clone()) {
            self.changes.push(Change::Attach(id, key));
        }
        self.debug_check();
        Ok(())
    }

    /// Detach `key` from a lease (a delete, or a put with another lease or none). Detaching a
    /// key that is not attached is a no-op.
    ///
    /// # Errors
    /// [`LeaseError::NotFound`] when the lease does not exist.
    pub fn detach(&mut self, id: LeaseId, key: &[u8]) -> Result<()> {
        self.handle(id)?;
        if let Some(set) = self.keys.get_mut(&id) {
            if let Some(key) = set.take(key) {
                self.changes.push(Change::Detach(id, key));
            }
            if set.is_empty() {
                self.keys.remove(&id);
            }
        }
        self.debug_check();
        Ok(())
    }

    /// Apply a replicated checkpoint: lower the lease's persisted remaining TTL to the
    /// checkpoint's, if the lease still exists and was not renewed since the checkpoint was
    /// computed. Returns whether the checkpoint matched the lease. Never changes the primary's
    /// deadline. Keeping the minimum makes the order in which checkpoints apply irrelevant.
    pub fn apply_checkpoint(&mut self, checkpoint: &Checkpoint) -> bool {
        let Some(handle) = self.index.get(&self.wheel, checkpoint.id) else {
            return false;
        };
        let Some(slot) = self.wheel.get_mut(handle) else {
            return false;
        };
        if slot.renew_count != checkpoint.renew_count {
            return false;
        }
        let remaining = ceil_ms(checkpoint.remaining).min(slot.ttl_ms());
        if remaining < slot.remaining_ms {
            slot.remaining_ms = remaining;
            let record = slot.record();
            self.changes.push(Change::Put(record));
        }
        self.debug_check();
        true
    }

    /// The persisted record of a lease.
    pub fn lease(&self, id: LeaseId) -> Option<LeaseRecord> {
        let handle = self.index.get(&self.wheel, id)?;
        self.wheel.get(handle).map(Slot::record)
    }

    /// Every lease id, sorted.
    pub fn leases(&self) -> Vec<LeaseId> {
        let mut ids: Vec<LeaseId> = self.wheel.iter().map(|(_, slot)| slot.id).collect();
        ids.sort_unstable();
        ids
    }

    /// Granted TTL, time left and (if `with_keys`) the attached keys, sorted.
    ///
    /// # Errors
    /// [`LeaseError::NotFound`].
    pub fn time_to_live(&self, id: LeaseId, now: Duration, with_keys: bool) -> Result<TimeToLive> {
        let slot = self
            .wheel
            .get(self.handle(id)?)
            .ok_or(LeaseError::NotFound { id })?;
        let remaining_ms = if self.primary {
            slot.expiry_ms.saturating_sub(floor_ms(now))
        } else {
            slot.remaining_ms
        };
        let keys = match (with_keys, self.keys.get(&id)) {
            (true, Some(set)) => set.iter().cloned().collect(),
            _ => Vec::new(),
        };
        Ok(TimeToLive {
            id,
            granted_ttl_secs: slot.ttl_secs,
            remaining: Duration::from_millis(remaining_ms),
            keys,
        })
    }

    /// Take the persisted changes recorded since the last call, in order (the buffer keeps
    /// its capacity). The node writes them into the applied entry's batch with
    /// [`crate::LeaseStore::stage`]; dropping the iterator discards the rest.
    pub fn drain_changes(&mut self) -> std::vec::Drain<'_, Change> {
        self.changes.drain(..)
    }

    fn handle(&self, id: LeaseId) -> Result<Handle> {
        self.index
            .get(&self.wheel, id)
            .ok_or(LeaseError::NotFound { id })
    }

    /// Primary: set a lease's deadline and schedule its next event.
    pub(crate) fn set_expiry(&mut self, handle: Handle, expiry_ms: u64, now_ms: u64) {
        let Some(slot) = self.wheel.get_mut(handle) else {
            return;
        };
        slot.expiry_ms = expiry_ms;
        let slot = *slot;
        let event_ms = self.next_event_ms(&slot, now_ms);
        self.wheel.schedule(handle, event_ms.div_ceil(self.tick_ms));
    }

    /// Primary, after a renew: the deadline becomes `now + TTL`, as in etcd. It may move
    /// *earlier*: a deadline that a promotion padded with the grace (from a stale persisted
    /// remaining TTL) is replaced, so a renewed lease expires TTL after its last renew, not
    /// after the padded deadline (the liveness bound of the crate docs resets at each renew).
    /// The wheel entry stays where it is when its event is still at or before the new
    /// deadline (it will fire early, find the deadline not reached and re-file itself): a
    /// renew then costs one lookup and one slot write, no list surgery.
    fn extend_expiry(&mut self, handle: Handle, slot: Slot, now_ms: u64) {
        let expiry = now_ms.saturating_add(slot.ttl_ms());
        let event = self.wheel.deadline(handle);
        if event.is_none_or(|tick| tick > expiry.div_ceil(self.tick_ms)) {
            self.set_expiry(handle, expiry, now_ms);
        } else if let Some(slot) = self.wheel.get_mut(handle) {
            slot.expiry_ms = expiry;
        }
    }

    /// The next time the primary must look at a lease: its deadline, or earlier when its
    /// checkpoint falls due. A checkpoint is due once the persisted remaining TTL is at least
    /// one checkpoint interval stale (above the remaining TTL by `interval`).
    pub(crate) fn next_event_ms(&self, slot: &Slot, now_ms: u64) -> u64 {
        let Some(interval) = self.checkpoint_ms else {
            return slot.expiry_ms;
        };
        let remaining = slot.expiry_ms.saturating_sub(now_ms).min(slot.ttl_ms());
        let stale = slot.remaining_ms.saturating_sub(remaining);
        let due = now_ms.saturating_add(interval.saturating_sub(stale));
        slot.expiry_ms.min(due)
    }

    /// Check the invariants after each change in debug builds, while the lessor is small
    /// enough for an O(leases) walk per call not to turn large workloads (a 100k-lease storm
    /// against a debug build) quadratic; tests of the lessor itself stay far below the bound.
    fn debug_check(&self) {
        #[cfg(debug_assertions)]
        if self.wheel.len() <= DEBUG_CHECK_LEASES_MAX {
            self.check_invariants();
        }
    }
}

/// Largest lessor whose invariants debug builds check after every change.
#[cfg(debug_assertions)]
const DEBUG_CHECK_LEASES_MAX: usize = 4096;

mod invariants;
mod primary;
mod restore;

pub use restore::PersistedLeases;

#[cfg(test)]
mod tests;
