//! Property tests of the reconfiguration rules against a model: for random sequences of
//! requests under random leader views, every accepted change leaves a quorum of reachable
//! voters in both the old and the new voter set, and no removed id ever comes back.

#![expect(
    clippy::unwrap_used,
    reason = "test helpers outside #[test] fns panic on broken fixtures"
)]

use keel_membership::{
    ChangeRequest, Cluster, LogIndex, Member, MemberUrl, MembershipError, ReconfigContext,
    ReconfigRules,
};
use keel_types::{ClusterId, MemberId};
use proptest::prelude::*;
use std::collections::BTreeSet;

const IDS: u64 = 10;

#[derive(Clone, Debug)]
enum Op {
    Add { id: u64, learner: bool },
    Promote(u64),
    Remove(u64),
    Replace { old: u64, learner: u64 },
    Update { id: u64, port: u16 },
}

#[derive(Clone, Debug)]
struct Turn {
    op: Op,
    leader_pick: usize,
    reachable_mask: u16,
    caught_up_mask: u16,
}

fn arb_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (1..=IDS, any::<bool>()).prop_map(|(id, learner)| Op::Add { id, learner }),
        3 => (1..=IDS).prop_map(Op::Promote),
        2 => (1..=IDS).prop_map(Op::Remove),
        1 => (1..=IDS, 1..=IDS).prop_map(|(old, learner)| Op::Replace { old, learner }),
        1 => (1..=IDS, 3000u16..3004).prop_map(|(id, port)| Op::Update { id, port }),
    ]
}

fn arb_turn() -> impl Strategy<Value = Turn> {
    (arb_op(), any::<usize>(), any::<u16>(), any::<u16>()).prop_map(
        |(op, leader_pick, reachable_mask, caught_up_mask)| Turn {
            op,
            leader_pick,
            reachable_mask,
            caught_up_mask,
        },
    )
}

fn url(id: u64) -> MemberUrl {
    MemberUrl::parse(&format!("http://m{id}:2380")).unwrap()
}

fn request(op: &Op) -> ChangeRequest {
    let m = MemberId::new;
    match *op {
        Op::Add { id, learner } => ChangeRequest::Add {
            id: m(id),
            peer_urls: vec![url(id)],
            is_learner: learner,
        },
        Op::Promote(id) => ChangeRequest::Promote { id: m(id) },
        Op::Remove(id) => ChangeRequest::Remove { id: m(id) },
        Op::Replace { old, learner } => ChangeRequest::Replace {
            old: m(old),
            learner: m(learner),
        },
        Op::Update { id, port } => ChangeRequest::UpdatePeerUrls {
            id: m(id),
            peer_urls: vec![MemberUrl::parse(&format!("http://m{id}:{port}")).unwrap()],
        },
    }
}

fn context(cluster: &Cluster, turn: &Turn) -> ReconfigContext {
    let voters: Vec<MemberId> = cluster.voters().into_iter().collect();
    let leader = voters[turn.leader_pick % voters.len()];
    let mut ctx = ReconfigContext::new(leader, LogIndex::new(1000));
    for i in 1..=IDS {
        if turn.reachable_mask & (1 << i) != 0 {
            ctx.reachable.insert(MemberId::new(i));
        }
        let matched = if turn.caught_up_mask & (1 << i) != 0 {
            950
        } else {
            100
        };
        ctx.matched.insert(MemberId::new(i), LogIndex::new(matched));
    }
    ctx
}

fn reachable_count(voters: &BTreeSet<MemberId>, ctx: &ReconfigContext) -> usize {
    voters.iter().filter(|v| ctx.is_reachable(**v)).count()
}

fn mentions_removed(op: &Op, removed: &BTreeSet<MemberId>) -> bool {
    let ids = match *op {
        Op::Add { id, .. } | Op::Promote(id) | Op::Remove(id) | Op::Update { id, .. } => vec![id],
        Op::Replace { old, learner } => vec![old, learner],
    };
    ids.into_iter().any(|i| removed.contains(&MemberId::new(i)))
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 512,
        rng_seed: proptest::test_runner::RngSeed::Fixed(0x6b65_656c),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn accepted_changes_keep_a_reachable_quorum_and_removed_ids_stay_out(
        turns in proptest::collection::vec(arb_turn(), 1..60)
    ) {
        let first = Member::new(MemberId::new(1), vec![url(1)], false).unwrap();
        let mut cluster = Cluster::new(ClusterId::new(1), vec![first], BTreeSet::new()).unwrap();
        let rules = ReconfigRules::default();
        let mut ever_removed: BTreeSet<MemberId> = BTreeSet::new();
        for turn in &turns {
            let ctx = context(&cluster, turn);
            let result = rules.plan(&cluster, &ctx, request(&turn.op));
            match result {
                Ok(plan) => {
                    prop_assert!(!mentions_removed(&turn.op, &ever_removed), "accepted {:?} naming a removed id", turn.op);
                    let (old, new) = (cluster.voters(), plan.next.voters());
                    if old != new {
                        prop_assert!(reachable_count(&old, &ctx) > old.len() / 2);
                        prop_assert!(reachable_count(&new, &ctx) > new.len() / 2);
                    }
                    plan.next.check_invariants().unwrap();
                    let mut applied = cluster.clone();
                    applied.apply(&plan.change).unwrap();
                    prop_assert_eq!(&applied, &plan.next);
                    prop_assert!(cluster.removed().is_subset(plan.next.removed()));
                    prop_assert!(plan.next.learners().len() <= rules.config().learners_max.max(cluster.learners().len()));
                    cluster = plan.next;
                    ever_removed.extend(cluster.removed().iter().copied());
                }
                Err(e) => {
                    if let Op::Add { id, .. } = turn.op {
                        if ever_removed.contains(&MemberId::new(id)) {
                            prop_assert_eq!(e, MembershipError::IdRemoved { id: MemberId::new(id) });
                        }
                    }
                }
            }
            for id in &ever_removed {
                prop_assert!(cluster.member(*id).is_none(), "removed id {} came back", id);
            }
            prop_assert!(!cluster.voters().is_empty());
        }
    }
}

/// A regression-style check that the property is not vacuous: the generator does reach
/// removals and multi-voter clusters.
#[test]
fn the_model_reaches_interesting_states() {
    let rules = ReconfigRules::default();
    let first = Member::new(MemberId::new(1), vec![url(1)], false).unwrap();
    let mut cluster = Cluster::new(ClusterId::new(1), vec![first], BTreeSet::new()).unwrap();
    let all = Turn {
        op: Op::Remove(0),
        leader_pick: 0,
        reachable_mask: u16::MAX,
        caught_up_mask: u16::MAX,
    };
    for op in [
        Op::Add {
            id: 2,
            learner: true,
        },
        Op::Promote(2),
        Op::Add {
            id: 3,
            learner: true,
        },
        Op::Promote(3),
        Op::Remove(2),
    ] {
        let turn = Turn { op, ..all.clone() };
        let plan = rules
            .plan(&cluster, &context(&cluster, &turn), request(&turn.op))
            .unwrap();
        cluster = plan.next;
    }
    assert_eq!(cluster.to_string(), "voters=1,3 learners= removed=2");
}
