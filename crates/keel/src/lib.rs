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
//! What it is not (yet): leases (a put naming a lease is refused with
//! [`NodeError::LeaseNotFound`]), runtime membership changes (the first configuration is
//! fixed), leader transfer, backups and back-pressure are not wired in this phase; there is no
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

mod builder;
mod codec;
mod error;
pub mod limits;
mod node;
mod raft;
mod request;
mod response;
mod watch;

pub use builder::{NodeBuilder, SnapshotPolicy, Timings};
pub use error::NodeError;
pub use node::Node;
pub use raft::{InMemoryNetwork, Network, PeerHandler, PeerMessage, PeerReply, SendFuture};
pub use request::Request;
pub use response::{MemberStatus, ReadConsistency, Response, ResponseHeader, Status};
pub use watch::WatchStream;
