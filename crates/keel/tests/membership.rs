//! Runtime membership over `InMemoryNetwork`: etcd's two-step add (learner, join, catch up,
//! promote), removal (of a follower and of the leader itself), the rules' refusals with etcd's
//! texts, and member records that survive restarts and travel in snapshots.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

use keel::{
    InMemoryNetwork, Node, NodeBuilder, NodeError, ReadConsistency, SnapshotPolicy, Timings,
};
use keel_storage::mvcc::RangeRequest;
use keel_types::{KeyRange, MemberId};
use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(15);

fn timings() -> Timings {
    Timings {
        heartbeat_interval: Duration::from_millis(50),
        election_timeout: Duration::from_millis(300),
        request_timeout: Duration::from_secs(3),
    }
}

fn url(name: &str) -> String {
    format!("unix://{name}")
}

/// Start a member of the first configuration `initial` (ids, named `n<id>`).
async fn start_initial(net: &InMemoryNetwork, id: u64, initial: &[u64], dir: &Path) -> Node {
    start_initial_with(net, id, initial, dir, false).await
}

/// As [`start_initial`], promoting caught-up learners automatically if `auto_promote`.
async fn start_initial_with(
    net: &InMemoryNetwork,
    id: u64,
    initial: &[u64],
    dir: &Path,
    auto_promote: bool,
) -> Node {
    let node = NodeBuilder::new(MemberId::new(id))
        .auto_promote_learners(auto_promote)
        .name(format!("n{id}"))
        .peer_urls([url(&format!("n{id}"))])
        .data_dir(dir)
        .initial_members(initial.iter().map(|i| (MemberId::new(*i), format!("n{i}"))))
        .network(net.endpoint(MemberId::new(id)))
        .timings(timings())
        .snapshot_policy(SnapshotPolicy {
            entries_between: 10,
            catch_up_entries: 0,
        })
        .start()
        .await
        .unwrap();
    net.register(node.id(), node.peer_handler());
    node
}

/// Start a member that was added at runtime, joining through `contacts`.
async fn start_joining(
    net: &InMemoryNetwork,
    id: MemberId,
    name: &str,
    contacts: &[MemberId],
    dir: &Path,
) -> Result<Node, NodeError> {
    let node = NodeBuilder::new(id)
        .name(name)
        .peer_urls([url(name)])
        .data_dir(dir)
        .join_existing(contacts.iter().copied())
        .network(net.endpoint(id))
        .timings(timings())
        .snapshot_policy(SnapshotPolicy {
            entries_between: 10,
            catch_up_entries: 0,
        })
        .start()
        .await?;
    net.register(id, node.peer_handler());
    Ok(node)
}

/// Wait until `node` has applied everything `leader` has in its log.
async fn caught_up(node: &Node, leader: &Node) {
    let target = leader.status().await.unwrap().raft_index;
    node.wait_for_status(DEADLINE, |s| s.applied_index >= target)
        .await
        .unwrap();
}

