//! The lease driver: on the leader, ticks the lessor with the injected clock and proposes
//! what it reports (batched expiries and checkpoints); promotes and demotes the lessor as
//! leadership comes and goes.
//!
//! Premises (keel-lease's protocol, "The node's protocol"):
//! 1. The lessor is promoted only once this member leads and has applied an entry of its own
//!    term (openraft's blank entry at the start of every term), hence every entry committed
//!    before the term: keel-lease's safety premise 2.
//! 2. It is demoted as soon as the metrics show another state, leader or term; a deposed
//!    leader that still reports expiries is harmless, as its proposals cannot commit or carry
//!    stale renew counts (keel-lease's argument 8).
//! 3. Time comes only from the injected clock; the runtime (`rt::Ticker`) only paces the
//!    ticks, so a test with a manual clock decides when leases expire.
//! 4. The lessor is ticked only while the leader lease is valid (openraft's quorum lease,
//!    checked with `ReadPolicy::LeaseRead`, no network round trip): a leader cut off from its
//!    quorum stops reporting expiries instead of piling up proposals that cannot commit.
//!    Skipped ticks lose nothing: the wheel reports what became due at the next valid tick.
//! 5. Proposals are local (`client_write`, never forwarded) and bounded by a deadline; an
//!    expiry whose revoke was lost is reported again after the lessor's retry interval.

use super::{rt, term_of, Consensus, Raft};
use crate::lease::{LeaseCheckpoint, LeaseExpired, LeaseRequest, LeaseState};
use crate::limits::LEASE_DUE_PER_TICK_MAX;
use crate::request::Request;
use openraft::async_runtime::watch::WatchReceiver;
use openraft::{ReadPolicy, ServerState};
use std::sync::Arc;
use std::time::Duration;

impl Consensus {
    /// Start this member's lease driver; it stops by itself when consensus shuts down.
    pub(crate) fn spawn_lease_driver(&self, lease: Arc<LeaseState>, deadline: Duration) {
        let driver = LeaseDriver {
            raft: self.raft.clone(),
            id: self.id.get(),
            lease,
            deadline,
        };
        rt::spawn(driver.run());
    }
}

struct LeaseDriver {
    raft: Raft,
    id: u64,
    lease: Arc<LeaseState>,
    /// Bound on one proposal (premise 4).
    deadline: Duration,
}

/// Whether the driver keeps going.
enum Flow {
    Continue,
    Stop,
}

impl LeaseDriver {
    async fn run(self) {
        let mut metrics = self.raft.metrics();
        let mut ticks = rt::Ticker::new(self.lease.tick_interval());
        let mut was_leading = None;
        loop {
            let ticked = tokio::select! {
                biased;
                _ = ticks.tick() => true,
                changed = metrics.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    false
                }
            };
            let leading = {
                let m = metrics.borrow_watched();
                m.state == ServerState::Leader
                    && m.current_leader == Some(self.id)
                    && m.last_applied.as_ref().map(term_of) == Some(m.current_term)
            };
            // Metrics change with every applied entry: between ticks, only a change of
            // leadership needs a step (promote or demote at once).
            if !ticked && was_leading == Some(leading) {
                continue;
            }
            was_leading = Some(leading);
            let any = !self.lease.with_lessor(|lessor| lessor.is_empty());
            let lease_valid = leading && any && self.leader_lease_valid().await;
            if let Flow::Stop = self.step(leading, lease_valid).await {
                return;
            }
        }
    }

    /// Whether this leader's quorum lease is still valid (premise 4).
    async fn leader_lease_valid(&self) -> bool {
        self.raft
            .get_read_linearizer(ReadPolicy::LeaseRead)
            .await
            .is_ok()
    }

    /// One tick: promote/demote (premises 1, 2), then propose what is due (premise 4).
    async fn step(&self, leading: bool, lease_valid: bool) -> Flow {
        let now = self.lease.now();
        let due = self.lease.with_lessor(|lessor| {
            if leading && !lessor.is_primary() {
                lessor.promote(now);
            } else if !leading && lessor.is_primary() {
                lessor.demote();
            }
            if lease_valid {
                lessor.tick(now, LEASE_DUE_PER_TICK_MAX)
            } else {
                keel_lease::Due::default()
            }
        });
        if !due.expired.is_empty() {
            let expired = due.expired.iter().map(LeaseExpired::from).collect();
            if let Flow::Stop = self.propose(LeaseRequest::RevokeExpired { expired }).await {
                return Flow::Stop;
            }
        }
        if !due.checkpoints.is_empty() {
            let checkpoints = due.checkpoints.iter().map(LeaseCheckpoint::from).collect();
            return self.propose(LeaseRequest::Checkpoint { checkpoints }).await;
        }
        Flow::Continue
    }

    async fn propose(&self, request: LeaseRequest) -> Flow {
        let what = request.to_string();
        let write = self.raft.client_write(Request::Lease(request));
        match rt::timeout(self.deadline, write).await {
            Some(Ok(_)) => Flow::Continue,
            Some(Err(e)) if e.fatal().is_some() => Flow::Stop,
            Some(Err(e)) => {
                tracing::debug!(error = %e, %what, "lease proposal not committed");
                Flow::Continue
            }
            None => {
                tracing::debug!(%what, "lease proposal timed out");
                Flow::Continue
            }
        }
    }
}
