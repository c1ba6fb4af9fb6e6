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
//! - `tests/determinism.rs`: a small fault-free workload on the same harness: the same seed
//!   gives the same trace and outcome, different seeds differ, and the cluster elects, serves
//!   and survives the loss of its leader.
//!
//! The library itself is empty: everything lives in the tests and the shared harness.
//!
//! The same seed gives the same run: the runtime's trace (every spawn, poll, wake, timer and
//! random draw) is equal between two runs of one seed. A failing seed replays with
//! `KEEL_SIM_DET_SEED=<seed> cargo test --manifest-path crates/keel-sim-det/Cargo.toml`.
