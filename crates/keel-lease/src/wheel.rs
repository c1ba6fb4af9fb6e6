//! The expiry wheel: a hierarchical timing wheel over a slab of entries.
//!
//! Time is counted in *ticks* (`u64`); the lessor converts its clock to ticks. Every entry
//! holds a copyable value and is either *scheduled* at a deadline tick or *unscheduled*.
//! Schedule, reschedule, unschedule and remove are O(1): an entry is a node of an intrusive
//! doubly linked list in exactly one bucket, addressed by a `u32` [`Handle`].
//!
//! # Layout
//! [`LEVELS`] levels of 64 slots. Level `k` slot `s` holds the entries whose deadline `d`
//! first differs from `elapsed` (the wheel's current tick) in the 6-bit digit `k`, and whose
//! digit `k` is `s`:
//!
//! ```text
//! level(d) = (63 - leading_zeros(d XOR elapsed)) / 6     slot(d) = (d >> 6*level) & 63
//! ```
//!
//! A level-`k` slot spans `64^k` ticks. Entries whose deadline is at or before `elapsed` sit in
//! the *ready* list. [`Wheel::advance`] moves `elapsed` towards `now`: it finds the earliest
//! occupied slot (the lowest non-empty level; within it the first occupied slot after
//! `elapsed`'s digit, found with one bitmap scan), sets `elapsed` to that slot's first tick and
//! re-files the slot's entries, which land in lower levels or in *ready*. It pops at most `max`
//! ready entries per call; the rest stay ready for the next call.
//!
//! # Worked example
//! `elapsed = 0`. Schedule `a` at tick 5, `b` at 70, `c` at 4100.
//!
//! ```text
//! a: 5    = 0b000000_000101        5 XOR 0 highest bit 2    -> level 0, slot 5
//! b: 70   = 0b000001_000110       70 XOR 0 highest bit 6    -> level 1, slot 1
//! c: 4100 = 0b000001_000000_000100  highest bit 12           -> level 2, slot 1
//! ```
//!
//! `advance(now = 3)`: the earliest occupied slot is level 0 slot 5 (tick 5 > 3): nothing is
//! due; `elapsed` becomes 3. `advance(now = 64)`: level 0 slot 5 starts at 5 <= 64, `elapsed`
//! = 5, `a` is re-filed: 5 <= 5, so ready, and popped. Next: level 1 slot 1 starts at tick 64
//! <= 64; `elapsed` = 64; `b` (70 XOR 64 = 6, highest bit 2) is re-filed to level 0 slot 6.
//! Next: level 0 slot 6 starts at 70 > 64: stop. Result `[a]`.
//! `advance(now = 70)`: level 0 slot 6 starts at 70; `b` becomes ready: `[b]`. Level 2 slot 1
//! starts at 4096 > 70: `elapsed` = 70. `advance(now = 5000)`: level 2 slot 1 starts at 4096;
//! `c` (4100 XOR 4096 = 4) goes to level 0 slot 4; that slot starts at 4100 <= 5000: `[c]`.
//! This example is the test `worked_example_from_the_docs`.
//!
//! # Invariants
//! 1. Every node is in exactly one state: free (on the free list), unscheduled, or linked in
//!    exactly one bucket; `len` counts non-free nodes, `scheduled_len` linked ones.
//! 2. Every bucket is a well-formed doubly linked list whose nodes name that bucket.
//! 3. A level slot's occupied bit is set iff its list is non-empty.
//! 4. A node in a level slot sits where `level(d)`/`slot(d)` above put it for the current
//!    `elapsed` (so its deadline is after `elapsed`); a ready node's deadline is at or before
//!    `elapsed`.
//! 5. `elapsed` never passes an unprocessed occupied slot: it moves only to the start of the
//!    earliest occupied slot or to a `now` before it. Hence no entry is popped before its
//!    deadline, and an entry is popped by the first `advance(now >= deadline)` with room.

/// Levels of the wheel: 11 levels of 6 bits cover every `u64` tick.
pub const LEVELS: usize = 11;
const SLOT_BITS: u32 = 6;
const SLOTS: usize = 1 << SLOT_BITS;
const SLOT_MASK: u64 = (SLOTS as u64) - 1;
/// Bucket index of the ready list (after every level slot).
const READY: u16 = (LEVELS * SLOTS) as u16;
/// Bucket marker of an allocated node that is in no list.
const UNSCHEDULED: u16 = READY + 1;
/// Bucket marker of a node on the free list.
const FREE: u16 = READY + 2;
const BUCKETS: usize = LEVELS * SLOTS + 1;
/// "No node".
const NIL: u32 = u32::MAX;

