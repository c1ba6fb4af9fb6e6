//! The deterministic tier's first promises: a seed's run is the same run every time, bit for
//! bit (the runtime's full trace), and the node works on the simulation runtime.

use keel_sim_det::run_seed;

/// Seeds checked by default; `KEEL_SIM_DET_SEED=<n>` runs that one seed only.
fn seeds() -> Vec<u64> {
    match std::env::var("KEEL_SIM_DET_SEED") {
        Ok(seed) => vec![seed.parse().expect("KEEL_SIM_DET_SEED is a u64")],
        Err(_) => (1..=20).collect(),
    }
}

#[test]
fn the_same_seed_replays_the_same_run_bit_for_bit() {
    for seed in seeds().into_iter().take(3) {
        let first = run_seed(seed).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        let second = run_seed(seed).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        assert!(
            first.trace.len() > 1_000,
            "seed {seed}: the trace records the run ({} events)",
            first.trace.len()
        );
        assert_eq!(first.outcome, second.outcome, "seed {seed}: outcome");
        if let Some(at) = (0..first.trace.len().min(second.trace.len()))
            .find(|i| first.trace[*i] != second.trace[*i])
        {
            panic!(
                "seed {seed}: traces diverge at event {at}:\n  first:  {}\n  second: {}\n\
                 replay: KEEL_SIM_DET_SEED={seed} cargo test --manifest-path \
                 crates/keel-sim-det/Cargo.toml",
                first.trace[at], second.trace[at]
            );
        }
        assert_eq!(
            first.trace.len(),
            second.trace.len(),
            "seed {seed}: trace length"
        );
    }
}

#[test]
fn different_seeds_take_different_paths() {
    let a = run_seed(1).expect("seed 1");
    let b = run_seed(2).expect("seed 2");
    assert_ne!(a.trace, b.trace, "the seed drives the runtime's randomness");
}

#[test]
fn every_seed_elects_writes_reads_and_survives_its_leader() {
    for seed in seeds() {
        let run = run_seed(seed).unwrap_or_else(|e| {
            panic!("seed {seed}: {e}\nreplay: KEEL_SIM_DET_SEED={seed} cargo test --manifest-path crates/keel-sim-det/Cargo.toml")
        });
        let lines = &run.outcome;
        // 20 puts, each at the next revision (a new store is at revision 1)
        let revs: Vec<&String> = lines.iter().filter(|l| l.starts_with("put k")).collect();
        assert_eq!(revs.len(), 20, "seed {seed}: {lines:#?}");
        for (i, line) in revs.iter().enumerate() {
            assert!(
                line.ends_with(&format!("rev {}", i + 2)),
                "seed {seed}: {line}"
            );
        }
        // every member reads the last value written to k0, at the last revision
        let last_k0 = revs
            .iter()
            .rev()
            .find(|l| l.starts_with("put k0="))
            .map(|l| {
                l["put k0=".len()..]
                    .split(' ')
                    .next()
                    .unwrap_or("")
                    .to_string()
            });
        let reads: Vec<&String> = lines.iter().filter(|l| l.contains("reads k0")).collect();
        assert_eq!(reads.len(), 3, "seed {seed}");
        for read in reads {
            let want = match &last_k0 {
                Some(v) => format!("Some(b\"{v}\") at rev 21"),
                None => "None at rev 21".to_string(),
            };
            assert!(read.ends_with(&want), "seed {seed}: {read}, want {want}");
        }
        // after the leader stops, the two left elect one of themselves and serve
        let stopped = lines
            .iter()
            .position(|l| l.starts_with("stopped"))
            .expect("stop");
        assert!(lines[stopped + 1].starts_with("leader"), "seed {seed}");
        assert_ne!(lines[stopped + 1], lines[0], "seed {seed}: a new leader");
        assert_eq!(lines[stopped + 2], "put after=stop rev 22", "seed {seed}");
        let after: Vec<&String> = lines.iter().filter(|l| l.contains("reads after")).collect();
        assert_eq!(after.len(), 2, "seed {seed}");
        for read in after {
            assert!(read.ends_with("Some(b\"stop\")"), "seed {seed}: {read}");
        }
    }
}
