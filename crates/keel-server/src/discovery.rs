//! etcd v3-style discovery for `--discovery-endpoints` / `--discovery-token`: keel-membership's
//! [`keel_membership::Discovery`] protocol, run against any etcd-compatible cluster (another
//! keel cluster or etcd) through the v3 gRPC API.
//!
//! The operator creates the token with its expected size first, exactly as for etcd:
//! `etcdctl --endpoints <discovery> put /_etcd/registry/<token>/_config/size 3`.

use crate::pb::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use crate::pb::etcdserverpb::kv_client::KvClient;
use crate::pb::etcdserverpb::lease_client::LeaseClient;
use crate::pb::etcdserverpb::request_op::Request as Op;
use crate::pb::etcdserverpb::{
    Compare, LeaseGrantRequest, LeaseKeepAliveRequest, PutRequest, RangeRequest, RequestOp,
    TxnRequest,
};
use keel_membership::{
    Discovery, DiscoveryEntry, DiscoveryKv, DiscoveryStatus, InitialCluster, MembershipError,
};
use keel_types::{LeaseId, Revision};
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};

/// How long a member waits for the other members to register.
pub const DISCOVERY_WAIT_MAX: Duration = Duration::from_secs(300);
/// TTL of a member's registration lease (kept alive while waiting).
const REGISTRATION_TTL: Duration = Duration::from_secs(60);
/// Pause between polls of the registrations.
const POLL_INTERVAL: Duration = Duration::from_millis(200);

fn kv_error(e: impl std::fmt::Display) -> MembershipError {
    MembershipError::DiscoveryKv {
        detail: e.to_string(),
    }
}

/// [`DiscoveryKv`] over the etcd v3 gRPC API of the discovery cluster. Async calls are
/// bridged with `block_on` on a caller-supplied runtime handle: use it from a blocking thread.
pub struct GrpcDiscoveryKv {
    runtime: tokio::runtime::Handle,
    kv: KvClient<Channel>,
    lease: LeaseClient<Channel>,
}

impl std::fmt::Debug for GrpcDiscoveryKv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcDiscoveryKv").finish_non_exhaustive()
    }
}

impl GrpcDiscoveryKv {
    /// Clients of the discovery cluster at `endpoints` (comma-separated `host:port` or URLs).
    ///
    /// # Errors
    /// [`MembershipError::DiscoveryKv`] for an invalid endpoint list.
    pub fn new(runtime: tokio::runtime::Handle, endpoints: &str) -> Result<Self, MembershipError> {
        let mut list = Vec::new();
        for e in endpoints
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
        {
            let url = if e.contains("://") {
                e.to_owned()
            } else {
                format!("http://{e}")
            };
            let endpoint = Endpoint::from_shared(url)
                .map_err(kv_error)?
                .connect_timeout(Duration::from_secs(2));
            list.push(endpoint);
        }
        if list.is_empty() {
            return Err(kv_error("--discovery-endpoints is empty"));
        }
        let channel = {
            let _guard = runtime.enter();
            Channel::balance_list(list.into_iter())
        };
        Ok(GrpcDiscoveryKv {
            runtime,
            kv: KvClient::new(channel.clone()),
            lease: LeaseClient::new(channel),
        })
    }

    fn entry(kv: crate::pb::mvccpb::KeyValue) -> DiscoveryEntry {
        DiscoveryEntry {
            key: kv.key.to_vec(),
            value: kv.value.to_vec(),
            create_revision: Revision::new(u64::try_from(kv.create_revision).unwrap_or(0)),
        }
    }

    /// Renew `lease` once.
    ///
    /// # Errors
    /// [`MembershipError::DiscoveryKv`].
    pub fn keep_alive(&self, lease: LeaseId) -> Result<(), MembershipError> {
        let mut client = self.lease.clone();
        self.runtime.block_on(async move {
            let req = LeaseKeepAliveRequest { id: lease.get() };
            let mut stream = client
                .lease_keep_alive(tokio_stream::iter([req]))
                .await
                .map_err(kv_error)?
                .into_inner();
            stream.message().await.map_err(kv_error)?;
            Ok(())
        })
    }
}