/// The address of one wheel entry. Handles are reused after [`Wheel::remove`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Handle(u32);

impl Handle {
    /// The slot number (for diagnostics and deterministic ordering).
    pub fn get(self) -> u32 {
        self.0
    }
}

#[derive(Clone, Copy, Debug)]
struct Node<T> {
    value: T,
    deadline: u64,
    prev: u32,
    next: u32,
    bucket: u16,
}

/// A hierarchical timing wheel with O(1) schedule/reschedule/cancel (see the module docs).
///
/// # Examples
/// ```
/// use keel_lease::wheel::Wheel;
/// let mut wheel = Wheel::new();
/// let a = wheel.insert("a").unwrap();
/// wheel.schedule(a, 5);
/// let mut due = Vec::new();
/// assert_eq!(wheel.advance(4, 10, &mut due), 0);
/// assert_eq!(wheel.advance(5, 10, &mut due), 1);
/// assert_eq!(wheel.get(due[0]), Some(&"a"));
/// ```
#[derive(Clone, Debug)]
pub struct Wheel<T> {
    nodes: Vec<Node<T>>,
    heads: Box<[u32; BUCKETS]>,
    occupied: [u64; LEVELS],
    elapsed: u64,
    free_head: u32,
    len: usize,
    scheduled_len: usize,
}

impl<T: Copy> Default for Wheel<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Copy> Wheel<T> {
    /// An empty wheel at tick 0.
    pub fn new() -> Self {
        Wheel {
            nodes: Vec::new(),
            heads: Box::new([NIL; BUCKETS]),
            occupied: [0; LEVELS],
            elapsed: 0,
            free_head: NIL,
            len: 0,
            scheduled_len: 0,
        }
    }

    /// The tick up to which the wheel has advanced.
    pub fn elapsed(&self) -> u64 {
        self.elapsed
    }

    /// Entries (scheduled or not).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the wheel holds no entry.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Scheduled entries.
    pub fn scheduled_len(&self) -> usize {
        self.scheduled_len
    }

    /// Slab capacity in entries (for memory accounting).
    pub fn capacity(&self) -> usize {
        self.nodes.capacity()
    }

    /// Bytes of one slab entry (for memory accounting).
    pub const fn entry_size_bytes() -> usize {
        std::mem::size_of::<Node<T>>()
    }

    /// Add an unscheduled entry. `None` when `u32` handles are exhausted.
    pub fn insert(&mut self, value: T) -> Option<Handle> {
        let node = Node {
            value,
            deadline: 0,
            prev: NIL,
            next: NIL,
            bucket: UNSCHEDULED,
        };
        let index = if self.free_head != NIL {
            let index = self.free_head;
            self.free_head = self.nodes[index as usize].next;
            self.nodes[index as usize] = node;
            index
        } else {
            let index = u32::try_from(self.nodes.len()).ok().filter(|i| *i < NIL)?;
            self.nodes.push(node);
            index
        };
        self.len += 1;
        Some(Handle(index))
    }

    /// Remove an entry (scheduled or not) and return its value; `None` for a stale handle.
    pub fn remove(&mut self, handle: Handle) -> Option<T> {
        let bucket = self.nodes.get(handle.0 as usize)?.bucket;
        if bucket == FREE {
            return None;
        }
        if bucket != UNSCHEDULED {
            self.unlink(handle.0);
            self.scheduled_len -= 1;
        }
        let node = &mut self.nodes[handle.0 as usize];
        node.bucket = FREE;
        node.prev = NIL;
        node.next = self.free_head;
        self.free_head = handle.0;
        self.len -= 1;
        Some(node.value)
    }

    /// The value of a live entry.
    pub fn get(&self, handle: Handle) -> Option<&T> {
        self.nodes
            .get(handle.0 as usize)
            .filter(|n| n.bucket != FREE)
            .map(|n| &n.value)
    }

    /// The value of a live entry, mutably.
    pub fn get_mut(&mut self, handle: Handle) -> Option<&mut T> {
        self.nodes
            .get_mut(handle.0 as usize)
            .filter(|n| n.bucket != FREE)
            .map(|n| &mut n.value)
    }

