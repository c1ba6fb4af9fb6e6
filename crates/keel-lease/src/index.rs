//! The id index: lease id -> wheel handle, storing a 4-byte handle and a 4-byte hash tag
//! per lease.

use crate::lessor::Slot;
use crate::wheel::{Handle, Wheel};
use hashbrown::HashTable;
use keel_types::LeaseId;
use std::hash::{BuildHasher, RandomState};

/// One table entry: the handle of a lease's wheel slot and 32 bits of its id's hash.
#[derive(Clone, Copy, Debug)]
struct Entry {
    tag: u32,
    handle: Handle,
}

/// Bits of the hash that become the tag: above the bits that pick a bucket (the low bits, 21
/// of them at a million leases) and below hashbrown's 7-bit control byte (the top bits), so
/// the tag tells apart entries that the bucket and the control byte do not.
fn tag_of(hash: u64) -> u32 {
    (hash >> 25) as u32
}

/// A hash table of wheel handles keyed by the lease id stored in the wheel slot, so a lease
/// costs 8 bytes plus one control byte per bucket here (a `HashMap<LeaseId, Handle>` costs 16
/// plus one).
///
/// A lookup first finds the entry whose 32-bit tag matches, without touching the wheel, and
/// then checks the id in the wheel slot it is about to touch anyway; a tag that matches
/// another lease (odds about 2^-32 per probed entry whose control byte also matched) falls
/// back to a lookup that compares ids. Keeping the slot out of the probe shortens the chain of
/// dependent cache misses per lookup from three (control byte, entry, slot) to two, which
/// [`LeaseIndex::get_many`] overlaps across a batch.
///
/// The hasher is randomly keyed (client-chosen ids cannot force collisions). That randomness
/// never reaches replicated state: the table is used for lookups only, never iterated for an
/// answer that leaves the lessor.
///
/// # Invariants
/// 1. Every handle in the table is live in the wheel, and the table finds it under its slot's
///    id with the tag of that id's hash; no two handles share an id.
#[derive(Clone, Debug, Default)]
pub(crate) struct LeaseIndex {
    table: HashTable<Entry>,
    hasher: RandomState,
}

impl LeaseIndex {
    fn hash(&self, id: LeaseId) -> u64 {
        self.hasher.hash_one(id)
    }

    pub(crate) fn get(&self, wheel: &Wheel<Slot>, id: LeaseId) -> Option<Handle> {
        let hash = self.hash(id);
        let candidate = self.find_tag(hash);
        self.confirm(wheel, hash, id, candidate)
    }

    /// The handle of the first entry whose tag matches `hash`'s (it may belong to another id).
    #[inline]
    fn find_tag(&self, hash: u64) -> Option<Handle> {
        let tag = tag_of(hash);
        self.table.find(hash, |e| e.tag == tag).map(|e| e.handle)
    }

    /// `candidate` (from [`LeaseIndex::find_tag`]) if its slot holds `id`; otherwise the
    /// handle found by comparing ids.
    #[inline]
    fn confirm(
        &self,
        wheel: &Wheel<Slot>,
        hash: u64,
        id: LeaseId,
        candidate: Option<Handle>,
    ) -> Option<Handle> {
        let candidate = candidate?;
        if wheel.get(candidate).is_some_and(|s| s.id == id) {
            return Some(candidate);
        }
        self.find_exact(wheel, hash, id)
    }

    /// The handle of `id`, comparing tags and then ids.
    fn find_exact(&self, wheel: &Wheel<Slot>, hash: u64, id: LeaseId) -> Option<Handle> {
        let tag = tag_of(hash);
        self.table
            .find(hash, |e| {
                e.tag == tag && wheel.get(e.handle).is_some_and(|s| s.id == id)
            })
            .map(|e| e.handle)
    }