/// Wait until every node in `nodes` names the same leader among them.
async fn agreed_leader(nodes: &[Node]) -> Node {
    let work = async {
        loop {
            let mut leaders = BTreeSet::new();
            for n in nodes {
                leaders.insert(n.status().await.unwrap().leader);
            }
            if let [Some(l)] = leaders.into_iter().collect::<Vec<_>>()[..] {
                if let Some(n) = nodes.iter().find(|n| n.id() == l) {
                    return n.clone();
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(DEADLINE, work)
        .await
        .expect("no agreed leader")
}

/// Promote `id` once the leader finds it in sync: its view of the learner's progress trails
/// the learner's own apply by a round trip, so "not in sync" is retried until the deadline.
async fn promote(leader: &Node, id: MemberId) -> keel::MemberChange {
    let work = async {
        loop {
            match leader.member_promote(id).await {
                Err(NodeError::Reconfig(keel_membership::MembershipError::LearnerNotReady {
                    ..
                })) => tokio::time::sleep(Duration::from_millis(10)).await,
                other => return other.unwrap(),
            }
        }
    };
    tokio::time::timeout(DEADLINE, work)
        .await
        .expect("learner never in sync")
}

fn voters(members: &[keel::MemberStatus]) -> BTreeSet<MemberId> {
    members
        .iter()
        .filter(|m| !m.is_learner)
        .map(|m| m.id)
        .collect()
}

async fn count(node: &Node, prefix: &str) -> u64 {
    let all = RangeRequest::new(KeyRange::prefix(prefix.as_bytes().to_vec()));
    node.range(&all, ReadConsistency::Serializable)
        .await
        .unwrap()
        .body
        .count
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_to_three_voters_by_add_learner_and_promote_during_writes() {
    let net = InMemoryNetwork::new();
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let n1 = start_initial(&net, 1, &[1], dirs[0].path()).await;
    n1.wait_for_leader(DEADLINE).await.unwrap();

    // A writer keeps writing through n1 while the cluster grows.
    let writer = {
        let n1 = n1.clone();
        tokio::spawn(async move {
            for i in 0..150u32 {
                n1.put(format!("w/{i:03}"), "v").await.unwrap();
            }
        })
    };

    let mut nodes = vec![n1.clone()];
    for (pos, name) in [(1, "n2"), (2, "n3")] {
        let added = n1.member_add(name, &[&url(name)]).await.unwrap();
        let id = added.member_id;
        let record = added.members.iter().find(|m| m.id == id).unwrap();
        assert!(record.is_learner, "member_add adds a learner: {record:?}");
        assert_eq!(record.name, name);
        let node = start_joining(&net, id, name, &[n1.id()], dirs[pos].path())
            .await
            .unwrap();
        caught_up(&node, &n1).await;
        let promoted = promote(&n1, id).await;
        assert!(voters(&promoted.members).contains(&id));
        nodes.push(node);
    }
    writer.await.unwrap();

    let members = n1.members().await.unwrap();
    assert_eq!(voters(&members).len(), 3, "{members:?}");
    for n in &nodes {
        caught_up(n, &n1).await;
        assert_eq!(count(n, "w/").await, 150);
        assert_eq!(
            n.members().await.unwrap(),
            members,
            "records agree on {}",
            n.id()
        );
        assert!(!n.status().await.unwrap().is_learner);
    }

    // The member list survives a restart of every member.
    for n in &nodes {
        n.shutdown().await;
    }
    let n1 = start_initial(&net, 1, &[1], dirs[0].path()).await;
    let mut restarted = vec![n1.clone()];
    for m in members.iter().filter(|m| m.id != n1.id()) {
        let dir = dirs[nodes.iter().position(|n| n.id() == m.id).unwrap()].path();
        restarted.push(
            start_joining(&net, m.id, &m.name, &[n1.id()], dir)
                .await
                .unwrap(),
        );
    }
    let leader = agreed_leader(&restarted).await;
    for n in &restarted {
        assert_eq!(n.members().await.unwrap(), members);
    }
    leader.put(&b"after-restart"[..], &b"x"[..]).await.unwrap();
    for n in &restarted {
        let got = n.get(&b"after-restart"[..]).await.unwrap();
        assert!(got.body.is_some());
    }
    for n in &restarted {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_auto_promote_the_leader_promotes_a_caught_up_learner_by_itself() {
    let net = InMemoryNetwork::new();
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let n1 = start_initial_with(&net, 1, &[1], dirs[0].path(), true).await;
    n1.wait_for_leader(DEADLINE).await.unwrap();
    for i in 0..30u32 {
        n1.put(format!("w/{i:03}"), "v").await.unwrap();
    }
    let added = n1.member_add("n2", &[&url("n2")]).await.unwrap();
    let id = added.member_id;
    assert!(!voters(&added.members).contains(&id), "added as a learner");
    let n2 = start_joining(&net, id, "n2", &[n1.id()], dirs[1].path())
        .await
        .unwrap();
    // Nobody calls member_promote: the leader does once n2 is in sync.
    let work = async {
        loop {
            if voters(&n1.members().await.unwrap()).contains(&id) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(DEADLINE, work)
        .await
        .expect("the learner was never promoted");
    n2.wait_for_status(DEADLINE, |s| !s.is_learner)
        .await
        .unwrap();
    // Two voters now: a write needs both, and reaches n2.
    n1.put(&b"after"[..], &b"x"[..]).await.unwrap();
    caught_up(&n2, &n1).await;
    assert_eq!(count(&n2, "w/").await, 30);
    n2.shutdown().await;
    n1.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn learner_catches_up_by_snapshot_then_promote_remove_voter_and_remove_leader() {
    let net = InMemoryNetwork::new();
    let dirs: Vec<_> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut nodes = Vec::new();
    for id in 1..=3u64 {
        nodes.push(start_initial(&net, id, &[1, 2, 3], dirs[id as usize - 1].path()).await);
    }
    let leader = agreed_leader(&nodes).await;
    for i in 0..40u32 {
        leader.put(format!("k/{i:02}"), "v").await.unwrap();
    }
    leader
        .wait_for_status(DEADLINE, |s| s.purged_index.is_some_and(|p| p > 10))
        .await
        .unwrap();

    // A fourth member, added as a learner, catches up through a snapshot (the log it needs
    // is purged) that carries the member records too.
    let added = leader.member_add("n4", &[&url("n4")]).await.unwrap();
    let n4 = start_joining(&net, added.member_id, "n4", &[leader.id()], dirs[3].path())
        .await
        .unwrap();
    caught_up(&n4, &leader).await;
    let s4 = n4.status().await.unwrap();
    assert!(s4.is_learner);
    assert!(s4.snapshot_index.is_some(), "caught up by snapshot: {s4:?}");
    assert_eq!(count(&n4, "k/").await, 40);
    assert_eq!(n4.members().await.unwrap(), leader.members().await.unwrap());

    let promoted = promote(&leader, n4.id()).await;
    assert_eq!(voters(&promoted.members).len(), 4);
    nodes.push(n4.clone());

    // Remove a follower voter.
    let follower = nodes
        .iter()
        .find(|n| n.id() != leader.id() && n.id() != n4.id())
        .unwrap()
        .clone();
    let after = leader.member_remove(follower.id()).await.unwrap();
    assert!(after.members.iter().all(|m| m.id != follower.id()));
    assert_eq!(voters(&after.members).len(), 3);
    follower.shutdown().await;
    nodes.retain(|n| n.id() != follower.id());
    leader.put(&b"after-remove"[..], &b"x"[..]).await.unwrap();

    // The leader removes itself: a new leader takes over and writes continue.
    let after = leader.member_remove(leader.id()).await.unwrap();
    assert!(after.members.iter().all(|m| m.id != leader.id()));
    leader.shutdown().await;
    nodes.retain(|n| n.id() != leader.id());
    let new_leader = agreed_leader(&nodes).await;
    assert_ne!(new_leader.id(), leader.id());
    for i in 0..5u32 {
        new_leader.put(format!("k2/{i}"), "v").await.unwrap();
    }
    for n in &nodes {
        caught_up(n, &new_leader).await;
        assert_eq!(count(n, "k2/").await, 5);
        let members = n.members().await.unwrap();
        assert_eq!(voters(&members).len(), 2, "{members:?}");
    }

    // A removed id can never come back.
    let err = new_leader
        .member_add_with_id(follower.id(), "again", &[&url("again")], true)
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "etcdserver: ID removed");
    for n in &nodes {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_carry_etcds_texts() {
    let net = InMemoryNetwork::new();
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut nodes = Vec::new();
    for id in 1..=3u64 {
        nodes.push(start_initial(&net, id, &[1, 2, 3], dirs[id as usize - 1].path()).await);
    }
    let leader = agreed_leader(&nodes).await;
    leader.put(&b"k"[..], &b"v"[..]).await.unwrap();

    // A learner that never started has replicated nothing: not in sync.
    let added = leader.member_add("n9", &[&url("n9")]).await.unwrap();
    let err = leader.member_promote(added.member_id).await.unwrap_err();
    assert!(matches!(err, NodeError::Reconfig(_)), "{err:?}");
    assert_eq!(
        err.to_string(),
        "etcdserver: can only promote a learner member which is in sync with leader"
    );
    // The same URLs cannot be added twice.
    let err = leader.member_add("n9b", &[&url("n9")]).await.unwrap_err();
    assert_eq!(err.to_string(), "etcdserver: Peer URLs already exists");
    // Membership calls made on a follower are served by the leader.
    let follower = nodes.iter().find(|n| n.id() != leader.id()).unwrap();
    let removed = follower.member_remove(added.member_id).await.unwrap();
    assert!(removed.members.iter().all(|m| m.id != added.member_id));

    // Isolate one follower; removing the other would leave {leader, isolated}: no quorum.
    let followers: Vec<&Node> = nodes.iter().filter(|n| n.id() != leader.id()).collect();
    let (isolated, other) = (followers[0].id(), followers[1].id());
    net.isolate(isolated);
    let work = async {
        while leader
            .reachable_members()
            .await
            .unwrap()
            .contains(&isolated)
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(DEADLINE, work).await.unwrap();
    let err = leader.member_remove(other).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "etcdserver: re-configuration failed due to not enough started members"
    );
    assert_eq!(voters(&leader.members().await.unwrap()).len(), 3);
    // The learner removed above cannot be removed (or added) again.
    let err = leader.member_remove(added.member_id).await.unwrap_err();
    assert_eq!(err.to_string(), "etcdserver: ID removed");

    net.heal();
    for n in &nodes {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_was_not_added_cannot_join() {
    let net = InMemoryNetwork::new();
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let n1 = start_initial(&net, 1, &[1], dirs[0].path()).await;
    n1.wait_for_leader(DEADLINE).await.unwrap();
    let added = n1.member_add("n2", &[&url("n2")]).await.unwrap();
    // Another name and peer URL than the added id was given.
    let err = start_joining(&net, added.member_id, "other", &[n1.id()], dirs[1].path())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            NodeError::Reconfig(keel_membership::MembershipError::MemberNotAdded { .. })
        ),
        "{err:?}"
    );
    n1.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_update_changes_peer_urls_under_the_rules() {
    let net = InMemoryNetwork::new();
    let dir = tempfile::tempdir().unwrap();
    let n1 = start_initial(&net, 1, &[1], dir.path()).await;
    n1.wait_for_leader(DEADLINE).await.unwrap();
    let added = n1.member_add("n2", &[&url("n2")]).await.unwrap();
    let id = added.member_id;

    let updated = n1.member_update(id, &[&url("n2b")]).await.unwrap();
    let record = updated.members.iter().find(|m| m.id == id).unwrap();
    assert_eq!(record.peer_urls, vec![url("n2b")]);
    assert_eq!(record.name, "n2", "the name is kept");
    assert!(record.is_learner, "the role is kept");

    let err = n1.member_update(id, &[&url("n1")]).await.unwrap_err();
    assert_eq!(err.to_string(), "etcdserver: Peer URLs already exists");
    let err = n1
        .member_update(MemberId::new(4242), &[&url("x")])
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "etcdserver: member not found");
    let err = n1.member_update(id, &["ftp://n2"]).await.unwrap_err();
    assert!(matches!(err, NodeError::Reconfig(_)), "{err:?}");
    assert_eq!(n1.members().await.unwrap(), updated.members);
    n1.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_calls_on_a_follower_reach_the_leader_and_leadership_moves() {
    let net = InMemoryNetwork::new();
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut nodes = Vec::new();
    for (i, dir) in dirs.iter().enumerate() {
        nodes.push(start_initial(&net, i as u64 + 1, &[1, 2, 3], dir.path()).await);
    }
    let leader = agreed_leader(&nodes).await;
    let follower = nodes
        .iter()
        .find(|n| n.id() != leader.id())
        .unwrap()
        .clone();

    // Add, update and remove a learner, all asked of a follower.
    let added = follower.member_add("n9", &[&url("n9")]).await.unwrap();
    let id = added.member_id;
    let record = added.members.iter().find(|m| m.id == id).unwrap();
    assert!(record.is_learner);
    assert_eq!(record.name, "n9");
    let updated = follower.member_update(id, &[&url("n9b")]).await.unwrap();
    let record = updated.members.iter().find(|m| m.id == id).unwrap();
    assert_eq!(record.peer_urls, vec![url("n9b")]);
    assert_eq!(record.name, "n9");
    follower.member_remove(id).await.unwrap();
    // The leader's refusal comes back with etcd's text.
    let refused = follower.member_remove(id).await.unwrap_err();
    assert!(
        matches!(refused, NodeError::ReconfigRejected { .. }),
        "a rules refusal, not a retryable one: {refused:?}"
    );
    assert!(
        refused.to_string().contains("etcdserver: ID removed"),
        "{refused}"
    );

    // A follower publishes its client URLs; every member's records show them.
    follower
        .publish_client_urls(&["http://127.0.0.1:23790"])
        .await
        .unwrap();
    let members = leader.members().await.unwrap();
    let record = members.iter().find(|m| m.id == follower.id()).unwrap();
    assert_eq!(
        record.client_urls,
        vec!["http://127.0.0.1:23790".to_owned()]
    );

    // Leadership moves on the leader's request only.
    assert!(matches!(
        follower.move_leader(follower.id()).await,
        Err(NodeError::NotLeader { .. })
    ));
    leader.move_leader(follower.id()).await.unwrap();
    assert_eq!(agreed_leader(&nodes).await.id(), follower.id());

    // Every member hashes the same keyspace identically.
    let put = follower.put("h", "v").await.unwrap();
    let rev = Some(put.header.revision);
    let mut hashes = BTreeSet::new();
    for n in &nodes {
        n.wait_for_status(DEADLINE, |s| s.header.revision >= put.header.revision)
            .await
            .unwrap();
        hashes.insert(n.hash_kv(rev).await.unwrap().body.hash);
    }
    assert_eq!(hashes.len(), 1);
    // The state export is readable and checksummed chunk by chunk.
    let chunks: Vec<Vec<u8>> = leader.snapshot().unwrap().map(|c| c.unwrap()).collect();
    assert!(!chunks.is_empty());
    for n in &nodes {
        n.shutdown().await;
    }
}