    /// The deadline of a scheduled entry; `None` when unscheduled or stale.
    pub fn deadline(&self, handle: Handle) -> Option<u64> {
        self.nodes
            .get(handle.0 as usize)
            .filter(|n| n.bucket != FREE && n.bucket != UNSCHEDULED)
            .map(|n| n.deadline)
    }

    /// Schedule (or reschedule) an entry at `deadline`. A deadline at or before
    /// [`Wheel::elapsed`] makes it ready at once. Returns `false` for a stale handle.
    pub fn schedule(&mut self, handle: Handle, deadline: u64) -> bool {
        let Some(bucket) = self.nodes.get(handle.0 as usize).map(|n| n.bucket) else {
            return false;
        };
        match bucket {
            FREE => return false,
            UNSCHEDULED => self.scheduled_len += 1,
            _ => self.unlink(handle.0),
        }
        self.nodes[handle.0 as usize].deadline = deadline;
        self.link(handle.0, self.bucket_for(deadline));
        true
    }

    /// Take an entry out of its bucket (it stays allocated). Returns `false` for a stale handle.
    pub fn unschedule(&mut self, handle: Handle) -> bool {
        let Some(bucket) = self.nodes.get(handle.0 as usize).map(|n| n.bucket) else {
            return false;
        };
        match bucket {
            FREE => false,
            UNSCHEDULED => true,
            _ => {
                self.unlink(handle.0);
                self.nodes[handle.0 as usize].bucket = UNSCHEDULED;
                self.scheduled_len -= 1;
                true
            }
        }
    }

    /// Unschedule every entry and restart the wheel at tick `elapsed`. O(entries).
    pub fn unschedule_all(&mut self, elapsed: u64) {
        for node in &mut self.nodes {
            if node.bucket != FREE {
                node.bucket = UNSCHEDULED;
                node.prev = NIL;
                node.next = NIL;
            }
        }
        self.heads.fill(NIL);
        self.occupied = [0; LEVELS];
        self.scheduled_len = 0;
        self.elapsed = elapsed;
    }

    /// Number of slab slots (live or free); handles are below it.
    pub fn slab_len(&self) -> usize {
        self.nodes.len()
    }

    /// The handle of slab slot `index` if it holds a live entry.
    pub fn handle_at(&self, index: usize) -> Option<Handle> {
        let node = self.nodes.get(index)?;
        if node.bucket == FREE {
            return None;
        }
        u32::try_from(index).ok().map(Handle)
    }

