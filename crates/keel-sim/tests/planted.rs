//! Planted bugs: each of keel's test-only bug switches (`keel::planted`, feature
//! `planted-bugs`) is turned on in turn and the in-process battery runs seeds 1, 2, ...
//! until one fails; the report says after how many seeds each bug was caught.
//!
//! A soak, not a CI test (minutes): `cargo test -p keel-sim --test planted -- --ignored
//! --nocapture`; `KEEL_SIM_PLANT_SEEDS=N` bounds the seeds per bug (default 20).
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

mod sim;

#[test]
#[ignore = "a soak of several minutes; run by hand (see docs/reliability.md)"]
fn the_battery_catches_every_planted_bug() {
    let max: u64 = std::env::var("KEEL_SIM_PLANT_SEEDS").map_or(20, |n| n.parse().unwrap());
    let found = sim::hunt_planted_bugs(max, |seed| {
        // a fresh runtime per seed, as `#[tokio::test(flavor = "multi_thread")]` gives one
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime");
        runtime.block_on(sim::run_seed(seed))
    });
    let missed = sim::report_planted(&found, max);
    assert!(
        missed.is_empty(),
        "planted bugs the battery missed: {missed:?}"
    );
}
