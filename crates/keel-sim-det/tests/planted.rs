//! Planted bugs on the deterministic runtime: each of keel's test-only bug switches
//! (`keel::planted`, feature `planted-bugs`, compiled in here and off unless this test turns
//! one on) is turned on in turn, and the battery runs seeds 1, 2, ... until one fails. Every
//! bug must be caught. The runs are deterministic, so the seed that catches each bug is the
//! same on every run of the same code; the test prints it.
//!
//! The switches are process-wide, which is why this test has its own binary (cargo runs test
//! binaries one after another).
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

#[path = "../../keel-sim/tests/sim/mod.rs"]
mod sim;

use openraft_rt::AsyncRuntime;
use openraft_rt_sim::SimRuntime;

#[test]
fn the_battery_catches_every_planted_bug() {
    let max: u64 = std::env::var("KEEL_SIM_PLANT_SEEDS").map_or(30, |n| n.parse().unwrap());
    // with no bug planted, the first seeds pass (else a catch below would prove nothing)
    for seed in 1..=3 {
        let outcome = SimRuntime::with_seed(seed).block_on(sim::run_seed(seed));
        assert!(
            outcome.is_ok(),
            "seed {seed} fails without a planted bug: {outcome:?}",
            outcome = outcome.err()
        );
    }
    let found = sim::hunt_planted_bugs(max, |seed| {
        SimRuntime::with_seed(seed).block_on(sim::run_seed(seed))
    });
    let missed = sim::report_planted(&found, max);
    assert!(
        missed.is_empty(),
        "planted bugs the battery missed: {missed:?}"
    );
}
