//! Unit tests of the lessor, on a manual clock.

use super::invariants::hash_table_bytes;
use super::*;
use crate::lease::Due;
use keel_types::{Clock, ManualClock};

fn id(n: i64) -> LeaseId {
    LeaseId::new(n).unwrap()
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn config() -> LessorConfig {
    LessorConfig::default()
}

fn primary(clock: &ManualClock) -> Lessor {
    let mut lessor = Lessor::new(config()).unwrap();
    lessor.promote(clock.now());
    lessor
}

fn expired_ids(due: &Due) -> Vec<LeaseId> {
    let mut ids: Vec<LeaseId> = due.expired.iter().map(|e| e.id).collect();
    ids.sort_unstable();
    ids
}

#[test]
fn grant_raises_ttl_to_minimum_and_refuses_bad_ttls() {
    let clock = ManualClock::new();
    let mut lessor = primary(&clock);
    assert_eq!(
        lessor.grant(Some(id(1)), 1, clock.now()).unwrap().ttl_secs,
        2
    );
    let err = lessor.grant(Some(id(2)), 0, clock.now()).unwrap_err();
    assert_eq!(err, LeaseError::TtlNotPositive { ttl_secs: 0 });
    assert_eq!(err.to_string(), "etcdserver: lease TTL must be positive");
    assert!(lessor.grant(Some(id(2)), -5, clock.now()).is_err());
    let err = lessor
        .grant(Some(id(2)), TTL_MAX_SECS + 1, clock.now())
        .unwrap_err();
    assert_eq!(err.to_string(), "etcdserver: too large lease TTL");
    let max = lessor
        .grant(Some(id(2)), TTL_MAX_SECS, clock.now())
        .unwrap();
    assert_eq!(max.remaining, Duration::from_secs(TTL_MAX_SECS as u64));
    lessor.check_invariants();
}

#[test]
fn duplicate_and_unknown_ids_use_etcd_wording_and_change_nothing() {
    let clock = ManualClock::new();
    let mut lessor = primary(&clock);
    lessor.grant(Some(id(5)), 10, clock.now()).unwrap();
    lessor.drain_changes();
    let err = lessor.grant(Some(id(5)), 10, clock.now()).unwrap_err();
    assert_eq!(err.to_string(), "etcdserver: lease already exists");
    let missing = id(6);
    let not_found = "etcdserver: requested lease not found";
    assert_eq!(
        lessor.renew(missing, clock.now()).unwrap_err().to_string(),
        not_found
    );
    assert_eq!(lessor.revoke(missing).unwrap_err().to_string(), not_found);
    assert_eq!(
        lessor.attach(missing, "k".into()).unwrap_err().to_string(),
        not_found
    );
    assert_eq!(
        lessor.detach(missing, b"k").unwrap_err().to_string(),
        not_found
    );
    let ttl = lessor.time_to_live(missing, clock.now(), true);
    assert_eq!(ttl.unwrap_err(), LeaseError::NotFound { id: missing });
    assert_eq!(lessor.drain_changes().len(), 0, "errors change nothing");
    assert!(!err.is_fatal());
    assert_eq!(lessor.leases(), vec![id(5)]);
}

#[test]
fn generated_ids_are_the_same_on_every_replica() {
    let clock = ManualClock::new();
    let seeded = LessorConfig {
        id_seed: 99,
        ..config()
    };
    let mut a = Lessor::new(seeded.clone()).unwrap();
    let mut b = Lessor::new(seeded).unwrap();
    a.promote(clock.now());
    let ids_a: Vec<LeaseId> = (0..5)
        .map(|_| a.grant(None, 10, clock.now()).unwrap().id)
        .collect();
    let ids_b: Vec<LeaseId> = (0..5)
        .map(|_| b.grant(None, 10, clock.now()).unwrap().id)
        .collect();
    assert_eq!(ids_a, ids_b);
    assert!(ids_a.iter().all(|i| i.get() > 0));
    assert_eq!(a.id_counter(), 5);
    assert!(a.drain_changes().any(|c| c == Change::IdCounter(5)));
    // A client id that takes the next generated id makes the generator skip it.
    let mut c = Lessor::new(LessorConfig {
        id_seed: 99,
        ..config()
    })
    .unwrap();
    c.grant(Some(ids_a[0]), 10, clock.now()).unwrap();
    assert_eq!(c.grant(None, 10, clock.now()).unwrap().id, ids_a[1]);
}

#[test]
fn expiry_is_never_early_and_at_most_one_tick_late() {
    let clock = ManualClock::new();
    clock.set(ms(50));
    let mut lessor = primary(&clock);
    lessor.grant(Some(id(1)), 10, clock.now()).unwrap();
    // Deadline 10.050 s; tick 100 ms: reported at the first tick boundary at or after it.
    clock.set(ms(10_049));
    assert!(lessor.tick(clock.now(), 10).expired.is_empty());
    clock.set(ms(10_050));
    assert!(
        lessor.tick(clock.now(), 10).expired.is_empty(),
        "tick 100.5 not reached"
    );
    clock.set(ms(10_099));
    assert!(lessor.tick(clock.now(), 10).expired.is_empty());
    clock.set(ms(10_100));
    assert_eq!(expired_ids(&lessor.tick(clock.now(), 10)), vec![id(1)]);
    let ttl = lessor.time_to_live(id(1), clock.now(), false).unwrap();
    assert_eq!(ttl.remaining, Duration::ZERO);
}

#[test]
fn expired_lease_is_reported_again_until_revoked() {
    let clock = ManualClock::new();
    let mut lessor = primary(&clock);
    lessor.grant(Some(id(1)), 5, clock.now()).unwrap();
    clock.advance(Duration::from_secs(5));
    assert_eq!(lessor.tick(clock.now(), 10).expired.len(), 1);
    clock.advance(Duration::from_millis(2900));
    assert!(lessor.tick(clock.now(), 10).expired.is_empty());
    clock.advance(Duration::from_millis(100));
    let due = lessor.tick(clock.now(), 10);
    assert_eq!(expired_ids(&due), vec![id(1)], "retried after 3 s");
    assert_eq!(lessor.revoke_expired(due.expired[0]), Some(vec![]));
    assert_eq!(lessor.revoke_expired(due.expired[0]), None, "already gone");
    assert!(lessor.is_empty());
}

#[test]
fn renew_after_an_expiry_report_voids_the_stale_revoke() {
    let clock = ManualClock::new();
    let mut lessor = primary(&clock);
    lessor.grant(Some(id(1)), 5, clock.now()).unwrap();
    lessor.attach(id(1), "k".into()).unwrap();
    clock.advance(Duration::from_secs(5));
    let due = lessor.tick(clock.now(), 10);
    assert_eq!(expired_ids(&due), vec![id(1)]);
    // The keep-alive was ordered before the revoke in the log.
    assert_eq!(lessor.renew(id(1), clock.now()).unwrap(), 5);
    assert_eq!(lessor.revoke_expired(due.expired[0]), None);
    assert!(lessor.lease(id(1)).is_some());
    clock.advance(Duration::from_millis(4900));
    assert!(lessor.tick(clock.now(), 10).expired.is_empty());
    clock.advance(Duration::from_millis(100));
    assert_eq!(expired_ids(&lessor.tick(clock.now(), 10)), vec![id(1)]);
}

#[test]
fn revoke_returns_sorted_keys_and_detach_reattach_follow_puts() {
    let clock = ManualClock::new();
    let mut lessor = primary(&clock);
    lessor.grant(Some(id(1)), 10, clock.now()).unwrap();
    lessor.grant(Some(id(2)), 10, clock.now()).unwrap();
    lessor.drain_changes();
    for key in ["c", "a", "b", "a"] {
        lessor.attach(id(1), key.into()).unwrap();
    }
    // Re-put of "b" with lease 2.
    lessor.detach(id(1), b"b").unwrap();
    lessor.attach(id(2), "b".into()).unwrap();
    lessor.detach(id(1), b"zz").unwrap();
    assert_eq!(
        lessor.drain_changes().collect::<Vec<_>>(),
        vec![
            Change::Attach(id(1), "c".into()),
            Change::Attach(id(1), "a".into()),
            Change::Attach(id(1), "b".into()),
            Change::Detach(id(1), "b".into()),
            Change::Attach(id(2), "b".into()),
        ]
    );
    let ttl = lessor.time_to_live(id(1), clock.now(), true).unwrap();
    assert_eq!(ttl.keys, vec![Bytes::from("a"), Bytes::from("c")]);
    assert_eq!(ttl.granted_ttl_secs, 10);
    assert_eq!(
        lessor.revoke(id(1)).unwrap(),
        vec![Bytes::from("a"), Bytes::from("c")]
    );
    assert_eq!(
        lessor.drain_changes().collect::<Vec<_>>(),
        vec![Change::Delete(id(1))]
    );
    assert_eq!(lessor.revoke(id(2)).unwrap(), vec![Bytes::from("b")]);
    lessor.check_invariants();
}

#[test]
fn checkpoint_lowers_remaining_and_a_new_primary_resumes_it() {
    let clock = ManualClock::new();
    let mut old = primary(&clock);
    let mut new = Lessor::new(config()).unwrap();
    for lessor in [&mut old, &mut new] {
        lessor.grant(Some(id(1)), 300, clock.now()).unwrap();
    }
    clock.advance(Duration::from_secs(60));
    let due = old.tick(clock.now(), 10);
    assert!(due.expired.is_empty());
    assert_eq!(due.checkpoints.len(), 1);
    assert_eq!(due.checkpoints[0].remaining, Duration::from_secs(240));
    for lessor in [&mut old, &mut new] {
        assert!(lessor.apply_checkpoint(&due.checkpoints[0]));
        assert_eq!(
            lessor.lease(id(1)).unwrap().remaining,
            Duration::from_secs(240)
        );
    }
    // Follower view: the persisted remaining.
    let ttl = new.time_to_live(id(1), clock.now(), false).unwrap();
    assert_eq!(ttl.remaining, Duration::from_secs(240));
    clock.advance(Duration::from_secs(30));
    old.demote();
    assert_eq!(
        old.tick(clock.now(), 10),
        Due::default(),
        "demoted: no reports"
    );
    new.promote(clock.now());
    // 240 s remaining + 1 s grace from the promotion.
    clock.advance(Duration::from_secs(240));
    assert!(new.tick(clock.now(), 10).expired.is_empty());
    clock.advance(Duration::from_secs(1));
    assert_eq!(expired_ids(&new.tick(clock.now(), 10)), vec![id(1)]);
}

/// Regression for the class of etcd issue 13491: a checkpoint computed before a renew but
/// applied after it must not shorten the renewed lease on a later leader.
#[test]
fn stale_checkpoint_applied_after_a_renew_is_ignored() {
    let clock = ManualClock::new();
    let mut old = primary(&clock);
    let mut new = Lessor::new(config()).unwrap();
    for lessor in [&mut old, &mut new] {
        lessor.grant(Some(id(1)), 100, clock.now()).unwrap();
    }
    clock.advance(Duration::from_secs(90));
    let stale = old.tick(clock.now(), 10).checkpoints;
    assert_eq!(stale[0].remaining, Duration::from_secs(10));
    for lessor in [&mut old, &mut new] {
        lessor.renew(id(1), clock.now()).unwrap();
        assert!(!lessor.apply_checkpoint(&stale[0]), "renew count moved on");
        assert_eq!(
            lessor.lease(id(1)).unwrap().remaining,
            Duration::from_secs(100)
        );
    }
    old.demote();
    new.promote(clock.now());
    clock.advance(Duration::from_secs(100));
    assert!(
        new.tick(clock.now(), 10).expired.is_empty(),
        "full TTL after the renew"
    );
}

#[test]
fn checkpoints_only_lower_and_only_when_due() {
    let clock = ManualClock::new();
    let mut lessor = primary(&clock);
    lessor.grant(Some(id(1)), 30, clock.now()).unwrap();
    lessor.grant(Some(id(2)), 600, clock.now()).unwrap();
    clock.advance(Duration::from_secs(59));
    let due = lessor.tick(clock.now(), 10);
    assert_eq!(expired_ids(&due), vec![id(1)]);
    assert!(due.checkpoints.is_empty(), "not due before 60 s");
    clock.advance(Duration::from_secs(1));
    let due = lessor.tick(clock.now(), 10);
    assert_eq!(due.checkpoints.len(), 1);
    let first = due.checkpoints[0];
    assert!(lessor.apply_checkpoint(&first));
    clock.advance(Duration::from_secs(60));
    let second = lessor.tick(clock.now(), 10).checkpoints[0];
    assert_eq!(second.remaining, Duration::from_secs(480));
    assert!(lessor.apply_checkpoint(&second));
    assert!(
        lessor.apply_checkpoint(&first),
        "older checkpoint matches ..."
    );
    let record = lessor.lease(id(2)).unwrap();
    assert_eq!(
        record.remaining,
        Duration::from_secs(480),
        "... but never raises"
    );
    assert!(!lessor.apply_checkpoint(&Checkpoint { id: id(9), ..first }));
}

#[test]
fn without_checkpoints_frequent_leader_changes_keep_a_lease_alive() {
    // Documents why checkpoints are on by default (etcd issue 9888).
    let clock = ManualClock::new();
    let mut lessor = Lessor::new(LessorConfig {
        checkpoint_interval: None,
        ..config()
    })
    .unwrap();
    lessor.promote(clock.now());
    lessor.grant(Some(id(1)), 10, clock.now()).unwrap();
    for _ in 0..20 {
        clock.advance(Duration::from_secs(8));
        assert!(lessor.tick(clock.now(), 10).expired.is_empty());
        lessor.demote();
        lessor.promote(clock.now());
    }
    assert!(
        lessor.lease(id(1)).is_some(),
        "alive after 160 s with a 10 s TTL"
    );
}

#[test]
fn tick_returns_bounded_batches() {
    let clock = ManualClock::new();
    let mut lessor = primary(&clock);
    for n in 1..=100 {
        lessor.grant(Some(id(n)), 10, clock.now()).unwrap();
    }
    clock.advance(Duration::from_secs(10));
    let mut seen = Vec::new();
    for expected in [30, 30, 30, 10, 0] {
        let due = lessor.tick(clock.now(), 30);
        assert_eq!(due.expired.len(), expected);
        seen.extend(due.expired.iter().map(|e| e.id));
    }
    seen.sort_unstable();
    assert_eq!(seen, (1..=100).map(id).collect::<Vec<_>>());
    assert_eq!(lessor.tick(clock.now(), 0), Due::default());
}

#[test]
fn non_primary_reports_nothing_and_keeps_deadlines_unscheduled() {
    let clock = ManualClock::new();
    let mut lessor = Lessor::new(config()).unwrap();
    lessor.grant(Some(id(1)), 5, clock.now()).unwrap();
    lessor.renew(id(1), clock.now()).unwrap();
    clock.advance(Duration::from_secs(100));
    assert_eq!(lessor.tick(clock.now(), 10), Due::default());
    lessor.check_invariants();
    let ttl = lessor.time_to_live(id(1), clock.now(), false).unwrap();
    assert_eq!(ttl.remaining, Duration::from_secs(5));
}

#[test]
fn restore_round_trips_persisted_state() {
    let clock = ManualClock::new();
    let mut lessor = primary(&clock);
    lessor.grant(Some(id(-3)), 50, clock.now()).unwrap();
    lessor.grant(None, 70, clock.now()).unwrap();
    lessor.attach(id(-3), "x".into()).unwrap();
    lessor.renew(id(-3), clock.now()).unwrap();
    let persisted = lessor.to_persisted();
    let restored = Lessor::restore(config(), persisted.clone()).unwrap();
    assert!(!restored.is_primary());
    assert_eq!(restored.to_persisted(), persisted);
    restored.check_invariants();
    let mut broken = persisted.clone();
    broken.attachments.push((id(77), "y".into()));
    assert!(Lessor::restore(config(), broken).unwrap_err().is_fatal());
    let mut broken = persisted;
    broken.leases.push(broken.leases[0]);
    assert!(Lessor::restore(config(), broken).is_err(), "duplicate id");
}

#[test]
fn heap_size_is_accounted_from_capacities() {
    let clock = ManualClock::new();
    let mut lessor = Lessor::new(config()).unwrap();
    assert_eq!(lessor.heap_size_bytes(), 0);
    for n in 1..=1000 {
        lessor.grant(Some(id(n)), 10, clock.now()).unwrap();
    }
    let per_lease = lessor.heap_size_bytes() / 1000;
    assert!(
        (64..200).contains(&per_lease),
        "{per_lease} bytes per lease"
    );
    assert_eq!(hash_table_bytes(7, 12), 8 * 13 + 16);
    assert_eq!(hash_table_bytes(14, 12), 16 * 13 + 16);
}

#[test]
fn renew_right_after_an_expiry_report_keeps_the_one_tick_bound() {
    // The report re-files the lease at the retry time (3 s); a renew with a 2 s TTL must pull
    // it back to the new deadline instead of leaving it there.
    let clock = ManualClock::new();
    let mut lessor = primary(&clock);
    lessor.grant(Some(id(1)), 2, clock.now()).unwrap();
    clock.advance(Duration::from_secs(2));
    let due = lessor.tick(clock.now(), 10);
    assert_eq!(expired_ids(&due), vec![id(1)]);
    lessor.renew(id(1), clock.now()).unwrap();
    assert_eq!(lessor.revoke_expired(due.expired[0]), None);
    clock.advance(Duration::from_millis(1900));
    assert!(lessor.tick(clock.now(), 10).expired.is_empty());
    clock.advance(Duration::from_millis(100));
    assert_eq!(expired_ids(&lessor.tick(clock.now(), 10)), vec![id(1)]);
}

#[test]
fn frequent_renews_do_not_trigger_checkpoints() {
    // Renews leave the wheel entry in place (lazy); when it fires early it must re-file itself
    // without emitting a checkpoint, since the renew refreshed the persisted remaining TTL.
    let clock = ManualClock::new();
    let mut lessor = primary(&clock);
    lessor.grant(Some(id(1)), 90, clock.now()).unwrap();
    for _ in 0..300 {
        clock.advance(Duration::from_secs(1));
        lessor.renew(id(1), clock.now()).unwrap();
        let due = lessor.tick(clock.now(), 10);
        assert_eq!(due, Due::default(), "at {:?}", clock.now());
    }
    // Abandoned: checkpoints resume one interval later, expiry one TTL later.
    clock.advance(Duration::from_secs(59));
    assert!(lessor.tick(clock.now(), 10).checkpoints.is_empty());
    clock.advance(Duration::from_secs(1));
    let due = lessor.tick(clock.now(), 10);
    assert_eq!(due.checkpoints.len(), 1);
    assert_eq!(due.checkpoints[0].remaining, Duration::from_secs(30));
    clock.advance(Duration::from_secs(30));
    assert_eq!(expired_ids(&lessor.tick(clock.now(), 10)), vec![id(1)]);
}

#[test]
fn renew_many_matches_renew_one_by_one() {
    let clock = ManualClock::new();
    let (mut one, mut many) = (primary(&clock), primary(&clock));
    for n in 1..=40 {
        for lessor in [&mut one, &mut many] {
            lessor.grant(Some(id(n)), 5 + n % 7, clock.now()).unwrap();
            lessor.drain_changes();
        }
    }
    one.revoke(id(13)).unwrap();
    many.revoke(id(13)).unwrap();
    // Repeats, an unknown id (41), a revoked one (13), out of order.
    let batch: Vec<LeaseId> = [3, 41, 3, 13, 40, 1, 2, 3, 39, 20, 20]
        .into_iter()
        .map(id)
        .collect();
    for step in 1..=8u64 {
        clock.advance(ms(900));
        let sequential: Vec<Result<i64>> =
            batch.iter().map(|l| one.renew(*l, clock.now())).collect();
        assert_eq!(
            many.renew_many(&batch, clock.now()),
            sequential,
            "step {step}"
        );
        assert_eq!(
            one.drain_changes().collect::<Vec<_>>(),
            many.drain_changes().collect::<Vec<_>>()
        );
        assert_eq!(
            expired_ids(&one.tick(clock.now(), 100)),
            expired_ids(&many.tick(clock.now(), 100)),
            "step {step}"
        );
        one.check_invariants();
        many.check_invariants();
    }
    assert_eq!(many.renew_many(&[], clock.now()), Vec::new());
}
