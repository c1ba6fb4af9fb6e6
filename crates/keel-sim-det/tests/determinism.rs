//! The deterministic tier's first promises: a seed's run is the same run every time, bit for
//! bit (the runtime's full trace), and the node works on the simulation runtime.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

#[path = "../../keel-sim/tests/sim/mod.rs"]
mod sim;

use keel::runtime;
use keel_types::MemberId;
use openraft_rt::AsyncRuntime;
use openraft_rt_sim::SimRuntime;
use sim::cluster::{in_memory, Cluster, Rng};
use std::time::Duration;

/// What one seed's run produced.
struct Run {
    /// The workload's observations, one line each (leaders, revisions, values read).
    outcome: Vec<String>,
    /// The runtime's trace: every spawn, poll, wake, timer and random draw, in order.
    trace: Vec<String>,
}

/// Poll every 10 ms (virtual) until a member reports a leader that is one of `among`.
async fn leader_among(cluster: &Cluster, among: &[MemberId]) -> Result<MemberId, String> {
    for _ in 0..3_000 {
        if let Some(leader) = cluster.leader().await {
            if among.contains(&leader) {
                return Ok(leader);
            }
        }
        runtime::sleep(Duration::from_millis(10)).await;
    }
    Err("no leader within 30 s of virtual time".into())
}

/// The workload of one seed on a 3-member cluster: elect, write through seeded members,
/// read linearizably everywhere, stop the leader, write and read again on the two left.
async fn workload(seed: u64) -> Result<Vec<String>, String> {
    let mut rng = Rng::new(seed);
    let mut outcome = Vec::new();
    let cluster = Cluster::start(3, in_memory()).await?;
    let nodes = cluster.live();
    let ids: Vec<MemberId> = nodes.iter().map(|n| n.id()).collect();
    let leader = leader_among(&cluster, &ids).await?;
    outcome.push(format!("leader n{leader}"));
    for i in 0..20u64 {
        let via = &nodes[rng.index(nodes.len())];
        let key = format!("k{}", rng.below(5));
        let put = via
            .put(key.clone(), format!("v{i}"))
            .await
            .map_err(|e| format!("put {key} via n{}: {e}", via.id()))?;
        outcome.push(format!(
            "put {key}=v{i} via n{} rev {}",
            via.id(),
            put.header.revision
        ));
    }
    for node in &nodes {
        let got = node.get("k0").await.map_err(|e| e.to_string())?;
        outcome.push(format!(
            "n{} reads k0 = {:?} at rev {}",
            node.id(),
            got.body.map(|kv| kv.value),
            got.header.revision
        ));
    }
    let (stopped, left): (Vec<_>, Vec<_>) = nodes.iter().partition(|n| n.id() == leader);
    for node in stopped {
        node.shutdown().await;
    }
    outcome.push(format!("stopped n{leader}"));
    let left_ids: Vec<MemberId> = left.iter().map(|n| n.id()).collect();
    let next = leader_among(&cluster, &left_ids).await?;
    outcome.push(format!("leader n{next}"));
    let put = left[0]
        .put("after", "stop")
        .await
        .map_err(|e| e.to_string())?;
    outcome.push(format!("put after=stop rev {}", put.header.revision));
    for node in &left {
        let got = node.get("after").await.map_err(|e| e.to_string())?;
        outcome.push(format!(
            "n{} reads after = {:?}",
            node.id(),
            got.body.map(|kv| kv.value)
        ));
    }
    cluster.shutdown().await;
    Ok(outcome)
}

/// Run one seed's workload on a fresh simulation runtime; its outcome and trace.
fn run_seed(seed: u64) -> Result<Run, String> {
    let mut rt = SimRuntime::with_seed(seed);
    rt.record_trace(true);
    let outcome = rt.block_on(workload(seed))?;
    let trace = rt.take_trace();
    Ok(Run { outcome, trace })
}

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
