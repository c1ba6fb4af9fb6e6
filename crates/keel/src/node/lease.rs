//! The node's lease API: grant, revoke, keep-alive, time-to-live, list.

use super::{unexpected, Node, Running};
use crate::error::NodeError;
use crate::lease::{LeaseApplied, LeaseRequest};
use crate::request::{Applied, Request};
use crate::response::{ReadConsistency, Response};
use keel_lease::TimeToLive;
use keel_types::{KeyRange, LeaseId};

/// The answer to [`Node::lease_grant`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseGrant {
    /// The lease's id (the client's, or one the lessor chose).
    pub id: LeaseId,
    /// The granted TTL in seconds (the request's, raised to the minimum TTL).
    pub ttl_secs: i64,
}

/// The answer to [`Node::lease_keep_alive`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseKeepAlive {
    /// The lease renewed.
    pub id: LeaseId,
    /// Its TTL in seconds: it expires no earlier than this long after the call returned.
    pub ttl_secs: i64,
}

impl Node {
    pub(super) async fn propose_lease(
        &self,
        request: LeaseRequest,
    ) -> Result<(LeaseApplied, u64), NodeError> {
        match self.propose(Request::Lease(request)).await? {
            (Applied::Lease(applied), term) => Ok((applied, term)),
            (other, _) => Err(unexpected(&other)),
        }
    }

    fn lease_response<T>(
        &self,
        running: &Running,
        term: u64,
        body: T,
    ) -> Result<Response<T>, NodeError> {
        let revision = running.store.current_revision()?;
        Ok(Response {
            header: self.header(revision, term),
            body,
        })
    }

    /// etcd LeaseGrant: a lease of `ttl_secs` seconds (raised to the minimum TTL,
    /// `ceil(1.5 x election timeout)`), under `id` or, when `None`, an id the cluster chooses.
    /// The lease starts counting when the grant applies on the leader.
    ///
    /// # Examples
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// use keel_storage::mvcc::PutRequest;
    /// let node = keel::NodeBuilder::new(keel_types::MemberId::new(1)).start().await?;
    /// let lease = node.lease_grant(60, None).await?.body;
    /// node.put_request(PutRequest { lease: Some(lease.id), ..PutRequest::new(&b"k"[..], &b"v"[..]) }).await?;
    /// node.lease_revoke(lease.id).await?;
    /// assert!(node.get(&b"k"[..]).await?.body.is_none());
    /// node.shutdown().await;
    /// # Ok::<(), keel::NodeError>(())
    /// # }).unwrap();
    /// ```
    ///
    /// # Errors
    /// [`NodeError::Lease`] ("etcdserver: lease already exists", TTL too large or not
    /// positive, too many leases), [`NodeError::Timeout`], [`NodeError::Stopped`].
    pub async fn lease_grant(
        &self,
        ttl_secs: i64,
        id: Option<LeaseId>,
    ) -> Result<Response<LeaseGrant>, NodeError> {
        let running = self.inner.running()?;
        match self
            .propose_lease(LeaseRequest::Grant { id, ttl_secs })
            .await?
        {
            (LeaseApplied::Granted { id, ttl_secs }, term) => {
                self.lease_response(&running, term, LeaseGrant { id, ttl_secs })
            }
            (other, _) => Err(unexpected(&Applied::Lease(other))),
        }
    }

    /// etcd LeaseRevoke: drop the lease and delete its keys, all in one revision (the
    /// header's).
    ///
    /// # Errors
    /// [`NodeError::LeaseNotFound`], [`NodeError::Timeout`], [`NodeError::Stopped`].
    pub async fn lease_revoke(&self, id: LeaseId) -> Result<Response<()>, NodeError> {
        match self.propose_lease(LeaseRequest::Revoke { id }).await? {
            (LeaseApplied::Revoked { revision }, term) => Ok(Response {
                header: self.header(revision, term),
                body: (),
            }),
            (other, _) => Err(unexpected(&Applied::Lease(other))),
        }
    }

    /// etcd LeaseKeepAlive (one renew): the lease's remaining TTL becomes its full TTL. The
    /// renew is replicated and acknowledged once applied here; concurrent keep-alives on this
    /// member share one entry.
    ///
    /// Deviation from etcd: the renew is a replicated entry, not a leader-local operation
    /// (see keel-lease's crate docs).
    ///
    /// # Errors
    /// [`NodeError::LeaseNotFound`], [`NodeError::Timeout`], [`NodeError::Stopped`].
    pub async fn lease_keep_alive(
        &self,
        id: LeaseId,
    ) -> Result<Response<LeaseKeepAlive>, NodeError> {
        let running = self.inner.running()?;
        match self.renew_batched(&running, id).await? {
            (Some(ttl_secs), term) => {
                self.lease_response(&running, term, LeaseKeepAlive { id, ttl_secs })
            }
            (None, _) => Err(NodeError::LeaseNotFound { lease: id }),
        }
    }

    /// etcd LeaseTimeToLive: granted TTL, time left and (if `with_keys`) the attached keys.
    /// Linearizable: reflects every call acknowledged before it.
    ///
    /// Deviation from etcd: served by this member; on a follower the time left is the last
    /// replicated remaining TTL (a checkpoint's, or the full TTL after a grant or renew),
    /// which never understates it, rather than the leader's countdown.
    ///
    /// # Errors
    /// [`NodeError::LeaseNotFound`], [`NodeError::Timeout`], [`NodeError::Stopped`].
    pub async fn lease_time_to_live(
        &self,
        id: LeaseId,
        with_keys: bool,
    ) -> Result<Response<TimeToLive>, NodeError> {
        let running = self.linearized(ReadConsistency::Linearizable).await?;
        let now = running.lease.now();
        let ttl = running
            .lease
            .with_lessor(|lessor| lessor.time_to_live(id, now, with_keys))
            .map_err(|e| match e {
                keel_lease::LeaseError::NotFound { id } => NodeError::LeaseNotFound { lease: id },
                other => NodeError::Lease(other),
            })?;
        for key in &ttl.keys {
            self.check_access(&KeyRange::Key(key.clone()), keel_auth::Access::Read)?;
        }
        let term = running.consensus.status().term;
        self.lease_response(&running, term, ttl)
    }

    /// etcd LeaseLeases: every lease id, sorted. Linearizable.
    ///
    /// # Errors
    /// [`NodeError::Timeout`], [`NodeError::Stopped`].
    pub async fn leases(&self) -> Result<Response<Vec<LeaseId>>, NodeError> {
        let running = self.linearized(ReadConsistency::Linearizable).await?;
        let ids = running.lease.with_lessor(|lessor| lessor.leases());
        let term = running.consensus.status().term;
        self.lease_response(&running, term, ids)
    }

    pub(super) async fn linearized(
        &self,
        consistency: ReadConsistency,
    ) -> Result<std::sync::Arc<Running>, NodeError> {
        let running = self.inner.running()?;
        if consistency == ReadConsistency::Linearizable {
            running
                .consensus
                .linearize(self.inner.request_timeout)
                .await?;
        }
        Ok(running)
    }
}