    /// The handles of `ids`, in order, into `out` (cleared first). Three short loops: hash
    /// every id, probe the table for every tag, then confirm every id in its slot. The misses
    /// within each loop are independent of each other, so the processor overlaps them; one
    /// [`LeaseIndex::get`] after another mostly waits for each miss in turn. The last loop
    /// leaves the batch's slots in cache for the renews that follow.
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
        out.extend(hashes.iter().map(|hash| self.find_tag(*hash)));
        for ((id, hash), handle) in ids.iter().zip(hashes.iter()).zip(out.iter_mut()) {
            *handle = self.confirm(wheel, *hash, *id, *handle);
        }
    }

    pub(crate) fn contains(&self, wheel: &Wheel<Slot>, id: LeaseId) -> bool {
        self.get(wheel, id).is_some()
    }

    /// Add `handle`, whose wheel slot already holds `id` (not yet in the table).
    pub(crate) fn insert(&mut self, wheel: &Wheel<Slot>, id: LeaseId, handle: Handle) {
        let hasher = &self.hasher;
        let hash = hasher.hash_one(id);
        let entry = Entry {
            tag: tag_of(hash),
            handle,
        };
        self.table.insert_unique(hash, entry, |e| {
            wheel.get(e.handle).map_or(0, |s| hasher.hash_one(s.id))
        });
    }

    /// Remove the handle of `id` (call before removing its wheel slot).
    pub(crate) fn remove(&mut self, wheel: &Wheel<Slot>, id: LeaseId) -> Option<Handle> {
        let hash = self.hash(id);
        let tag = tag_of(hash);
        match self.table.find_entry(hash, |e| {
            e.tag == tag && wheel.get(e.handle).is_some_and(|s| s.id == id)
        }) {
            Ok(entry) => Some(entry.remove().0.handle),
            Err(_) => None,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.table.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// Bytes of the table: buckets (a power of two holding at most 7/8 of them) of one entry
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
        buckets * (std::mem::size_of::<Entry>() + 1) + 16
    }

    /// Assert invariant 1.
    pub(crate) fn check_invariants(&self, wheel: &Wheel<Slot>) {
        for entry in &self.table {
            let handle = &entry.handle;
            let slot = wheel.get(*handle);
            let Some(slot) = slot else {
                panic!("index invariant 1: handle {handle:?} not live");
            };
            assert_eq!(
                entry.tag,
                tag_of(self.hash(slot.id)),
                "index invariant 1: lease {} filed with its id's tag",
                slot.id
            );
            assert_eq!(
                self.get(wheel, slot.id),
                Some(*handle),
                "index invariant 1: lease {} found under its id",
                slot.id
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lease::RenewCount;

    fn slot(id: i64) -> Slot {
        Slot {
            id: LeaseId::new(id).expect("positive id"),
            ttl_secs: 10,
            remaining_ms: 10_000,
            expiry_ms: 0,
            renew_count: RenewCount::default(),
        }
    }

    fn filled(n: i64) -> (Wheel<Slot>, LeaseIndex, Vec<Handle>) {
        let mut wheel = Wheel::new();
        let mut index = LeaseIndex::default();
        let mut handles = Vec::new();
        for id in 1..=n {
            let handle = wheel.insert(slot(id)).expect("room in the wheel");
            index.insert(&wheel, slot(id).id, handle);
            handles.push(handle);
        }
        (wheel, index, handles)
    }

    #[test]
    fn a_tag_that_matches_another_lease_falls_back_to_comparing_ids() {
        let (wheel, index, handles) = filled(3);
        let two = slot(2).id;
        let hash = index.hash(two);
        // As if lease 1's entry carried lease 2's tag: the slot check rejects it.
        assert_eq!(
            index.confirm(&wheel, hash, two, Some(handles[0])),
            Some(handles[1])
        );
        assert_eq!(index.confirm(&wheel, hash, two, None), None);
        let missing = slot(9).id;
        assert_eq!(
            index.confirm(&wheel, index.hash(missing), missing, Some(handles[2])),
            None
        );
    }

    #[test]
    fn batch_lookups_match_single_lookups_after_removals() {
        let (wheel, mut index, handles) = filled(2000);
        for id in (1..=2000).step_by(3) {
            assert!(index.remove(&wheel, slot(id).id).is_some());
        }
        index.check_invariants(&wheel);
        let ids: Vec<LeaseId> = (1..=2100).map(|id| slot(id).id).collect();
        let (mut hashes, mut out) = (Vec::new(), Vec::new());
        index.get_many(&wheel, &ids, &mut hashes, &mut out);
        for (i, id) in ids.iter().enumerate() {
            let n = i as i64 + 1;
            let expected = (n <= 2000 && (n - 1) % 3 != 0).then(|| handles[i]);
            assert_eq!(out[i], expected, "lease {n}");
            assert_eq!(index.get(&wheel, *id), expected, "lease {n}");
        }
    }
}