    /// Every live entry, in handle order.
    pub fn iter(&self) -> impl Iterator<Item = (Handle, &T)> + '_ {
        self.nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| n.bucket != FREE)
            .map(|(i, n)| (Handle(u32::try_from(i).unwrap_or(NIL)), &n.value))
    }

    /// Move time forward to `now` and pop at most `max` due entries (deadline <= `now`) into
    /// `out`; popped entries become unscheduled. Returns how many were popped. Entries due but
    /// beyond `max` stay due for the next call. `now` before [`Wheel::elapsed`] pops only what
    /// is already ready.
    pub fn advance(&mut self, now: u64, max: usize, out: &mut Vec<Handle>) -> usize {
        let mut popped = 0;
        loop {
            while popped < max {
                let index = self.heads[READY as usize];
                if index == NIL {
                    break;
                }
                self.unlink(index);
                self.nodes[index as usize].bucket = UNSCHEDULED;
                self.scheduled_len -= 1;
                out.push(Handle(index));
                popped += 1;
            }
            if popped >= max {
                return popped;
            }
            match self.next_slot() {
                Some((level, slot, start)) if start <= now => {
                    self.elapsed = start;
                    self.refile(level * SLOTS + slot);
                }
                _ => {
                    self.elapsed = self.elapsed.max(now);
                    return popped;
                }
            }
        }
    }

    /// The earliest occupied level slot: `(level, slot, first tick of the slot)`.
    fn next_slot(&self) -> Option<(usize, usize, u64)> {
        let (level, bits) = self
            .occupied
            .iter()
            .enumerate()
            .find(|(_, bits)| **bits != 0)?;
        let shift = level as u32 * SLOT_BITS;
        let slot = u64::from(bits.trailing_zeros());
        let above = shift + SLOT_BITS;
        let block = self
            .elapsed
            .checked_shr(above)
            .and_then(|b| b.checked_shl(above))
            .unwrap_or(0);
        Some((level, slot as usize, block | (slot << shift)))
    }

    /// Re-file every entry of one level slot relative to the current `elapsed`.
    fn refile(&mut self, bucket: usize) {
        let mut index = self.heads[bucket];
        self.heads[bucket] = NIL;
        self.occupied[bucket / SLOTS] &= !(1u64 << (bucket % SLOTS));
        while index != NIL {
            let node = &self.nodes[index as usize];
            let (next, deadline) = (node.next, node.deadline);
            let target = self.bucket_for(deadline);
            debug_assert!((target as usize) < bucket || target == READY);
            self.link(index, target);
            index = next;
        }
    }

    fn bucket_for(&self, deadline: u64) -> u16 {
        if deadline <= self.elapsed {
            return READY;
        }
        let level = (63 - (deadline ^ self.elapsed).leading_zeros()) / SLOT_BITS;
        let slot = (deadline >> (level * SLOT_BITS)) & SLOT_MASK;
        // level <= 10 and slot <= 63: the bucket index is below READY (704).
        (level as u16) * (SLOTS as u16) + slot as u16
    }

    fn link(&mut self, index: u32, bucket: u16) {
        let head = self.heads[bucket as usize];
        let node = &mut self.nodes[index as usize];
        node.prev = NIL;
        node.next = head;
        node.bucket = bucket;
        if head != NIL {
            self.nodes[head as usize].prev = index;
        }
        self.heads[bucket as usize] = index;
        if bucket < READY {
            self.occupied[bucket as usize / SLOTS] |= 1u64 << (bucket as usize % SLOTS);
        }
    }

    fn unlink(&mut self, index: u32) {
        let Node {
            prev, next, bucket, ..
        } = self.nodes[index as usize];
        if prev == NIL {
            self.heads[bucket as usize] = next;
            if next == NIL && bucket < READY {
                self.occupied[bucket as usize / SLOTS] &= !(1u64 << (bucket as usize % SLOTS));
            }
        } else {
            self.nodes[prev as usize].next = next;
        }
        if next != NIL {
            self.nodes[next as usize].prev = prev;
        }
        let node = &mut self.nodes[index as usize];
        node.prev = NIL;
        node.next = NIL;
    }

    /// Assert invariants 1-4 of the module docs. O(entries).
    pub fn check_invariants(&self) {
        let mut linked = 0usize;
        for bucket in 0..BUCKETS {
            let mut prev = NIL;
            let mut index = self.heads[bucket];
            if bucket < READY as usize {
                let bit = (self.occupied[bucket / SLOTS] >> (bucket % SLOTS)) & 1;
                assert_eq!(bit == 1, index != NIL, "occupied bit of bucket {bucket}");
            }
            while index != NIL {
                let node = &self.nodes[index as usize];
                assert_eq!(
                    node.bucket as usize, bucket,
                    "node {index} names its bucket"
                );
                assert_eq!(node.prev, prev, "back link of node {index}");
                assert_eq!(
                    self.bucket_for(node.deadline) as usize,
                    bucket,
                    "node {index} (deadline {}) filed for elapsed {}",
                    node.deadline,
                    self.elapsed
                );
                linked += 1;
                assert!(linked <= self.nodes.len(), "cycle in bucket {bucket}");
                prev = index;
                index = node.next;
            }
        }
        assert_eq!(linked, self.scheduled_len, "scheduled count");
        let mut free = 0usize;
        let mut index = self.free_head;
        while index != NIL {
            assert_eq!(
                self.nodes[index as usize].bucket, FREE,
                "free list node {index}"
            );
            free += 1;
            assert!(free <= self.nodes.len(), "cycle in the free list");
            index = self.nodes[index as usize].next;
        }
        assert_eq!(free + self.len, self.nodes.len(), "free + live = slab");
        let unscheduled = self
            .nodes
            .iter()
            .filter(|n| n.bucket == UNSCHEDULED)
            .count();
        assert_eq!(
            unscheduled + self.scheduled_len,
            self.len,
            "live = unscheduled + linked"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn advance_all(wheel: &mut Wheel<&'static str>, now: u64) -> Vec<&'static str> {
        let mut out = Vec::new();
        wheel.advance(now, usize::MAX, &mut out);
        wheel.check_invariants();
        let mut names: Vec<_> = out.iter().map(|h| *wheel.get(*h).unwrap()).collect();
        names.sort_unstable();
        names
    }

    #[test]
    fn worked_example_from_the_docs() {
        let mut wheel = Wheel::new();
        let a = wheel.insert("a").unwrap();
        let b = wheel.insert("b").unwrap();
        let c = wheel.insert("c").unwrap();
        wheel.schedule(a, 5);
        wheel.schedule(b, 70);
        wheel.schedule(c, 4100);
        assert_eq!(wheel.nodes[a.0 as usize].bucket, 5);
        assert_eq!(wheel.nodes[b.0 as usize].bucket, 64 + 1);
        assert_eq!(wheel.nodes[c.0 as usize].bucket, 2 * 64 + 1);
        wheel.check_invariants();

        assert!(advance_all(&mut wheel, 3).is_empty());
        assert_eq!(wheel.elapsed(), 3);
        assert_eq!(advance_all(&mut wheel, 64), ["a"]);
        assert_eq!(wheel.elapsed(), 64);
        assert_eq!(wheel.nodes[b.0 as usize].bucket, 6);
        assert_eq!(advance_all(&mut wheel, 70), ["b"]);
        assert_eq!(wheel.elapsed(), 70);
        assert_eq!(advance_all(&mut wheel, 5000), ["c"]);
        assert_eq!(wheel.scheduled_len(), 0);
        assert_eq!(wheel.len(), 3);
    }

    #[test]
    fn never_early_and_at_the_deadline_tick() {
        let mut wheel = Wheel::new();
        let deadlines = [1u64, 63, 64, 65, 4095, 4096, 262_143, 262_144, 1 << 40];
        for d in deadlines {
            let h = wheel.insert("x").unwrap();
            wheel.schedule(h, d);
        }
        for d in deadlines {
            let mut out = Vec::new();
            wheel.advance(d - 1, usize::MAX, &mut out);
            assert!(out.is_empty(), "nothing due before {d}");
            wheel.advance(d, usize::MAX, &mut out);
            assert_eq!(out.len(), 1, "due exactly at {d}");
            assert_eq!(wheel.nodes[out[0].0 as usize].deadline, d);
            wheel.check_invariants();
        }
    }

    #[test]
    fn bounded_batches_keep_the_rest_due() {
        let mut wheel = Wheel::new();
        for d in 0..100u64 {
            let h = wheel.insert("x").unwrap();
            wheel.schedule(h, 10 + d % 7);
        }
        let mut out = Vec::new();
        assert_eq!(wheel.advance(1000, 30, &mut out), 30);
        assert_eq!(wheel.advance(1000, 30, &mut out), 30);
        assert_eq!(wheel.advance(1000, 30, &mut out), 30);
        assert_eq!(wheel.advance(1000, 30, &mut out), 10);
        assert_eq!(wheel.advance(1000, 30, &mut out), 0);
        wheel.check_invariants();
    }

    #[test]
    fn reschedule_cancel_remove_and_reuse() {
        let mut wheel = Wheel::new();
        let a = wheel.insert(1u8).unwrap();
        let b = wheel.insert(2u8).unwrap();
        wheel.schedule(a, 10);
        wheel.schedule(b, 10);
        wheel.schedule(a, 500);
        assert!(wheel.unschedule(b));
        let mut out = Vec::new();
        wheel.advance(100, usize::MAX, &mut out);
        assert!(out.is_empty());
        assert_eq!(wheel.remove(b), Some(2));
        assert_eq!(wheel.remove(b), None, "stale handle");
        assert!(!wheel.schedule(b, 1), "stale handle");
        let c = wheel.insert(3u8).unwrap();
        assert_eq!(c, b, "slot reused");
        wheel.schedule(c, 50);
        wheel.check_invariants();
        wheel.advance(u64::MAX, usize::MAX, &mut out);
        assert_eq!(out.len(), 2);
        wheel.check_invariants();
    }

    #[test]
    fn past_deadline_is_ready_at_once_and_unschedule_all_restarts() {
        let mut wheel = Wheel::new();
        let mut out = Vec::new();
        wheel.advance(1000, 1, &mut out);
        let a = wheel.insert(()).unwrap();
        wheel.schedule(a, 3);
        assert_eq!(wheel.advance(1000, 5, &mut out), 1);
        wheel.schedule(a, 2000);
        wheel.unschedule_all(10);
        assert_eq!(wheel.elapsed(), 10);
        assert_eq!(wheel.scheduled_len(), 0);
        wheel.check_invariants();
        wheel.schedule(a, u64::MAX);
        wheel.check_invariants();
        assert_eq!(wheel.advance(u64::MAX - 1, 5, &mut out), 0);
        assert_eq!(wheel.advance(u64::MAX, 5, &mut out), 1);
    }
}
