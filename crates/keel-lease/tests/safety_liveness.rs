//! Safety and liveness of leases (crate docs, premises 1-14) across random sequences of
//! leader changes, renews, checkpoints and replication delays.
//!
//! Model: three replicas share one log. Every proposal (renew, checkpoint, expiry revoke) is
//! applied to all replicas at its commit time, `delay` after it was proposed; delays differ,
//! so a checkpoint or expiry computed before a renew may apply after it. Terms end at random
//! times; the deposed primary may keep ticking (and proposing) for a while after its term,
//! overlapping the gap before the next promotion; before promoting, the new primary applies
//! every pending entry (premise 2 and the commit premise of 10). Clocks are one manual clock
//! (premise 3).
//!
//! Checked:
//! * safety: a revoke of an expiry takes effect only if the expiry was reported at least the
//!   TTL after the last acknowledged (applied) renew or grant;
//! * liveness: after the last acknowledged renew at `t0`, the lease is reported by
//!   `t0 + TTL + k x (C + g + G + tick) + tick` (`k` promotions after `t0`) and revoked;
//! * determinism: every replica returns the same result for every entry.

#![expect(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use keel_lease::{Checkpoint, Expired, Lessor, LessorConfig};
use keel_types::{Clock, LeaseId, ManualClock};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use std::collections::BTreeMap;
use std::time::Duration;

const TICK_MS: u64 = 100;
const STEP_MS: u64 = 50;
const GRACE_MS: u64 = 1_000;
const GAP_MAX_MS: u64 = 2_000;
const DELAY_MAX_MS: u64 = 700;

#[derive(Clone, Debug)]
struct Term {
    /// Term length above the minimum of premise 11.
    extra_ms: u64,
    gap_ms: u64,
    /// How long the deposed primary keeps ticking after its term.
    overlap_ms: u64,
    next: usize,
}

#[derive(Clone, Debug)]
struct Plan {
    checkpoint_secs: u64,
    ttls: Vec<i64>,
    /// Per lease: times between renew requests (ms).
    renews: Vec<Vec<u64>>,
    terms: Vec<Term>,
    delays: Vec<u64>,
}

fn plan() -> impl Strategy<Value = Plan> {
    (3u64..=8, proptest::collection::vec(2i64..=40, 1..=3)).prop_flat_map(|(c, ttls)| {
        let n = ttls.len();
        let renews =
            proptest::collection::vec(proptest::collection::vec(100u64..=60_000, 0..6), n..=n);
        let gap = prop_oneof![2 => Just(0u64), 1 => 0u64..=200, 2 => 0..=GAP_MAX_MS];
        let term = (0u64..20_000, gap, 0u64..=GRACE_MS, 0usize..3).prop_map(
            |(extra_ms, gap_ms, overlap_ms, next)| Term {
                extra_ms,
                gap_ms,
                overlap_ms,
                next,
            },
        );
        let terms = proptest::collection::vec(term, 1..30);
        let delays = proptest::collection::vec(0..=DELAY_MAX_MS, 1..20);
        (Just(c), Just(ttls), renews, terms, delays).prop_map(
            |(checkpoint_secs, ttls, renews, terms, delays)| Plan {
                checkpoint_secs,
                ttls,
                renews,
                terms,
                delays,
            },
        )
    })
}

#[derive(Clone, Copy, Debug)]
enum Entry {
    Renew(LeaseId),
    Checkpoint(Checkpoint),
    Revoke { expired: Expired, reported_ms: u64 },
}

/// What the checker knows about one lease.
#[derive(Clone, Debug, Default)]
struct Truth {
    ttl_ms: u64,
    /// Apply time of the last acknowledged renew (or grant).
    last_ack_ms: u64,
    /// Promotions since `last_ack_ms`.
    promotions: u64,
    first_report_ms: Option<u64>,
    revoked_ms: Option<u64>,
}

struct Sim {
    clock: ManualClock,
    replicas: Vec<Lessor>,
    pending: BTreeMap<(u64, u64), Entry>,
    seq: u64,
    delays: Vec<u64>,
    truth: BTreeMap<LeaseId, Truth>,
    slack_per_promotion_ms: u64,
    acked_renews: u64,
    voided_revokes: u64,
}

impl Sim {
    fn now_ms(&self) -> u64 {
        self.clock.now().as_millis() as u64
    }

    fn propose(&mut self, entry: Entry) {
        let delay = self.delays[(self.seq as usize) % self.delays.len()];
        self.pending
            .insert((self.now_ms() + delay, self.seq), entry);
        self.seq += 1;
    }

    fn apply_due(&mut self, all: bool) {
        let now_ms = self.now_ms();
        while let Some((&(at, seq), _)) = self.pending.iter().next() {
            if !all && at > now_ms {
                break;
            }
            let entry = self.pending.remove(&(at, seq)).unwrap();
            self.apply(entry);
        }
    }

