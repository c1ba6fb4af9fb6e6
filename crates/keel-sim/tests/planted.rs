//! Planted bugs: each of keel's test-only bug switches (`keel::planted`, feature
//! `planted-bugs`) is turned on in turn and the in-process battery runs seeds 1, 2, ...
//! until one fails; the report says after how many seeds each bug was caught.
//!
//! A soak, not a CI test (minutes): `cargo test -p keel-sim --test planted -- --ignored
//! --nocapture`; `KEEL_SIM_PLANT_SEEDS=N` bounds the seeds per bug (default 20).
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

mod sim;

use std::sync::atomic::Ordering;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a soak of several minutes; run by hand (see docs/reliability.md)"]
async fn the_battery_catches_every_planted_bug() {
    let max: u64 = std::env::var("KEEL_SIM_PLANT_SEEDS").map_or(20, |n| n.parse().unwrap());
    let mut missed = Vec::new();
    for (name, switch) in keel::planted::all() {
        switch.store(true, Ordering::Relaxed);
        let mut caught = None;
        for seed in 1..=max {
            if let Err(failure) = sim::run_seed(seed).await {
                caught = Some((seed, failure.lines().next().unwrap_or("").to_string()));
                break;
            }
        }
        switch.store(false, Ordering::Relaxed);
        match caught {
            Some((seed, what)) => println!("{name}: caught at seed {seed} of {max}: {what}"),
            None => {
                println!("{name}: not caught in {max} seeds");
                missed.push(name);
            }
        }
    }
    assert!(
        missed.is_empty(),
        "planted bugs the battery missed: {missed:?}"
    );
}
