//! keel's deterministic simulation tier: whole keel clusters (real `keel::Node`s over
//! [`keel::InMemoryNetwork`], each on keel-storage's in-memory engine) on openraft's simulation
//! runtime (`openraft-rt-sim`): one thread, virtual time, seeded randomness. keel is built
//! here with its `sim` feature, so every task, timer and timeout of the node goes through that
//! runtime (`keel::runtime`), and lease time comes from [`keel::RuntimeClock`].
//!
//! - `tests/battery.rs`: the in-process battery's harness (`crates/keel-sim/tests/sim`,
//!   included by path: the same fault schedules, clients and checkers as the real-time tier)
//!   for seeds 1..=200, and a check that a seed with faults replays bit for bit;
//! - `tests/planted.rs`: the battery catches each of keel's planted bugs;
//! - `tests/determinism.rs`: this file's small fault-free workload ([`run_seed`]): the same
//!   seed gives the same trace and outcome, different seeds differ, and the cluster elects,
//!   serves and survives the loss of its leader.
//!
//! The same seed gives the same run: the runtime's trace (every spawn, poll, wake, timer and
//! random draw) is equal between two runs of one seed. A failing seed replays with
//! `KEEL_SIM_DET_SEED=<seed> cargo test --manifest-path crates/keel-sim-det/Cargo.toml`.

use keel::{InMemoryNetwork, Node, NodeBuilder, NodeError, RuntimeClock, Timings};
use keel_storage::engine::MemEngine;
use keel_types::MemberId;
use openraft_rt::AsyncRuntime;
use openraft_rt_sim::SimRuntime;
use std::sync::Arc;
use std::time::Duration;

/// Timings of the simulated members (virtual time, so they cost nothing real).
pub const TIMINGS: Timings = Timings {
    heartbeat_interval: Duration::from_millis(50),
    election_timeout: Duration::from_millis(300),
    request_timeout: Duration::from_secs(2),
};

/// What one seed's run produced.
#[derive(Debug, PartialEq, Eq)]
pub struct Run {
    /// The workload's observations, one line each (leaders, revisions, values read).
    pub outcome: Vec<String>,
    /// The runtime's trace: every spawn, poll, wake, timer and random draw, in order.
    pub trace: Vec<String>,
}

/// A small seeded generator (SplitMix64) for the workload's choices.
#[derive(Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// The next number below `bound` (`bound` > 0).
    pub fn below(&mut self, bound: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) % bound.max(1)
    }
}

/// Start `size` members on fresh in-memory engines, registered on `net`.
///
/// # Errors
/// A member did not start.
pub async fn start_cluster(net: &InMemoryNetwork, size: u64) -> Result<Vec<Node>, NodeError> {
    let ids: Vec<MemberId> = (1..=size).map(MemberId::new).collect();
    let mut nodes = Vec::new();
    for id in &ids {
        let engine = Arc::new(MemEngine::new(&Node::column_families()));
        let node = NodeBuilder::new(*id)
            .name(format!("n{id}"))
            .peer_urls([format!("unix://n{id}")])
            .engine(engine)
            .network(net.endpoint(*id))
            .clock(Arc::new(RuntimeClock::new()))
            .timings(TIMINGS)
            .initial_members(ids.iter().map(|i| (*i, format!("n{i}"))))
            .start()
            .await?;
        net.register(*id, node.peer_handler());
        nodes.push(node);
    }
    Ok(nodes)
}

/// Poll every 10 ms (virtual) until some member reports a leader that is one of `among`.
///
/// # Errors
/// No leader within 30 s of virtual time.
pub async fn leader_of(nodes: &[Node], among: &[usize]) -> Result<usize, String> {
    for _ in 0..3_000 {
        for i in among {
            let status = nodes[*i].status().await.map_err(|e| e.to_string())?;
            if let Some(leader) = status.leader {
                if let Some(at) = among.iter().find(|j| nodes[**j].id() == leader) {
                    return Ok(*at);
                }
            }
        }
        <SimRuntime as AsyncRuntime>::sleep(Duration::from_millis(10)).await;
    }
    Err("no leader within 30 s of virtual time".into())
}

/// The workload of one seed on a 3-member cluster: elect, write through seeded members,
/// read linearizably everywhere, stop the leader, write and read again on the two left.
async fn workload(seed: u64) -> Result<Vec<String>, String> {
    let mut rng = Rng::new(seed);
    let mut outcome = Vec::new();
    let net = InMemoryNetwork::new();
    let nodes = start_cluster(&net, 3).await.map_err(|e| e.to_string())?;
    let all = [0usize, 1, 2];
    let leader = leader_of(&nodes, &all).await?;
    outcome.push(format!("leader n{}", nodes[leader].id()));
    for i in 0..20u64 {
        let via = rng.below(3) as usize;
        let key = format!("k{}", rng.below(5));
        let put = nodes[via]
            .put(key.clone(), format!("v{i}"))
            .await
            .map_err(|e| format!("put {key} via n{}: {e}", nodes[via].id()))?;
        outcome.push(format!(
            "put {key}=v{i} via n{} rev {}",
            nodes[via].id(),
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
    nodes[leader].shutdown().await;
    outcome.push(format!("stopped n{}", nodes[leader].id()));
    let left: Vec<usize> = all.iter().copied().filter(|i| *i != leader).collect();
    let next = leader_of(&nodes, &left).await?;
    outcome.push(format!("leader n{}", nodes[next].id()));
    let put = nodes[left[0]]
        .put("after", "stop")
        .await
        .map_err(|e| e.to_string())?;
    outcome.push(format!("put after=stop rev {}", put.header.revision));
    for i in &left {
        let got = nodes[*i].get("after").await.map_err(|e| e.to_string())?;
        outcome.push(format!(
            "n{} reads after = {:?}",
            nodes[*i].id(),
            got.body.map(|kv| kv.value)
        ));
    }
    for i in &left {
        nodes[*i].shutdown().await;
    }
    Ok(outcome)
}

/// Run one seed's workload on a fresh simulation runtime and return its outcome and trace.
///
/// # Errors
/// The workload failed (the message names the step).
pub fn run_seed(seed: u64) -> Result<Run, String> {
    let mut rt = SimRuntime::with_seed(seed);
    rt.record_trace(true);
    let outcome = rt.block_on(workload(seed))?;
    let trace = rt.take_trace();
    Ok(Run { outcome, trace })
}