impl DiscoveryKv for GrpcDiscoveryKv {
    fn get(&self, key: &[u8]) -> keel_membership::Result<Option<DiscoveryEntry>> {
        let mut client = self.kv.clone();
        let req = RangeRequest {
            key: key.to_vec().into(),
            ..RangeRequest::default()
        };
        self.runtime.block_on(async move {
            let resp = client.range(req).await.map_err(kv_error)?.into_inner();
            Ok(resp.kvs.into_iter().next().map(Self::entry))
        })
    }

    fn range_prefix(
        &self,
        prefix: &[u8],
        limit: usize,
    ) -> keel_membership::Result<Vec<DiscoveryEntry>> {
        let mut client = self.kv.clone();
        let range = keel_types::KeyRange::prefix(prefix.to_vec());
        let req = RangeRequest {
            key: prefix.to_vec().into(),
            range_end: range.end().unwrap_or_else(|| vec![0]).into(),
            limit: i64::try_from(limit).unwrap_or(i64::MAX),
            ..RangeRequest::default()
        };
        self.runtime.block_on(async move {
            let resp = client.range(req).await.map_err(kv_error)?.into_inner();
            Ok(resp.kvs.into_iter().map(Self::entry).collect())
        })
    }

    fn grant_lease(&self, ttl: Duration) -> keel_membership::Result<LeaseId> {
        let mut client = self.lease.clone();
        let req = LeaseGrantRequest {
            ttl: i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX),
            id: 0,
        };
        self.runtime.block_on(async move {
            let resp = client
                .lease_grant(req)
                .await
                .map_err(kv_error)?
                .into_inner();
            LeaseId::new(resp.id).ok_or_else(|| kv_error("the discovery cluster granted lease 0"))
        })
    }

    fn create_if_absent(
        &self,
        key: &[u8],
        value: &[u8],
        lease: Option<LeaseId>,
    ) -> keel_membership::Result<bool> {
        let mut client = self.kv.clone();
        let put = PutRequest {
            key: key.to_vec().into(),
            value: value.to_vec().into(),
            lease: LeaseId::option_to_etcd(lease),
            ..PutRequest::default()
        };
        let req = TxnRequest {
            compare: vec![Compare {
                result: CompareResult::Equal as i32,
                target: CompareTarget::Create as i32,
                key: key.to_vec().into(),
                target_union: Some(TargetUnion::CreateRevision(0)),
                ..Compare::default()
            }],
            success: vec![RequestOp {
                request: Some(Op::RequestPut(put)),
            }],
            failure: Vec::new(),
        };
        self.runtime.block_on(async move {
            let resp = client.txn(req).await.map_err(kv_error)?.into_inner();
            Ok(resp.succeeded)
        })
    }
}

/// Register this member under `token` and wait until the expected number of members did;
/// returns the `--initial-cluster` they form. Blocking: call from a blocking thread.
///
/// # Errors
/// The discovery errors with etcd's texts ("discovery: cluster is full", size key missing,
/// ...), a store failure, or [`MembershipError::DiscoveryKv`] when the wait times out.
pub fn discover(
    kv: &GrpcDiscoveryKv,
    discovery: &Discovery,
    clock: &dyn keel_types::Clock,
) -> Result<InitialCluster, MembershipError> {
    let (lease, mut status) = discovery.register(kv, REGISTRATION_TTL)?;
    let start = clock.now();
    let mut renewed = start;
    loop {
        match status {
            DiscoveryStatus::Complete(cluster) => return Ok(cluster),
            DiscoveryStatus::Waiting {
                registered_count,
                size,
            } => {
                tracing::info!(registered_count, size, "waiting for members to register");
            }
        }
        let now = clock.now();
        if now.saturating_sub(start) > DISCOVERY_WAIT_MAX {
            return Err(kv_error(
                "timed out waiting for the other members to register",
            ));
        }
        if now.saturating_sub(renewed) > REGISTRATION_TTL / 3 {
            kv.keep_alive(lease)?;
            renewed = now;
        }
        kv.runtime.block_on(tokio::time::sleep(POLL_INTERVAL));
        status = discovery.poll(kv)?;
    }
}