    fn apply(&mut self, entry: Entry) {
        let now = self.clock.now();
        let now_ms = self.now_ms();
        match entry {
            Entry::Renew(id) => {
                // Odd replicas apply it through the batch call the node uses: all must agree.
                let results: Vec<_> = self
                    .replicas
                    .iter_mut()
                    .enumerate()
                    .map(|(i, r)| {
                        if i % 2 == 0 {
                            r.renew(id, now)
                        } else {
                            r.renew_many(&[id], now).remove(0)
                        }
                    })
                    .collect();
                assert!(results.windows(2).all(|w| w[0] == w[1]), "replicas agree");
                if results[0].is_ok() {
                    let truth = self.truth.get_mut(&id).unwrap();
                    assert!(truth.revoked_ms.is_none());
                    truth.last_ack_ms = now_ms;
                    self.acked_renews += 1;
                    truth.promotions = 0;
                    truth.first_report_ms = None;
                }
            }
            Entry::Checkpoint(cp) => {
                let results: Vec<_> = self
                    .replicas
                    .iter_mut()
                    .map(|r| r.apply_checkpoint(&cp))
                    .collect();
                assert!(results.windows(2).all(|w| w[0] == w[1]), "replicas agree");
            }
            Entry::Revoke {
                expired,
                reported_ms,
            } => {
                let results: Vec<_> = self
                    .replicas
                    .iter_mut()
                    .map(|r| r.revoke_expired(expired))
                    .collect();
                assert!(results.windows(2).all(|w| w[0] == w[1]), "replicas agree");
                if results[0].is_some() {
                    let truth = self.truth.get_mut(&expired.id).unwrap();
                    assert!(
                        reported_ms >= truth.last_ack_ms + truth.ttl_ms,
                        "SAFETY: lease {} reported at {reported_ms} ms, last renew at {} ms, \
                         ttl {} ms",
                        expired.id,
                        truth.last_ack_ms,
                        truth.ttl_ms
                    );
                    truth.revoked_ms = Some(now_ms);
                } else if self.truth[&expired.id].revoked_ms.is_none() {
                    self.voided_revokes += 1;
                }
            }
        }
        for replica in &self.replicas {
            replica.check_invariants();
            assert_eq!(replica.to_persisted(), self.replicas[0].to_persisted());
        }
    }

    fn tick(&mut self, replica: usize) {
        let now = self.clock.now();
        let now_ms = self.now_ms();
        let due = self.replicas[replica].tick(now, 10_000);
        for cp in due.checkpoints {
            self.propose(Entry::Checkpoint(cp));
        }
        for expired in due.expired {
            let truth = &mut self.truth.get_mut(&expired.id).unwrap();
            if truth.first_report_ms.is_none() {
                truth.first_report_ms = Some(now_ms);
                let bound = truth.last_ack_ms
                    + truth.ttl_ms
                    + truth.promotions * self.slack_per_promotion_ms
                    + TICK_MS;
                assert!(
                    now_ms <= bound,
                    "LIVENESS: lease {} reported at {now_ms} ms > bound {bound} ms \
                     (last renew {} ms, {} promotions)",
                    expired.id,
                    truth.last_ack_ms,
                    truth.promotions
                );
            }
            self.propose(Entry::Revoke {
                expired,
                reported_ms: now_ms,
            });
        }
    }
}

