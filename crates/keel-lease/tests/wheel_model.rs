//! The expiry wheel against a naive sorted deadline queue: on random insert / reschedule /
//! cancel / remove / advance sequences both report exactly the same expiry sets, never before
//! the deadline, and bounded batches leave the rest due.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use keel_lease::wheel_reference::{compare_with_naive, WheelOp as Op};
use proptest::prelude::*;

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

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    compare_with_naive(&ops).map_err(TestCaseError::fail)
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
