//! The expiry wheel against a naive sorted deadline queue: on random insert / reschedule /
//! cancel / remove / advance sequences both report exactly the same expiry sets, never before
//! the deadline, and bounded batches leave the rest due.

#![expect(
    clippy::expect_used,
    reason = "test code: a failed expect is a failed test"
)]

use keel_lease::wheel::{Handle, Wheel};
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};

#[derive(Clone, Debug)]
enum Op {
    Insert { delay: u64 },
    Reschedule { which: usize, delay: u64 },
    Cancel { which: usize },
    Remove { which: usize },
    Advance { by: u64, max: usize },
}

/// Deadlines and steps at every scale, so entries land on every level and cascade.
fn delay() -> impl Strategy<Value = u64> {
    prop_oneof![
        4 => 0u64..70,
        3 => 0u64..5_000,
        2 => 0u64..300_000,
        1 => 0u64..(1 << 36),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => delay().prop_map(|delay| Op::Insert { delay }),
        2 => (any::<usize>(), delay()).prop_map(|(which, delay)| Op::Reschedule { which, delay }),
        1 => any::<usize>().prop_map(|which| Op::Cancel { which }),
        1 => any::<usize>().prop_map(|which| Op::Remove { which }),
        3 => (delay(), 1usize..8).prop_map(|(by, max)| Op::Advance { by, max }),
    ]
}

/// The reference: a sorted set of (deadline, key).
#[derive(Default)]
struct Naive {
    queue: BTreeSet<(u64, u32)>,
    deadline: BTreeMap<u32, u64>,
}

impl Naive {
    fn schedule(&mut self, key: u32, at: u64) {
        self.cancel(key);
        self.queue.insert((at, key));
        self.deadline.insert(key, at);
    }
    fn cancel(&mut self, key: u32) {
        if let Some(at) = self.deadline.remove(&key) {
            self.queue.remove(&(at, key));
        }
    }
    fn due(&self, now: u64) -> BTreeSet<u32> {
        self.queue
            .range(..=(now, u32::MAX))
            .map(|(_, key)| *key)
            .collect()
    }
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let mut wheel: Wheel<u32> = Wheel::new();
    let mut naive = Naive::default();
    let mut live: Vec<(u32, Handle)> = Vec::new();
    let mut now = 0u64;
    let mut next_key = 0u32;
    for op in ops {
        match op {
            Op::Insert { delay } => {
                let handle = wheel.insert(next_key).expect("room");
                wheel.schedule(handle, now + delay);
                naive.schedule(next_key, now + delay);
                live.push((next_key, handle));
                next_key += 1;
            }
            Op::Reschedule { which, delay } if !live.is_empty() => {
                let (key, handle) = live[which % live.len()];
                prop_assert!(wheel.schedule(handle, now + delay));
                naive.schedule(key, now + delay);
            }
            Op::Cancel { which } if !live.is_empty() => {
                let (key, handle) = live[which % live.len()];
                prop_assert!(wheel.unschedule(handle));
                naive.cancel(key);
            }
            Op::Remove { which } if !live.is_empty() => {
                let (key, handle) = live.swap_remove(which % live.len());
                prop_assert_eq!(wheel.remove(handle), Some(key));
                naive.cancel(key);
            }
            Op::Advance { by, max } => {
                now += by;
                let expected = naive.due(now);
                let mut got = BTreeSet::new();
                loop {
                    let mut out = Vec::new();
                    let n = wheel.advance(now, max, &mut out);
                    prop_assert_eq!(n, out.len());
                    prop_assert!(n <= max, "batch bounded");
                    for handle in &out {
                        let key = *wheel.get(*handle).expect("popped entries stay allocated");
                        prop_assert!(naive.deadline[&key] <= now, "never early");
                        prop_assert!(wheel.deadline(*handle).is_none(), "popped = unscheduled");
                        prop_assert!(got.insert(key), "reported once");
                        naive.cancel(key);
                    }
                    if n < max {
                        break;
                    }
                }
                prop_assert_eq!(&got, &expected, "same expiry set at {}", now);
            }
            _ => {}
        }
        wheel.check_invariants();
        prop_assert_eq!(wheel.scheduled_len(), naive.queue.len());
        prop_assert_eq!(wheel.len(), live.len());
    }
    // Drain everything at the end of time: both agree on what is left.
    let expected = naive.due(u64::MAX);
    let mut out = Vec::new();
    wheel.advance(u64::MAX, usize::MAX, &mut out);
    let got: BTreeSet<u32> = out.iter().map(|h| *wheel.get(*h).expect("live")).collect();
    prop_assert_eq!(got, expected);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 512,
        rng_seed: proptest::test_runner::RngSeed::Fixed(0x6b65_656c),
        ..ProptestConfig::default()
    })]
    #[test]
    fn wheel_matches_a_sorted_deadline_queue(ops in proptest::collection::vec(op(), 1..300)) {
        run(ops)?;
    }
}

#[test]
fn wheel_matches_on_a_long_dense_sequence() {
    // A deterministic long run (LCG-driven) with thousands of entries across all levels.
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        state >> 33
    };
    let ops: Vec<Op> = (0..20_000)
        .map(|_| match next() % 10 {
            0..=4 => Op::Insert {
                delay: next() % (1 << (next() % 30)),
            },
            5 | 6 => Op::Reschedule {
                which: next() as usize,
                delay: next() % 100_000,
            },
            7 => Op::Cancel {
                which: next() as usize,
            },
            8 => Op::Remove {
                which: next() as usize,
            },
            _ => Op::Advance {
                by: next() % 2_000,
                max: 1 + (next() % 64) as usize,
            },
        })
        .collect();
    run(ops).unwrap();
}