#[expect(
    clippy::too_many_lines,
    reason = "the simulation loop reads best as one schedule"
)]
fn run(plan: &Plan) {
    let checkpoint = Duration::from_secs(plan.checkpoint_secs);
    let config = LessorConfig {
        election_timeout: Duration::from_millis(GRACE_MS),
        tick: Duration::from_millis(TICK_MS),
        checkpoint_interval: Some(checkpoint),
        expired_retry: Duration::from_secs(3),
        id_seed: 1,
    };
    let c_ms = plan.checkpoint_secs * 1000;
    // Premise 11: terms last at least C + g + 2 ticks; 1 s more bounds the promotions.
    let term_min_ms = c_ms + GRACE_MS + 2 * TICK_MS + 1_000;
    let mut sim = Sim {
        clock: ManualClock::new(),
        replicas: (0..3)
            .map(|_| Lessor::new(config.clone()).unwrap())
            .collect(),
        pending: BTreeMap::new(),
        seq: 0,
        delays: plan.delays.clone(),
        truth: BTreeMap::new(),
        slack_per_promotion_ms: c_ms + GRACE_MS + GAP_MAX_MS + TICK_MS,
        acked_renews: 0,
        voided_revokes: 0,
    };
    let mut primary = Some(0usize);
    sim.replicas[0].promote(sim.clock.now());
    // Grants are applied at time 0 on every replica.
    let mut renew_at: Vec<(u64, LeaseId)> = Vec::new();
    for (n, ttl) in plan.ttls.iter().enumerate() {
        let id = LeaseId::new(n as i64 + 1).unwrap();
        for replica in &mut sim.replicas {
            replica.grant(Some(id), *ttl, sim.clock.now()).unwrap();
        }
        sim.truth.insert(
            id,
            Truth {
                ttl_ms: *ttl as u64 * 1000,
                ..Truth::default()
            },
        );
        let mut at = 0;
        for gap in &plan.renews[n] {
            at += gap;
            renew_at.push((at, id));
        }
    }
    let mut term_index = 0;
    let mut term_end = term_min_ms + plan.terms[0].extra_ms;
    let mut deposed: Option<(usize, u64)> = None;
    let mut next_promote: Option<(usize, u64)> = None;
    let last_renew_ms = renew_at.iter().map(|(at, _)| *at).max().unwrap_or(0);
    let horizon_ms = last_renew_ms + 40_000 + 60 * (term_min_ms + 20_000 + GAP_MAX_MS);
    let mut now_ms = 0;
    let mut renews_proposed = 0usize;
    while sim.truth.values().any(|t| t.revoked_ms.is_none()) {
        assert!(now_ms < horizon_ms, "LIVENESS: leases alive at the horizon");
        now_ms += STEP_MS;
        sim.clock.set(Duration::from_millis(now_ms));
        sim.apply_due(false);
        for (_, id) in renew_at.iter().filter(|(at, _)| *at <= now_ms) {
            sim.propose(Entry::Renew(*id));
            renews_proposed += 1;
        }
        renew_at.retain(|(at, _)| *at > now_ms);
        if let Some(p) = primary.filter(|_| now_ms >= term_end) {
            let term = &plan.terms[term_index % plan.terms.len()];
            deposed = Some((p, now_ms + term.overlap_ms));
            next_promote = Some(((p + term.next) % 3, now_ms + term.gap_ms));
            primary = None;
        }
        if let Some((p, until)) = deposed {
            if now_ms >= until {
                sim.replicas[p].demote();
                deposed = None;
            } else {
                sim.tick(p);
            }
        }
        if let Some((p, _)) = next_promote.filter(|(_, at)| now_ms >= *at) {
            sim.apply_due(true);
            if deposed.map(|(d, _)| d) == Some(p) {
                deposed = None;
            }
            sim.replicas[p].promote(sim.clock.now());
            for truth in sim.truth.values_mut() {
                truth.promotions += 1;
            }
            primary = Some(p);
            next_promote = None;
            term_index += 1;
            term_end = now_ms + term_min_ms + plan.terms[term_index % plan.terms.len()].extra_ms;
        }
        if let Some(p) = primary {
            sim.tick(p);
        }
    }
    let planned: usize = plan.renews.iter().map(Vec::len).sum();
    assert!(renews_proposed <= planned);
    RUN_STATS.with(|s| {
        let mut s = s.borrow_mut();
        s.0 += 1;
        s.1 += sim.acked_renews;
        s.2 += sim.voided_revokes;
    });
}

thread_local! {
    /// (runs, acknowledged renews, revokes voided by a later renew) across one test.
    static RUN_STATS: std::cell::RefCell<(u64, u64, u64)> = const { std::cell::RefCell::new((0, 0, 0)) };
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 96,
        rng_seed: proptest::test_runner::RngSeed::Fixed(0x6b65_656c),
        ..ProptestConfig::default()
    })]
    #[test]
    fn leases_never_expire_early_and_always_expire(plan in plan()) {
        run(&plan);
    }
}

/// The random runs exercise what they claim to: renews are acknowledged and some expiry
/// revokes are voided by a renew ordered before them.
#[test]
fn random_runs_exercise_renews_and_voided_revokes() {
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    for _ in 0..64 {
        let plan = plan().new_tree(&mut runner).unwrap().current();
        run(&plan);
    }
    let (runs, acked, voided) = RUN_STATS.with(|s| *s.borrow());
    assert_eq!(runs, 64);
    assert!(acked > 64, "{acked} renews acknowledged");
    assert!(voided > 0, "{voided} revokes voided");
}

/// Found by the property test: a promotion padded a lease's deadline with the grace (from
/// the full TTL persisted by an earlier renew); the next renew kept that later deadline
/// (`max`), so the lease expired 200 ms past TTL after its last renew. A renew now sets the
/// deadline to exactly `now + TTL`.
#[test]
fn a_renew_after_a_promotion_resets_the_deadline_to_its_ttl() {
    let term = |extra_ms, gap_ms, overlap_ms| Term {
        extra_ms,
        gap_ms,
        overlap_ms,
        next: 0,
    };
    let plan = Plan {
        checkpoint_secs: 7,
        ttls: vec![25, 38, 27],
        renews: vec![vec![20_919, 25_112, 5_670], vec![], vec![]],
        terms: vec![
            term(2_351, 0, 0),
            term(12_101, 51, 0),
            term(8_551, 51, 0),
            term(16_751, 1, 51),
        ],
        delays: vec![0; 11],
    };
    run(&plan);
}

#[test]
fn frequent_short_leader_changes_still_expire_an_abandoned_lease() {
    let plan = Plan {
        checkpoint_secs: 3,
        ttls: vec![40, 2, 17],
        renews: vec![vec![1_000, 30_000], vec![], vec![16_000, 16_000, 16_000]],
        terms: vec![Term {
            extra_ms: 0,
            gap_ms: GAP_MAX_MS,
            overlap_ms: GRACE_MS,
            next: 0,
        }],
        delays: vec![DELAY_MAX_MS, 0, 300],
    };
    run(&plan);
}
