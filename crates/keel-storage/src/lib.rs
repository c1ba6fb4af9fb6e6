//! keel-storage: the only keel crate that links RocksDB.
//!
//! What it is: the storage engine seam ([`engine`]: RocksDB or in memory), the MVCC keyspace
//! with etcd's semantics ([`MvccStore`]), the generic durable log ([`DurableLog`]), the watch
//! hub ([`watch`]) and snapshot export/install ([`snapshot`]).
//!
//! What it is not: it knows nothing of Raft, lease expiry or membership. Other crates
//! register their own column families and write their records inside the caller's
//! [`engine::WriteBatch`] (see [`mvcc::WriteTxn::batch`]), so one applied entry is one
//! atomic batch.
//!
//! Limits: see [`limits`] (etcd's defaults: 1.5 MiB requests, 128 ops per txn level).

pub mod codec;
pub mod engine;
mod error;
pub mod limits;
mod log;
pub mod mvcc;
#[cfg(feature = "serde")]
pub mod nesting;
#[cfg(feature = "planted-bugs")]
pub mod planted;
pub mod schema;
pub mod snapshot;
pub mod snapshot_store;
pub mod watch;

pub use error::{Result, StorageError};
pub use limits::MvccLimits;
pub use log::{DurableLog, LogBounds, LOG_CF};
pub use mvcc::MvccStore;
