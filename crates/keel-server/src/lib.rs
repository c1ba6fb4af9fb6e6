//! keel-server: keel as a drop-in etcd. It serves etcd's v3 gRPC API (KV, Watch, Lease,
//! Cluster, Maintenance) on top of a [`keel::Node`], carries node-to-node traffic over gRPC
//! ([`peer::GrpcNetwork`], keel's [`keel::Network`] trait), and builds the `keel` binary that
//! takes etcd's command-line flags.
//!
//! What it is not: a client library (use the `etcd-client` crate or etcdctl against it).
//! This is the only crate that knows protobuf: conversions live in `convert`, and the one
//! table that turns keel errors into gRPC status codes with etcd's messages is `status`.
//!
//! Features: `rocksdb` (default) is the on-disk engine, which the `keel` binary needs;
//! without it the library builds without RocksDB's C++ and a node needs an engine given to
//! its builder (the fuzz targets build it so). `fuzzing` exposes the wire-conversion checks
//! of the `grpc_request` fuzz target (`keel_server::fuzzing`, not part of the API).
#![warn(missing_docs)]

/// Generated protobuf messages and tonic services (etcd's v3 API and keel's peer protocol).
#[allow(missing_docs, clippy::all, clippy::pedantic, reason = "generated code")]
pub mod pb {
    /// keel's member-to-member protocol.
    pub mod keelpeer {
        tonic::include_proto!("keelpeer");
    }
    /// etcd's MVCC wire types (key-values and watch events).
    pub mod mvccpb {
        tonic::include_proto!("mvccpb");
    }
    /// etcd's auth wire types (referenced by the v3 API; auth is not served yet).
    pub mod authpb {
        tonic::include_proto!("authpb");
    }
    /// etcd's v3 gRPC API: messages, clients and services.
    pub mod etcdserverpb {
        tonic::include_proto!("etcdserverpb");
    }
}

/// The etcd API version keel speaks (one literal for [`api::ETCD_VERSION`] and [`VERSION`]).
macro_rules! etcd_api_version {
    () => {
        "3.5.0"
    };
}

/// keel's version and the etcd API version it speaks, as `keel --version` prints them.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (etcd API ",
    etcd_api_version!(),
    ")"
);

pub mod api;
mod convert;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
pub mod status;

pub mod compactor;
pub mod config;
pub mod config_file;
pub mod discovery;
pub mod http;
pub mod peer;
pub mod server;
pub mod snapshot_cli;
pub mod snapshot_file;
pub mod tls;
