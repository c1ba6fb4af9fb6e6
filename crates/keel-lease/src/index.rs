//! The id index: lease id -> wheel handle, storing only the 4-byte handle per lease.

use crate::lessor::Slot;
use crate::wheel::{Handle, Wheel};
use hashbrown::HashTable;
use keel_types::LeaseId;
use std::hash::{BuildHasher, RandomState};

/// A hash table of wheel handles keyed by the lease id stored in the wheel slot, so a lease
/// costs 4 bytes plus one control byte per bucket here (a `HashMap<LeaseId, Handle>` costs 16
/// plus one). The lookup compares ids in the slot it is about to touch anyway.
///
/// The hasher is randomly keyed (client-chosen ids cannot force collisions). That randomness
/// never reaches replicated state: the table is used for lookups only, never iterated for an
/// answer that leaves the lessor.
///
/// # Invariants
/// 1. Every handle in the table is live in the wheel, and the table finds it under its slot's
///    id; no two handles share an id.
#[derive(Clone, Debug, Default)]
pub(crate) struct LeaseIndex {
    table: HashTable<Handle>,
    hasher: RandomState,
}

impl LeaseIndex {
    fn hash(&self, id: LeaseId) -> u64 {
        self.hasher.hash_one(id)
    }

    pub(crate) fn get(&self, wheel: &Wheel<Slot>, id: LeaseId) -> Option<Handle> {
        self.find(wheel, self.hash(id), id)
    }

    /// The handle of `id`, whose hash is `hash`.
    #[inline]
    fn find(&self, wheel: &Wheel<Slot>, hash: u64, id: LeaseId) -> Option<Handle> {
        self.table
            .find(hash, |h| wheel.get(*h).is_some_and(|s| s.id == id))
            .copied()
    }

    /// The handles of `ids`, in order, into `out` (cleared first). Hashing all ids first and
    /// then looking them up in one short loop lets the processor overlap the cache misses of
    /// consecutive lookups, which are independent of each other; one [`LeaseIndex::get`] after
    /// another in a longer loop body mostly waits for each miss in turn.
    pub(crate) fn get_many(
        &self,
        wheel: &Wheel<Slot>,
        ids: &[LeaseId],
        hashes: &mut Vec<u64>,
        out: &mut Vec<Option<Handle>>,
    ) {
        hashes.clear();
        hashes.extend(ids.iter().map(|id| self.hash(*id)));
        out.clear();
        out.extend(
            ids.iter()
                .zip(hashes.iter())
                .map(|(id, hash)| self.find(wheel, *hash, *id)),
        );
    }

    pub(crate) fn contains(&self, wheel: &Wheel<Slot>, id: LeaseId) -> bool {
        self.get(wheel, id).is_some()
    }

    /// Add `handle`, whose wheel slot already holds `id` (not yet in the table).
    pub(crate) fn insert(&mut self, wheel: &Wheel<Slot>, id: LeaseId, handle: Handle) {
        let hasher = &self.hasher;
        self.table.insert_unique(hasher.hash_one(id), handle, |h| {
            wheel.get(*h).map_or(0, |s| hasher.hash_one(s.id))
        });
    }

    /// Remove the handle of `id` (call before removing its wheel slot).
    pub(crate) fn remove(&mut self, wheel: &Wheel<Slot>, id: LeaseId) -> Option<Handle> {
        let hash = self.hash(id);
        match self
            .table
            .find_entry(hash, |h| wheel.get(*h).is_some_and(|s| s.id == id))
        {
            Ok(entry) => Some(entry.remove().0),
            Err(_) => None,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.table.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// Bytes of the table: buckets (a power of two holding at most 7/8 of them) of one handle
    /// and one control byte, plus a 16-byte trailing control group.
    pub(crate) fn heap_size_bytes(&self) -> usize {
        let capacity = self.table.capacity();
        if capacity == 0 {
            return 0;
        }
        let buckets = if capacity < 8 {
            (capacity + 1).next_power_of_two()
        } else {
            (capacity * 8 / 7).next_power_of_two()
        };
        buckets * (std::mem::size_of::<Handle>() + 1) + 16
    }

    /// Assert invariant 1.
    pub(crate) fn check_invariants(&self, wheel: &Wheel<Slot>) {
        for handle in &self.table {
            let slot = wheel.get(*handle);
            let Some(slot) = slot else {
                panic!("index invariant 1: handle {handle:?} not live");
            };
            assert_eq!(
                self.get(wheel, slot.id),
                Some(*handle),
                "index invariant 1: lease {} found under its id",
                slot.id
            );
        }
    }
}
