//! The lessor's invariant checks and memory accounting.

use super::{Lessor, Slot};
use crate::limits::{TTL_MAX_MILLIS, TTL_MAX_SECS};
use crate::wheel::Wheel;
use bytes::Bytes;
use keel_types::LeaseId;
use std::collections::BTreeSet;

impl Lessor {
    /// Heap bytes of the lessor's per-lease structures (wheel slab, id index, key-set table),
    /// computed from their capacities; the attached keys themselves and the fixed 2.8 KiB of
    /// wheel bucket heads are not counted.
    pub fn heap_size_bytes(&self) -> usize {
        let index = self.index.heap_size_bytes();
        let keys = hash_table_bytes(
            self.keys.capacity(),
            std::mem::size_of::<(LeaseId, BTreeSet<Bytes>)>(),
        );
        self.wheel.capacity() * Wheel::<Slot>::entry_size_bytes() + index + keys
    }

    /// Assert the invariants listed on the type (and the wheel's). O(leases).
    pub fn check_invariants(&self) {
        self.wheel.check_invariants();
        self.index.check_invariants(&self.wheel);
        assert_eq!(
            self.index.len(),
            self.wheel.len(),
            "invariant 1: index = wheel"
        );
        for (handle, slot) in self.wheel.iter() {
            let id = slot.id;
            assert_eq!(
                self.index.get(&self.wheel, id),
                Some(handle),
                "invariant 1: {id}"
            );
            assert!(
                (1..=TTL_MAX_SECS).contains(&slot.ttl_secs),
                "invariant 2: ttl of {id}"
            );
            assert!(slot.ttl_ms() <= TTL_MAX_MILLIS);
            assert!(
                slot.remaining_ms <= slot.ttl_ms(),
                "invariant 2: remaining of {id}"
            );
            let scheduled = self.wheel.deadline(handle);
            if self.primary {
                let event = scheduled.unwrap_or_else(|| panic!("invariant 4: {id} unscheduled"));
                let deadline_tick = slot.expiry_ms.div_ceil(self.tick_ms);
                assert!(
                    event <= deadline_tick || deadline_tick <= self.wheel.elapsed(),
                    "invariant 4: {id} event {event} after deadline tick {deadline_tick}"
                );
            } else {
                assert!(
                    scheduled.is_none(),
                    "invariant 4: {id} scheduled on a non-primary"
                );
            }
        }
        for (id, set) in &self.keys {
            assert!(!set.is_empty(), "invariant 3: empty key set of {id}");
            assert!(
                self.index.contains(&self.wheel, *id),
                "invariant 3: keys of unknown {id}"
            );
        }
    }
}

/// Bytes of a `std` (hashbrown) table with `capacity` usable slots of `entry_bytes`: buckets
/// are a power of two holding at most 7/8 of them, plus one control byte per bucket and a
/// 16-byte group of trailing control bytes.
pub(super) fn hash_table_bytes(capacity: usize, entry_bytes: usize) -> usize {
    if capacity == 0 {
        return 0;
    }
    let buckets = if capacity < 8 {
        (capacity + 1).next_power_of_two()
    } else {
        (capacity * 8 / 7).next_power_of_two()
    };
    buckets * (entry_bytes + 1) + 16
}
