//! The in-process battery on real RocksDB directories: the same seeds, workload, faults and
//! checkers as `cluster_sim.rs` (the harness in `tests/sim`), with each member's data in a
//! RocksDB directory (`tests/rocks`) instead of an in-memory engine, on the tokio runtime
//! with real time (not bit-exact). Crashes here are process crashes (what reached RocksDB
//! survives), not power cuts; the in-memory tiers model power cuts.
//!
//! `KEEL_SIM_ROCKS_SEEDS=N` runs seeds 1..=N (default 3); `KEEL_SIM_ROCKS_SEED=S` runs seed
//! S alone.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

mod rocks;
mod sim;

use sim::{run_seed_on, Totals};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeded_fault_schedules_keep_every_promise_on_rocksdb() {
    let seeds: Vec<u64> = match std::env::var("KEEL_SIM_ROCKS_SEED") {
        Ok(one) => vec![one.parse().expect("KEEL_SIM_ROCKS_SEED is a number")],
        Err(_) => {
            let n =
                std::env::var("KEEL_SIM_ROCKS_SEEDS").map_or(3, |n| n.parse().expect("a number"));
            (1..=n).collect()
        }
    };
    let mut totals = Totals::default();
    for seed in seeds {
        match run_seed_on(seed, rocks::rocksdb()).await {
            Ok(report) => {
                println!("seed {seed}: {report}");
                totals.add(&report);
            }
            Err(failure) => panic!(
                "seed {seed} failed on RocksDB: {failure}\nreplay (same schedule, not the same \
                 timing): KEEL_SIM_ROCKS_SEED={seed} cargo test -p keel-sim --test \
                 cluster_sim_rocksdb -- --nocapture"
            ),
        }
    }
    println!("{totals}");
}
