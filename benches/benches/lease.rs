//! Lease benchmarks: keel's lessor (hierarchical expiry wheel) against binary-heap lease queues,
//! in the same run.
//!
//! TTLs are uniform in [60 s, 1000 s].
//!
//! Baselines (both hold the same per-lease state as the lessor: TTL, remaining, renew count):
//! * `heap`: an indexed binary heap, what etcd uses since 3.4 (`LeaseExpiredNotifier`:
//!   `container/heap` plus a map from id to the heap item, `heap.Fix` on renew);
//! * `binheap`: `std::collections::BinaryHeap` with lazy deletion, what etcd up to 3.3 did
//!   (every renew pushes a new item; stale items are skipped when popped).
//!
//! Measured: grant (N leases into an empty structure), renew (keep-alive traffic: batches of
//! 10,000 random renews with N leases present, simulated time advancing 10 ms per batch so
//! renews move deadlines as real keep-alives do, each batch followed by the expiry check;
//! `wheel` renews a batch with `Lessor::renew_many`, as keel's node applies a replicated batch
//! of keep-alives, `wheel-per-call` with one `Lessor::renew` per lease, and the heaps one by
//! one, as etcd renews one lease per keep-alive request),
//! expire (advance time tick by tick until all N leases have expired
//! and been revoked), for N = 10k, 100k, 1M; and memory per lease, printed before the
//! criterion runs. Checkpoints are off in the lessor here so that all three do the same work
//! (no baseline checkpoints).
//!
//! Memory is computed from the capacities of each structure's allocations (slab, hash table
//! buckets including control bytes, heap vector), which is exact for these allocation shapes
//! and independent of the allocator; the resident-set growth while building (from
//! `/proc/self/statm`) is printed next to it as a cross-check.

use criterion::{BatchSize, BenchmarkId, Criterion, Throughput};
use keel_lease::{Lessor, LessorConfig};
use keel_types::LeaseId;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::Duration;

const SIZES: [usize; 3] = [10_000, 100_000, 1_000_000];
const RENEW_BATCH: usize = 10_000;
const TICK_MS: u64 = 100;
const TTL_MIN_SECS: u64 = 60;
const TTL_MAX_SECS: u64 = 1_000;
/// Simulated time between two renew batches.
const RENEW_BATCH_STEP_MS: u64 = 10;

/// Deterministic pseudo-random numbers (SplitMix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

fn lease_id(raw: u64) -> LeaseId {
    match LeaseId::new((raw >> 1) as i64 | 1) {
        Some(id) => id,
        None => unreachable!("odd ids are non-zero"),
    }
}

/// `n` distinct random lease ids with TTLs in `[TTL_MIN_SECS, TTL_MAX_SECS]` seconds.
fn workload(n: usize) -> Vec<(LeaseId, u64)> {
    let mut rng = Rng(n as u64);
    let mut seen = std::collections::HashSet::with_capacity(n);
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let id = lease_id(rng.next());
        if seen.insert(id) {
            out.push((
                id,
                TTL_MIN_SECS + rng.next() % (TTL_MAX_SECS - TTL_MIN_SECS + 1),
            ));
        }
    }
    out
}

