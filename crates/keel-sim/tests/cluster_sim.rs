//! The in-process tier of the reliability battery: seeded fault schedules over a 3- or
//! 5-member cluster of in-process nodes on in-memory engines (a crash keeps exactly the
//! synced writes) and the in-memory network (partitions, one-way cuts, isolation, delays
//! that reorder messages), on the tokio runtime with real time. The seed decides the cluster
//! size, the workload mix and the fault schedule; the timing is real, so a run is not
//! bit-exact. The same harness (`tests/sim`) runs bit-exact in `crates/keel-sim-det`, on
//! openraft's simulation runtime in virtual time.
//!
//! Each seed: clients run puts, linearizable gets, deletes and compare-and-swap txns on a few
//! keys through random members; a watcher follows every change (resuming on another member
//! when its member crashes); a lease client keeps a lease alive with a key attached. Faults
//! come in phases, each healed before the next. After the last: a leader within a bound, the
//! same event log and HashKV on every member, linearizability, watch guarantees, every
//! acknowledged write in the log, lease safety, and the lease's end (revoke or expiry).
//!
//! `KEEL_SIM_SEEDS=N` runs seeds 1..=N (default 10); `KEEL_SIM_SEED=S` runs seed S alone.
//! A failure names its seed and the command that replays it.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

mod sim;

use sim::{run_seed, Totals};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeded_fault_schedules_keep_every_promise() {
    let seeds: Vec<u64> = match std::env::var("KEEL_SIM_SEED") {
        Ok(one) => vec![one.parse().expect("KEEL_SIM_SEED is a number")],
        Err(_) => {
            let n = std::env::var("KEEL_SIM_SEEDS").map_or(10, |n| n.parse().expect("a number"));
            (1..=n).collect()
        }
    };
    let mut totals = Totals::default();
    for seed in seeds {
        match run_seed(seed).await {
            Ok(report) => {
                println!("seed {seed}: {report}");
                totals.add(&report);
            }
            Err(failure) => panic!(
                "seed {seed} failed: {failure}\nreplay: KEEL_SIM_SEED={seed} cargo test -p \
                 keel-sim --test cluster_sim -- --nocapture"
            ),
        }
    }
    println!("{totals}");
}
