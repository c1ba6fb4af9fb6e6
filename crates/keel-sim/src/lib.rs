//! keel's reliability battery (issue 7), first part: client histories and a linearizability
//! checker for KV operations against an etcd-like model.
//!
//! A history records every operation a client invoked, with its invocation time and, when
//! the client got an answer, its completion time and result. An operation that timed out is
//! "maybe applied": it has no completion ([`Op::ret`] is `None`), may have taken effect at any
//! point after its invocation or never, and constrains nothing by its result.
//!
//! [`check`] decides whether the history is linearizable: whether every operation can be
//! given a single point between its invocation and its completion such that, in that order,
//! each operation's result is what the model ([`KvModel`]) gives. It partitions the history
//! by key (operations on different keys are independent in this model) and searches each
//! part with Wing and Gong's algorithm, as refined by Lowe, with a cache of visited
//! (linearized set, state) pairs — the approach of the porcupine checker.
//!
//! [`check_watch`] and [`check_acknowledged`] check etcd's watch guarantees (ordered,
//! unique, atomic, reliable, resumable, consistent with the writes) over what a watcher
//! received; [`check_lease`] checks a lease's safety (no expiry before its TTL after the
//! last acknowledged renew, none of its keys readable after an acknowledged revoke).
//!
//! The whole-cluster battery that feeds these checkers runs in `tests/cluster_sim.rs`:
//! seeded fault schedules over in-process nodes (in-memory engines, the in-memory network,
//! the tokio runtime — not bit-exact). The same harness runs bit-exact on openraft's
//! simulation runtime in `crates/keel-sim-det`.

mod lease;
mod linearizability;
mod watch;

pub use lease::{check_lease, expiry_deadline, Call, KeyRead, LeaseHistory, LeaseViolation};
pub use linearizability::{
    check, check_with_budget, settle_unanswered_writes, Input, KvModel, Op, Output, Verdict,
    SEARCH_BUDGET_DEFAULT,
};
pub use watch::{check_acknowledged, check_watch, WatchEvent, WatchViolation};
