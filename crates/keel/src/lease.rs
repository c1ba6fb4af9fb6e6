//! Leases in the node: the replicated lease requests, and the [`LeaseState`] the state machine
//! applies them with (keel-lease's [`Lessor`] plus its column family and the injected clock).
//!
//! The protocol is keel-lease's ("The node's protocol" in its crate docs):
//! * every replica applies grant, revoke, renew, checkpoint and revoke-expired entries, and
//!   attaches/detaches keys when puts, deletes and txns apply, with its own clock as `now`;
//!   the lessor's changes are staged into the same entry's batch;
//! * a revoke deletes the lease's keys in the same revision (one [`WriteTxn`]);
//! * only the leader's lease driver (`raft::lease_driver`) reports expiries and checkpoints,
//!   which it proposes as [`LeaseRequest::RevokeExpired`] and [`LeaseRequest::Checkpoint`].
//!
//! Invariants:
//! 1. A refused lease request or a put naming an unknown lease changes nothing: every check
//!    runs before the first write to the transaction or the lessor.
//! 2. A key is attached to lease `L` in the lessor exactly when its live version in the store
//!    carries `L`: attachments are derived by comparing the touched keys' leases before and
//!    after each KV request, inside the same transaction.
//! 3. The lessor's in-memory state matches its column family after every applied entry
//!    (changes are staged into the entry's batch before commit; a failed commit stops the
//!    node, which then reloads from storage).

use crate::request::{Applied, Request};
use bytes::Bytes;
use keel_lease::{Checkpoint, Expired, LeaseError, LeaseStore, Lessor, LessorConfig, RenewCount};
use keel_storage::engine::Engine;
use keel_storage::mvcc::{DeleteRequest, RangeRequest, RequestOp, WriteTxn};
use keel_storage::StorageError;
use keel_types::{Clock, KeyRange, LeaseId};
use parking_lot::Mutex;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

mod request;
pub(crate) use request::{LeaseApplied, LeaseRejection};
pub use request::{LeaseCheckpoint, LeaseExpired, LeaseRequest};