fn hash_table_bytes(capacity: usize, entry_bytes: usize) -> usize {
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

/// The lease queue interface the benchmark drives.
trait LeaseQueue {
    fn grant(&mut self, id: LeaseId, ttl_secs: u64, now_ms: u64);
    fn renew(&mut self, id: LeaseId, now_ms: u64);
    /// Renew a batch (one replicated entry of keep-alives in keel). The baselines renew one by
    /// one, as etcd renews one lease per keep-alive request.
    fn renew_batch(&mut self, ids: &[LeaseId], now_ms: u64) {
        for id in ids {
            self.renew(*id, now_ms);
        }
    }
    /// Pop every lease due at `now_ms` and revoke it; returns how many.
    fn expire(&mut self, now_ms: u64) -> usize;
    fn heap_bytes(&self) -> usize;
}

fn lessor_config() -> LessorConfig {
    LessorConfig {
        checkpoint_interval: None,
        tick: Duration::from_millis(TICK_MS),
        ..LessorConfig::default()
    }
}

/// keel's lessor; `batched` renews a batch with `Lessor::renew_many` (what the node does with
/// a replicated batch of keep-alives), otherwise one `Lessor::renew` per lease.
struct Wheel(Lessor, bool);

impl Wheel {
    fn new() -> Self {
        Self::with_batches(true)
    }
    fn per_call() -> Self {
        Self::with_batches(false)
    }
    fn with_batches(batched: bool) -> Self {
        let mut lessor = match Lessor::new(lessor_config()) {
            Ok(lessor) => lessor,
            Err(e) => panic!("{e}"),
        };
        lessor.promote(Duration::ZERO);
        Wheel(lessor, batched)
    }
}

impl LeaseQueue for Wheel {
    fn grant(&mut self, id: LeaseId, ttl_secs: u64, now_ms: u64) {
        let now = Duration::from_millis(now_ms);
        if let Err(e) = self.0.grant(Some(id), ttl_secs as i64, now) {
            panic!("{e}");
        }
        // The node drains the changes of every applied entry into its batch.
        self.0.drain_changes();
    }
    fn renew(&mut self, id: LeaseId, now_ms: u64) {
        // A lease that expired meanwhile is not found; the bench keeps going.
        let _ = self.0.renew(id, Duration::from_millis(now_ms));
        self.0.drain_changes();
    }
    fn renew_batch(&mut self, ids: &[LeaseId], now_ms: u64) {
        if !self.1 {
            for id in ids {
                self.renew(*id, now_ms);
            }
            return;
        }
        // Leases that expired meanwhile are not found; the bench keeps going.
        let _ = self.0.renew_many(ids, Duration::from_millis(now_ms));
        self.0.drain_changes();
    }
    fn expire(&mut self, now_ms: u64) -> usize {
        let due = self.0.tick(Duration::from_millis(now_ms), usize::MAX);
        for expired in &due.expired {
            self.0.revoke_expired(*expired);
        }
        self.0.drain_changes();
        due.expired.len()
    }
    fn heap_bytes(&self) -> usize {
        self.0.heap_size_bytes()
    }
}

/// The per-lease state every structure keeps (the lessor's, minus its wheel links).
#[derive(Clone, Copy)]
struct LeaseState {
    ttl_secs: u64,
    remaining_ms: u64,
    expiry_ms: u64,
    renew_count: u32,
    heap_index: u32,
}

/// etcd >= 3.4: an indexed min-heap; items point to their lease slot and the slot records the
/// item's position, so `Fix` after a renew costs O(log n) swaps without map lookups.
#[derive(Default)]
struct IndexedHeap {
    index: HashMap<LeaseId, u32>,
    slots: Vec<(LeaseId, LeaseState)>,
    free: Vec<u32>,
    heap: Vec<(u64, u32)>,
}

impl IndexedHeap {
    fn swap(&mut self, a: usize, b: usize) {
        self.heap.swap(a, b);
        self.slots[self.heap[a].1 as usize].1.heap_index = a as u32;
        self.slots[self.heap[b].1 as usize].1.heap_index = b as u32;
    }
    fn up(&mut self, mut i: usize) {
        while i > 0 {
            let parent = (i - 1) / 2;
            if self.heap[parent].0 <= self.heap[i].0 {
                break;
            }
            self.swap(i, parent);
            i = parent;
        }
    }
    fn down(&mut self, mut i: usize) {
        loop {
            let left = 2 * i + 1;
            if left >= self.heap.len() {
                break;
            }
            let right = left + 1;
            let child = if right < self.heap.len() && self.heap[right].0 < self.heap[left].0 {
                right
            } else {
                left
            };
            if self.heap[i].0 <= self.heap[child].0 {
                break;
            }
            self.swap(i, child);
            i = child;
        }
    }
    fn fix(&mut self, i: usize) {
        self.up(i);
        self.down(i);
    }
}

impl LeaseQueue for IndexedHeap {
    fn grant(&mut self, id: LeaseId, ttl_secs: u64, now_ms: u64) {
        let expiry_ms = now_ms + ttl_secs * 1000;
        let state = LeaseState {
            ttl_secs,
            remaining_ms: ttl_secs * 1000,
            expiry_ms,
            renew_count: 0,
            heap_index: self.heap.len() as u32,
        };
        let slot = match self.free.pop() {
            Some(slot) => {
                self.slots[slot as usize] = (id, state);
                slot
            }
            None => {
                self.slots.push((id, state));
                (self.slots.len() - 1) as u32
            }
        };
        self.index.insert(id, slot);
        self.heap.push((expiry_ms, slot));
        self.up(self.heap.len() - 1);
    }
    fn renew(&mut self, id: LeaseId, now_ms: u64) {
        let Some(&slot) = self.index.get(&id) else {
            return;
        };
        let state = &mut self.slots[slot as usize].1;
        state.expiry_ms = now_ms + state.ttl_secs * 1000;
        state.remaining_ms = state.ttl_secs * 1000;
        state.renew_count += 1;
        let (expiry, at) = (state.expiry_ms, state.heap_index as usize);
        self.heap[at].0 = expiry;
        self.fix(at);
    }
    fn expire(&mut self, now_ms: u64) -> usize {
        let mut count = 0;
        while let Some(&(expiry, slot)) = self.heap.first() {
            if expiry > now_ms {
                break;
            }
            let last = self.heap.len() - 1;
            self.swap(0, last);
            self.heap.pop();
            self.down(0);
            let id = self.slots[slot as usize].0;
            self.index.remove(&id);
            self.free.push(slot);
            count += 1;
        }
        count
    }
    fn heap_bytes(&self) -> usize {
        hash_table_bytes(self.index.capacity(), std::mem::size_of::<(LeaseId, u32)>())
            + self.slots.capacity() * std::mem::size_of::<(LeaseId, LeaseState)>()
            + self.heap.capacity() * std::mem::size_of::<(u64, u32)>()
            + self.free.capacity() * 4
    }
}

/// etcd <= 3.3: `BinaryHeap` with lazy deletion: a renew pushes a new item; a popped item whose
/// renew count is stale is skipped.
#[derive(Default)]
struct LazyHeap {
    leases: HashMap<LeaseId, LeaseState>,
    heap: BinaryHeap<Reverse<(u64, LeaseId, u32)>>,
}

impl LeaseQueue for LazyHeap {
    fn grant(&mut self, id: LeaseId, ttl_secs: u64, now_ms: u64) {
        let expiry_ms = now_ms + ttl_secs * 1000;
        let state = LeaseState {
            ttl_secs,
            remaining_ms: ttl_secs * 1000,
            expiry_ms,
            renew_count: 0,
            heap_index: 0,
        };
        self.leases.insert(id, state);
        self.heap.push(Reverse((expiry_ms, id, 0)));
    }
    fn renew(&mut self, id: LeaseId, now_ms: u64) {
        let Some(state) = self.leases.get_mut(&id) else {
            return;
        };
        state.expiry_ms = now_ms + state.ttl_secs * 1000;
        state.remaining_ms = state.ttl_secs * 1000;
        state.renew_count += 1;
        self.heap
            .push(Reverse((state.expiry_ms, id, state.renew_count)));
    }
    fn expire(&mut self, now_ms: u64) -> usize {
        let mut count = 0;
        while let Some(&Reverse((expiry, id, renew_count))) = self.heap.peek() {
            if expiry > now_ms {
                break;
            }
            self.heap.pop();
            if self.leases.get(&id).map(|s| s.renew_count) == Some(renew_count) {
                self.leases.remove(&id);
                count += 1;
            }
        }
        count
    }
    fn heap_bytes(&self) -> usize {
        hash_table_bytes(
            self.leases.capacity(),
            std::mem::size_of::<(LeaseId, LeaseState)>(),
        ) + self.heap.capacity() * std::mem::size_of::<Reverse<(u64, LeaseId, u32)>>()
    }
}

type Make = fn() -> Box<dyn LeaseQueue>;

fn structures() -> [(&'static str, Make); 3] {
    [
        ("wheel", || Box::new(Wheel::new())),
        ("heap", || Box::new(IndexedHeap::default())),
        ("binheap", || Box::new(LazyHeap::default())),
    ]
}

fn build(make: Make, work: &[(LeaseId, u64)]) -> Box<dyn LeaseQueue> {
    let mut queue = make();
    for (id, ttl) in work {
        queue.grant(*id, *ttl, 0);
    }
    queue
}

fn resident_bytes() -> Option<usize> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: usize = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

fn report_memory() {
    println!("memory per lease (bytes): computed from capacities | resident growth");
    for n in SIZES {
        let work = workload(n);
        for (name, make) in structures() {
            let before = resident_bytes();
            let queue = build(make, &work);
            let after = resident_bytes();
            let rss = match (before, after) {
                (Some(b), Some(a)) => format!("{:.1}", a.saturating_sub(b) as f64 / n as f64),
                _ => "n/a".to_string(),
            };
            let computed = queue.heap_bytes() as f64 / n as f64;
            println!("lease/memory/{name}/{n}: {computed:.1} | {rss}");
            drop(queue);
        }
    }
}

fn bench_grant(c: &mut Criterion) {
    let mut group = c.benchmark_group("lease/grant");
    group.sample_size(10);
    for n in SIZES {
        let work = workload(n);
        group.throughput(Throughput::Elements(n as u64));
        for (name, make) in structures() {
            group.bench_with_input(BenchmarkId::new(name, n), &work, |b, work| {
                b.iter_batched(
                    make,
                    |mut q| {
                        for (id, ttl) in work {
                            q.grant(*id, *ttl, 0);
                        }
                        q
                    },
                    BatchSize::PerIteration,
                );
            });
        }
    }
    group.finish();
}

fn bench_renew(c: &mut Criterion) {
    let mut group = c.benchmark_group("lease/renew");
    group.sample_size(20);
    group.throughput(Throughput::Elements(RENEW_BATCH as u64));
    let per_call: (&'static str, Make) = ("wheel-per-call", || Box::new(Wheel::per_call()));
    for n in SIZES {
        let work = workload(n);
        for (name, make) in structures().into_iter().chain([per_call]) {
            let mut queue = build(make, &work);
            let mut rng = Rng(7);
            let mut now_ms = 0u64;
            let mut batch = Vec::with_capacity(RENEW_BATCH);
            group.bench_function(BenchmarkId::new(name, n), |b| {
                b.iter(|| {
                    // Keep-alive traffic in simulated time: a batch every 10 ms, then the
                    // expiry check (the wheel re-files entries its lazy renews left behind).
                    now_ms += RENEW_BATCH_STEP_MS;
                    batch.clear();
                    batch
                        .extend((0..RENEW_BATCH).map(|_| work[(rng.next() % n as u64) as usize].0));
                    queue.renew_batch(&batch, now_ms);
                    queue.expire(now_ms)
                });
            });
        }
    }
    group.finish();
}

fn bench_expire(c: &mut Criterion) {
    let mut group = c.benchmark_group("lease/expire");
    group.sample_size(10);
    for n in SIZES {
        let work = workload(n);
        group.throughput(Throughput::Elements(n as u64));
        for (name, make) in structures() {
            group.bench_with_input(BenchmarkId::new(name, n), &work, |b, work| {
                b.iter_batched(
                    || build(make, work),
                    |mut q| {
                        let mut expired = 0;
                        let mut now_ms = 0;
                        while expired < work.len() {
                            now_ms += TICK_MS;
                            expired += q.expire(now_ms);
                        }
                        q
                    },
                    BatchSize::PerIteration,
                );
            });
        }
    }
    group.finish();
}

fn main() {
    report_memory();
    let mut criterion = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    bench_grant(&mut criterion);
    bench_renew(&mut criterion);
    bench_expire(&mut criterion);
    criterion.final_summary();
}
