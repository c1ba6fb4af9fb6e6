//! keel-lease: leases with an expiry wheel, checkpoints and key attachment.
//!
//! What it is: the [`Lessor`], a pure `&mut self` state machine holding every lease (id,
//! granted TTL, persisted remaining TTL, renew count, attached keys) and, on the primary, every
//! deadline in a hierarchical timing [`wheel`]; its persisted records in their own column
//! family ([`LEASE_CF`], layout in [`schema`]) written by [`LeaseStore`] into the caller's
//! write batch.
//!
//! What it is not: it does no I/O, has no clock, thread, lock or async; it never deletes keys
//! (revoke returns them) and never proposes anything (it returns what to propose). The node
//! wires it. Limits: [`limits`] (TTL up to 9,000,000,000 s, at most 2^30 leases); time
//! resolution is the configured tick (100 ms by default).
//!
//! # The node's protocol
//! * Applying a replicated entry, on every replica, with the replica's clock as `now`:
//!   [`Lessor::grant`], [`Lessor::renew`] (a batch: [`Lessor::renew_many`]), [`Lessor::revoke`],
//!   [`Lessor::revoke_expired`], [`Lessor::attach`] / [`Lessor::detach`] (put with a lease,
//!   delete, re-put with another lease), [`Lessor::apply_checkpoint`]; then
//!   [`LeaseStore::stage`] the [`Lessor::drain_changes`] into that entry's batch. Acknowledge
//!   a renew after applying it.
//! * On the leader: [`Lessor::promote`] once it has applied every entry committed before its
//!   term, [`Lessor::demote`] when it steps down, and [`Lessor::tick`] every tick while it
//!   holds a valid leader lease; it proposes the returned [`Expired`] (batched) and
//!   [`Checkpoint`]s (batched).
//! * At open or snapshot install: [`LeaseStore::load_lessor`].
//!
//! Deviation from etcd: keep-alives are applied as replicated entries (etcd renews on the
//! leader only and replicates a checkpoint reset afterwards, the source of its issues 13491
//! and 17132). The node can batch many keep-alives per entry. In exchange, every acknowledged
//! renew is in the log, and renew counts make stale checkpoints and expiries harmless.
//!
//! # Safety: no lease expires early
//! Claim: if the last renew (or the grant) of a lease was committed at time `t_r`, no primary
//! reports it expired before `t_r + TTL`, and no revoke for an expiry reported before that
//! renew takes effect. Premises:
//! 1. Replicas apply entries in log order; a renew or grant is acknowledged only once applied.
//! 2. A replica promotes only after applying every entry committed before its term, so a
//!    primary promoted at `t_p` after the renew's commit has applied it, and `t_p >= t_r`.
//! 3. Clocks are monotonic and advance at the rate of real time (no drift), as in etcd.
//! 4. Every duration is rounded in the safe direction: deadlines and remaining TTLs up,
//!    "now" down when checking a deadline.
//!
//! Argument:
//! 5. A primary applying the renew at `t_a >= t_r` sets its deadline to at least
//!    `t_a + TTL` (renew never lowers a deadline) (1).
//! 6. A checkpoint carries the renew count under which it was computed; applying it is a no-op
//!    unless the lease's count still matches, so the only checkpoints that lower the
//!    persisted remaining TTL after the renew were emitted by primaries that had applied it,
//!    at some `t_c >= t_r`, from a deadline `D_c >= t_r + TTL` (5, and 7 by induction on
//!    emission order), with value `min(TTL, D_c - t_c)`.
//! 7. A primary promoted at `t_p` after applying the renew sets the deadline to
//!    `t_p + R + grace` where `R` is the persisted remaining: the full TTL (then
//!    `t_p + TTL >= t_r + TTL` by 2) or the minimum of checkpoints from 6, each applied before
//!    promotion so `t_p >= t_c`, giving `t_p + R >= min(t_c + TTL, D_c) >= t_r + TTL`.
//! 8. A primary that has not applied the renew (a deposed leader) may report the lease
//!    expired, but its [`Expired`] carries the older renew count: if its revoke is ordered
//!    after the renew, [`Lessor::revoke_expired`] is a no-op; if before, the renew finds no
//!    lease and is not acknowledged, contradicting that it is the last acknowledged renew.
//! 9. The wheel reports a lease only once `now >= deadline` (wheel invariant 5), so by 5-8 no
//!    report precedes `t_r + TTL`. The election-timeout grace of 7 is not needed by this
//!    argument; it is margin for apply lag and clock-rate error, and matches etcd.
//!
//! # Liveness: an abandoned lease expires
//! Claim: a lease not renewed after `t_0` is reported expired by
//! `t_0 + TTL + k x (C + g + G + tick) + tick`, where `C` is the checkpoint interval, `g` the
//! grace, `G` the longest time without a primary between two terms and `k` the number of
//! promotions after `t_0`; and `k` is bounded. Premises:
//! 10. The primary calls [`Lessor::tick`] at least once per tick with room for what is due, and
//!     its checkpoints are committed and applied before the next primary promotes.
//! 11. `C > g`, and every term lasts at least `L > C + g + 2 x tick`.
//!
//! Argument:
//! 12. Within a term with deadline `D`, the primary checkpoints a lease once its persisted
//!     remaining TTL is `C` stale (at the latest `g + C + tick` after promotion), then every
//!     `C` (each at most one tick late) while `now < D`, and reports the lease at most one
//!     tick after `D`.
//! 13. At a change of primary, the last checkpoint was emitted at most `C + tick` before the
//!     term ended; the next primary starts `D' = t_p' + R' + g <= D + (C + tick) + G + g`.
//!     Hence each promotion postpones the deadline by at most `C + g + G + tick`.
//! 14. Each term of length `L` lowers the persisted remaining by at least `L - C - g - 2 x
//!     tick > 0` (11), so after `k <= 1 + TTL / (L - C - g - 2 x tick)` promotions it is zero
//!     and the next primary expires the lease within `g + tick`.
//!
//! Without checkpoints (`checkpoint_interval: None`) 14 fails: leader changes more often than
//! the TTL keep a lease alive forever (etcd issue 9888).
//!
//! # Examples
//! ```
//! use keel_lease::{Lessor, LessorConfig};
//! use keel_types::{Clock, LeaseId, ManualClock};
//! use std::time::Duration;
//!
//! let clock = ManualClock::new();
//! let mut leader = Lessor::new(LessorConfig::default())?;
//! let mut follower = Lessor::new(LessorConfig::default())?;
//! leader.promote(clock.now());
//! for lessor in [&mut leader, &mut follower] {
//!     lessor.grant(LeaseId::new(1), 120, clock.now())?;
//! }
//! clock.advance(Duration::from_secs(61));
//! let due = leader.tick(clock.now(), 1000);
//! assert_eq!(due.checkpoints.len(), 1);
//! for lessor in [&mut leader, &mut follower] {
//!     assert!(lessor.apply_checkpoint(&due.checkpoints[0]));
//! }
//! // The follower takes over: 59 s left, plus the 1 s grace.
//! leader.demote();
//! follower.promote(clock.now());
//! let ttl = follower.time_to_live(LeaseId::new(1).unwrap(), clock.now(), false)?;
//! assert_eq!(ttl.remaining, Duration::from_secs(60));
//! # Ok::<(), keel_lease::LeaseError>(())
//! ```

pub mod codec;
mod config;
mod error;
mod id_gen;
mod index;
mod lease;
mod lessor;
pub mod limits;
#[cfg(feature = "planted-bugs")]
pub mod planted;
pub mod schema;
mod store;
pub mod wheel;
pub mod wheel_reference;

pub use config::LessorConfig;
pub use error::{LeaseError, Result};
pub use id_gen::IdGenerator;
pub use lease::{Change, Checkpoint, Due, Expired, LeaseRecord, RenewCount, TimeToLive};
pub use lessor::{Lessor, PersistedLeases};
pub use schema::LEASE_CF;
pub use store::LeaseStore;