/// The lessor of one node, shared by the state machine (which applies), the lease driver
/// (which ticks it on the leader) and the node's read calls.
///
/// Lock: `lessor` guards the lessor only; it is never held across an `.await` and never
/// taken while holding another lock of the node (the store's writer may be held when it is
/// taken, never the reverse).
pub(crate) struct LeaseState {
    lessor: Mutex<Lessor>,
    store: LeaseStore,
    config: LessorConfig,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for LeaseState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaseState")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl LeaseState {
    /// Load the lessor from `engine`'s lease column family.
    pub(crate) fn open(
        engine: &dyn Engine,
        config: LessorConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, LeaseError> {
        let store = LeaseStore::new(engine.column_family(keel_lease::LEASE_CF)?);
        let lessor = store.load_lessor(&*engine.view()?, config.clone())?;
        Ok(LeaseState {
            lessor: Mutex::new(lessor),
            store,
            config,
            clock,
        })
    }

    /// Replace the lessor with the one persisted in `engine` (after a snapshot install). The
    /// new lessor is not primary; the driver promotes it again if this member leads.
    pub(crate) fn reload(&self, engine: &dyn Engine) -> Result<(), LeaseError> {
        let lessor = self
            .store
            .load_lessor(&*engine.view()?, self.config.clone())?;
        *self.lessor.lock() = lessor;
        Ok(())
    }

    /// The injected clock's time.
    pub(crate) fn now(&self) -> Duration {
        self.clock.now()
    }

    /// The lessor's tick (the driver's interval).
    pub(crate) fn tick_interval(&self) -> Duration {
        self.config.tick
    }

    /// Run `f` on the lessor (never across an `.await`).
    pub(crate) fn with_lessor<T>(&self, f: impl FnOnce(&mut Lessor) -> T) -> T {
        f(&mut self.lessor.lock())
    }

    /// Stage the lessor's pending changes into the entry's batch (invariant 3).
    pub(crate) fn stage(&self, txn: &mut WriteTxn<'_>) {
        let mut lessor = self.lessor.lock();
        self.store.stage(txn.batch(), lessor.drain_changes());
    }

    /// Apply `req` in `txn`: lease requests here; KV requests through `kv`, with the leases
    /// they name checked first (invariant 1) and attachments updated after (invariant 2).
    ///
    /// etcd: server/etcdserver/apply (`checkRequestPut`: "requested lease not found").
    /// Deviation from etcd: a txn is refused if a put in *either* branch names an unknown
    /// lease (etcd checks the branch the compares select), so the check runs before any write.
    pub(crate) fn apply(
        &self,
        txn: &mut WriteTxn<'_>,
        req: &Request,
        kv: impl FnOnce(&mut WriteTxn<'_>) -> Result<Applied, StorageError>,
    ) -> Result<Applied, StorageError> {
        if let Request::Lease(lease) = req {
            return self.apply_lease(txn, lease);
        }
        let named = req.leases();
        let touched = touched_ranges(req);
        {
            let lessor = self.lessor.lock();
            if let Some(id) = named.iter().find(|id| lessor.lease(**id).is_none()) {
                return Ok(Applied::Rejected(crate::request::Rejection::Lease(
                    LeaseRejection::NotFound { id: *id },
                )));
            }
            if named.is_empty() && lessor.is_empty() {
                // No lease exists: nothing can be attached or detached.
                drop(lessor);
                return kv(txn);
            }
        }
        let before = leased_keys(txn, &touched)?;
        let applied = kv(txn)?;
        if matches!(applied, Applied::Rejected(_)) {
            return Ok(applied);
        }
        let after = leased_keys(txn, &touched)?;
        self.reattach(&before, &after);
        Ok(applied)
    }

    /// Detach and attach the keys whose lease changed between `before` and `after`.
    fn reattach(&self, before: &BTreeMap<Bytes, LeaseId>, after: &BTreeMap<Bytes, LeaseId>) {
        let mut lessor = self.lessor.lock();
        for (key, old) in before {
            if after.get(key) != Some(old) {
                // The lease exists (a revoke deletes its keys); a miss changes nothing.
                let _ = lessor.detach(*old, key);
            }
        }
        for (key, new) in after {
            if before.get(key) != Some(new) {
                // Checked to exist before the request ran (invariant 1).
                let _ = lessor.attach(*new, key.clone());
            }
        }
    }

    fn apply_lease(
        &self,
        txn: &mut WriteTxn<'_>,
        req: &LeaseRequest,
    ) -> Result<Applied, StorageError> {
        let now = self.clock.now();
        let rejected =
            |e: LeaseError| Applied::Rejected(crate::request::Rejection::Lease(e.into()));
        let applied = match req {
            LeaseRequest::Grant { id, ttl_secs } => {
                match self.lessor.lock().grant(*id, *ttl_secs, now) {
                    Ok(record) => LeaseApplied::Granted {
                        id: record.id,
                        ttl_secs: record.ttl_secs,
                    },
                    Err(e) => return Ok(rejected(e)),
                }
            }
            LeaseRequest::Revoke { id } => {
                let keys = self.lessor.lock().time_to_live(*id, now, true);
                let keys = match keys {
                    Ok(ttl) => ttl.keys,
                    Err(e) => return Ok(rejected(e)),
                };
                delete_keys(txn, &keys)?;
                let _ = self.lessor.lock().revoke(*id);
                LeaseApplied::Revoked {
                    revision: txn.current_revision(),
                }
            }
            LeaseRequest::Renew { ids } => {
                let mut lessor = self.lessor.lock();
                let ttls = lessor
                    .renew_many(ids, now)
                    .into_iter()
                    .map(Result::ok)
                    .collect();
                LeaseApplied::Renewed { ttls }
            }
            LeaseRequest::Checkpoint { checkpoints } => {
                let mut lessor = self.lessor.lock();
                for c in checkpoints {
                    lessor.apply_checkpoint(&Checkpoint {
                        id: c.id,
                        renew_count: RenewCount::new(c.renew_count),
                        remaining: Duration::from_millis(c.remaining_ms),
                    });
                }
                LeaseApplied::Internal
            }
            LeaseRequest::RevokeExpired { expired } => {
                self.revoke_expired(txn, expired)?;
                LeaseApplied::Internal
            }
        };
        Ok(Applied::Lease(applied))
    }

    /// Revoke each expired lease that was not renewed since, deleting the keys of all of them
    /// in this entry's single revision. The keys are deleted before the lessor changes, so a
    /// refused delete leaves the lessor as it was (invariant 1).
    fn revoke_expired(
        &self,
        txn: &mut WriteTxn<'_>,
        expired: &[LeaseExpired],
    ) -> Result<(), StorageError> {
        let now = self.clock.now();
        let mut keys = Vec::new();
        let mut due = Vec::new();
        {
            let lessor = self.lessor.lock();
            for e in expired {
                let current = lessor.lease(e.id).map(|r| r.renew_count.get());
                if current != Some(e.renew_count) {
                    continue; // Renewed since the report, or already gone.
                }
                if let Ok(mut ttl) = lessor.time_to_live(e.id, now, true) {
                    keys.append(&mut ttl.keys);
                    due.push(e);
                }
            }
        }
        delete_keys(txn, &keys)?;
        let mut lessor = self.lessor.lock();
        for e in due {
            let _ = lessor.revoke_expired(Expired {
                id: e.id,
                renew_count: RenewCount::new(e.renew_count),
            });
        }
        Ok(())
    }
}

/// Delete `keys` in the transaction (one revision, one event each).
fn delete_keys(txn: &mut WriteTxn<'_>, keys: &[Bytes]) -> Result<(), StorageError> {
    for key in keys {
        txn.delete_range(&DeleteRequest {
            range: KeyRange::Key(key.clone()),
            prev_kv: false,
        })?;
    }
    Ok(())
}

/// Every key range a KV request may write (both branches of txns, nested ones included).
fn touched_ranges(req: &Request) -> Vec<KeyRange> {
    fn in_ops(ops: &[RequestOp], out: &mut Vec<KeyRange>) {
        for op in ops {
            match op {
                RequestOp::Put(p) => out.push(KeyRange::Key(p.key.clone())),
                RequestOp::Delete(d) => out.push(d.range.clone()),
                RequestOp::Txn(t) => {
                    in_ops(&t.success, out);
                    in_ops(&t.failure, out);
                }
                RequestOp::Range(_) => {}
            }
        }
    }
    let mut out = Vec::new();
    match req {
        Request::Put(p) => out.push(KeyRange::Key(p.key.clone())),
        Request::DeleteRange(d) => out.push(d.range.clone()),
        Request::Txn(t) => {
            in_ops(&t.success, &mut out);
            in_ops(&t.failure, &mut out);
        }
        Request::Compact { .. } | Request::Lease(_) | Request::Auth(_) => {}
        Request::Checked { request, .. } => out.extend(touched_ranges(request)),
    }
    out
}

/// The live keys in `ranges` that carry a lease, as the transaction sees them now.
fn leased_keys(
    txn: &WriteTxn<'_>,
    ranges: &[KeyRange],
) -> Result<BTreeMap<Bytes, LeaseId>, StorageError> {
    let mut out = BTreeMap::new();
    for range in ranges {
        let resp = txn.range(&RangeRequest {
            keys_only: true,
            ..RangeRequest::new(range.clone())
        })?;
        for kv in resp.kvs {
            if let Some(lease) = kv.lease {
                out.insert(kv.key, lease);
            }
        }
    }
    Ok(out)
}

/// Every lease a KV request attaches keys to (both branches of txns, nested ones included).
pub(crate) fn named_leases(req: &Request) -> BTreeSet<LeaseId> {
    fn in_ops(ops: &[RequestOp], out: &mut BTreeSet<LeaseId>) {
        for op in ops {
            match op {
                RequestOp::Put(p) => out.extend(p.lease),
                RequestOp::Txn(t) => {
                    in_ops(&t.success, out);
                    in_ops(&t.failure, out);
                }
                RequestOp::Range(_) | RequestOp::Delete(_) => {}
            }
        }
    }
    let mut out = BTreeSet::new();
    match req {
        Request::Put(p) => out.extend(p.lease),
        Request::Txn(t) => {
            in_ops(&t.success, &mut out);
            in_ops(&t.failure, &mut out);
        }
        Request::DeleteRange(_)
        | Request::Compact { .. }
        | Request::Lease(_)
        | Request::Auth(_) => {}
        Request::Checked { request, .. } => out.extend(named_leases(request)),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::NodeError;
    use keel_storage::mvcc::{PutRequest, TxnRequest};

    fn leased(key: &'static [u8], lease: i64) -> PutRequest {
        PutRequest {
            lease: LeaseId::new(lease),
            ..PutRequest::new(key, &b"v"[..])
        }
    }

    #[test]
    fn both_branches_and_nested_txns_are_checked_and_diffed() {
        let inner = TxnRequest {
            failure: vec![RequestOp::Put(leased(b"c", 3))],
            ..TxnRequest::default()
        };
        let req = Request::Txn(TxnRequest {
            success: vec![
                RequestOp::Put(leased(b"a", 1)),
                RequestOp::Txn(inner),
                RequestOp::Delete(DeleteRequest {
                    range: KeyRange::prefix(&b"d/"[..]),
                    prev_kv: false,
                }),
            ],
            failure: vec![RequestOp::Put(PutRequest::new(&b"b"[..], &b"v"[..]))],
            ..TxnRequest::default()
        });
        let named: Vec<i64> = named_leases(&req).into_iter().map(LeaseId::get).collect();
        assert_eq!(named, vec![1, 3]);
        assert_eq!(
            touched_ranges(&req),
            vec![
                KeyRange::key(&b"a"[..]),
                KeyRange::key(&b"c"[..]),
                KeyRange::prefix(&b"d/"[..]),
                KeyRange::key(&b"b"[..]),
            ]
        );
        let grant = Request::Lease(LeaseRequest::Grant {
            id: None,
            ttl_secs: 5,
        });
        assert!(named_leases(&grant).is_empty());
        assert!(touched_ranges(&grant).is_empty());
    }

    #[test]
    fn lease_refusals_become_etcd_errors() {
        let id = LeaseId::new(9).unwrap();
        let not_found = NodeError::from(LeaseRejection::from(LeaseError::NotFound { id }));
        assert_eq!(not_found, NodeError::LeaseNotFound { lease: id });
        assert_eq!(
            not_found.to_string(),
            "etcdserver: requested lease not found"
        );
        let exists = NodeError::from(LeaseRejection::from(LeaseError::AlreadyExists { id }));
        assert_eq!(exists.to_string(), "etcdserver: lease already exists");
        assert!(!exists.is_fatal());
    }

    #[test]
    fn checkpoints_and_expiries_convert_losslessly() {
        let id = LeaseId::new(4).unwrap();
        let c = Checkpoint {
            id,
            renew_count: RenewCount::new(7),
            remaining: Duration::from_millis(1234),
        };
        assert_eq!(
            LeaseCheckpoint::from(&c),
            LeaseCheckpoint {
                id,
                renew_count: 7,
                remaining_ms: 1234
            }
        );
        let e = Expired {
            id,
            renew_count: RenewCount::new(2),
        };
        assert_eq!(LeaseExpired::from(&e), LeaseExpired { id, renew_count: 2 });
    }
}
