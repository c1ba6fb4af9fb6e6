//! keel: etcd as a Rust library — a replicated, linearizable MVCC key-value store that a
//! service links and runs in-process.
//!
//! What it is: the [`Node`] (started with a [`NodeBuilder`]): openraft consensus wired onto
//! keel-storage (the durable log, the MVCC keyspace, chunked snapshots), etcd's KV API
//! (`put`, `range`/`get`, `delete`, `txn`, `compact`) with linearizable reads by default on any
//! member, follower-to-leader forwarding of writes, watches as async streams
//! ([`WatchStream`]), and a small pluggable [`Network`] trait with an in-process
//! implementation ([`InMemoryNetwork`]) that can partition, isolate, block and delay links.
//!
//! Runtime membership follows etcd's two-step reconfiguration: [`Node::member_add`] adds a
//! learner, the new member starts with [`NodeBuilder::join_existing`] and catches up,
//! [`Node::member_promote`] makes it a voter once in sync; [`Node::member_remove`] and
//! [`Node::member_update`] complete the set, all checked by keel-membership's rules and
//! carried out with openraft's joint consensus.
//!
//! Leases follow keel-lease's protocol: [`Node::lease_grant`], [`Node::lease_revoke`] (the
//! keys go in the revoke's revision), [`Node::lease_keep_alive`] (replicated renews,
//! concurrent ones batched per entry), [`Node::lease_time_to_live`], [`Node::leases`]; puts
//! attach keys to a lease ([`NodeError::LeaseNotFound`] for an unknown one). The leader's
//! lease driver reads time from the injected [`Clock`] ([`NodeBuilder::clock`]) and proposes
//! batched expiries and remaining-TTL checkpoints through Raft.
//!
//! Membership calls may be made on any member: followers forward them to the leader.
//!
//! Back-pressure: a write is refused with [`NodeError::TooManyRequests`] while more than
//! [`limits::APPLY_BACKLOG_ENTRIES_MAX`] committed entries wait to be applied. There is no
//! gRPC here (that is keel-server).
//!
//! Limits: see [`limits`] (etcd's 1.5 MiB request limit, request deadline defaults).
//!
//! Every openraft type lives in the private `raft` module, so an openraft upgrade touches one
//! folder.
//!
//! # Examples
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let node = keel::NodeBuilder::new(keel_types::MemberId::new(1)).start().await?;
//! node.put(&b"greeting"[..], &b"hello"[..]).await?;
//! let got = node.get(&b"greeting"[..]).await?;
//! assert_eq!(got.body.unwrap().value.as_ref(), b"hello");
//! node.shutdown().await;
//! # Ok::<(), keel::NodeError>(())
//! # }).unwrap();
//! ```
#![warn(missing_docs)]

pub mod auth;
mod builder;
mod codec;
mod error;
mod lease;
pub mod limits;
pub mod metrics;
/// The async runtime the node runs on: tokio by default, openraft's deterministic simulation
/// runtime with the `sim` feature. Code that must run wherever the node runs (test harnesses,
/// simulations) spawns, sleeps and times out through these instead of through tokio.
pub mod runtime {
    pub use crate::raft::rt::{sleep, spawn, timeout, RuntimeClock, Task, TaskFailed};
}
mod node;
#[cfg(feature = "planted-bugs")]
pub mod planted;
mod raft;
mod request;
mod response;
mod watch;

pub use auth::{AuthRequest, Caller, JwtConfig};
pub use builder::{AuthConfig, NodeBuilder, SnapshotPolicy, Timings};
pub use error::NodeError;
pub use keel_auth::{AuthError, Permission, PermissionKind, Role, User};
pub use keel_lease::{LessorConfig, TimeToLive};
pub use keel_storage::mvcc::HashKv;
pub use keel_types::{Clock, ManualClock, SystemClock};
pub use lease::{LeaseCheckpoint, LeaseExpired, LeaseRequest};
pub use metrics::Metrics;
pub use node::AuthStatus;
pub use node::Node;
pub use node::{
    snapshot_summary, Alarm, LeaseGrant, LeaseKeepAlive, SnapshotExport, SnapshotSummary,
};
pub use raft::{
    cluster_members, InMemoryNetwork, Network, PeerHandler, PeerMessage, PeerReply, RuntimeClock,
    SendFuture,
};
pub use request::Request;
pub use response::{MemberChange, MemberStatus, ReadConsistency, Response, ResponseHeader, Status};
pub use watch::WatchStream;
