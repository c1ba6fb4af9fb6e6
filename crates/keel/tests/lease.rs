//! Leases in the node: grant/attach/revoke in one revision, expiry exactly once with a manual
//! clock, keep-alives, remaining TTL resumed across a leader change, typed errors for unknown
//! leases, persistence across restart.
//!
//! Time: every node gets a `ManualClock`; the lease driver paces its ticks with the runtime
//! but reads time only from that clock, so a lease can expire only when the test advances it.
//! To know that the driver has looked at the new time, the tests wait for the checkpoint it
//! then proposes (the applied index moves); an expiry found in the same tick would be
//! proposed, and applied, before that checkpoint.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

use futures::StreamExt;
use keel::{
    InMemoryNetwork, LessorConfig, ManualClock, Node, NodeBuilder, NodeError, Timings, WatchStream,
};
use keel_storage::mvcc::{EventKind, PutRequest, RequestOp, TxnRequest};
use keel_storage::watch::WatchSpec;
use keel_types::{KeyRange, LeaseId, MemberId, Revision};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(5);

fn timings() -> Timings {
    Timings {
        heartbeat_interval: Duration::from_millis(50),
        election_timeout: Duration::from_millis(300),
        request_timeout: Duration::from_secs(2),
    }
}

/// 50 ms ticks, a checkpoint once the persisted remaining TTL is 1 s stale, 300 ms grace.
fn lessor() -> LessorConfig {
    LessorConfig {
        election_timeout: Duration::from_millis(300),
        tick: Duration::from_millis(50),
        checkpoint_interval: Some(Duration::from_secs(1)),
        expired_retry: Duration::from_secs(1),
        id_seed: 7,
    }
}

fn builder(id: u64, clock: &ManualClock) -> NodeBuilder {
    NodeBuilder::new(MemberId::new(id))
        .timings(timings())
        .lessor_config(lessor())
        .clock(Arc::new(clock.clone()))
}

async fn single(clock: &ManualClock) -> Node {
    let node = builder(1, clock).start().await.unwrap();
    node.wait_for_leader(DEADLINE).await.unwrap();
    wait_for_lease_primary(&node).await;
    node
}

/// Wait until `node`'s lease driver promoted its lessor, so deadlines count from now.
async fn wait_for_lease_primary(node: &Node) {
    wait_until("lessor promotion", || async {
        node.status().await.unwrap().lease_primary
    })
    .await;
}

/// Poll `condition` until it holds, failing after [`DEADLINE`].
async fn wait_until<F, Fut>(what: &str, condition: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = bool>,
{
    let work = async {
        while !condition().await {
            tokio::time::sleep(POLL).await;
        }
    };
    tokio::time::timeout(DEADLINE, work)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"));
}

fn leased_put(key: &'static [u8], lease: LeaseId) -> PutRequest {
    PutRequest {
        lease: Some(lease),
        ..PutRequest::new(key, &b"v"[..])
    }
}

/// Collect (key, kind, mod revision) until the stream has reported revision `upto`.
async fn collect(stream: &mut WatchStream, upto: Revision) -> Vec<(Vec<u8>, EventKind, u64)> {
    let mut out = Vec::new();
    let work = async {
        loop {
            let item = stream.next().await.expect("stream ended").unwrap();
            for e in item.body.events {
                out.push((e.kv.key.to_vec(), e.kind, e.kv.mod_revision.get()));
            }
            if item.body.revision >= upto {
                return;
            }
        }
    };
    tokio::time::timeout(DEADLINE, work)
        .await
        .expect("watch stalled");
    out
}

/// Advance `clock` and wait until `node`'s driver proposed (and `node` applied) an entry at
/// the new time: the checkpoint of a lease whose persisted TTL went stale.
async fn advance_and_wait_for_tick(node: &Node, clock: &ManualClock, by: Duration) {
    // Metrics may lag the last acknowledged write: start from a quiescent log.
    let before = node
        .wait_for_status(DEADLINE, |s| s.applied_index >= s.raft_index)
        .await
        .unwrap()
        .applied_index;
    clock.advance(by);
    node.wait_for_status(DEADLINE, |s| s.applied_index > before)
        .await
        .unwrap();
}

async fn exists(node: &Node, key: &[u8]) -> bool {
    node.get(key.to_vec()).await.unwrap().body.is_some()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_deletes_the_attached_keys_in_one_revision() {
    let clock = ManualClock::new();
    let node = single(&clock).await;
    let grant = node.lease_grant(60, None).await.unwrap();
    assert_eq!(grant.body.ttl_secs, 60);
    assert_eq!(grant.header.member_id, node.id());
    let id = grant.body.id;
    node.put_request(leased_put(b"s/a", id)).await.unwrap();
    node.put_request(leased_put(b"s/b", id)).await.unwrap();
    // A re-put without the lease detaches the key; a txn put attaches one.
    node.put_request(leased_put(b"s/c", id)).await.unwrap();
    node.put(&b"s/c"[..], &b"kept"[..]).await.unwrap();
    node.txn(TxnRequest {
        success: vec![RequestOp::Put(leased_put(b"s/d", id))],
        ..TxnRequest::default()
    })
    .await
    .unwrap();
    // A deleted key is detached too.
    node.put_request(leased_put(b"s/e", id)).await.unwrap();
    let last = node.delete(&b"s/e"[..]).await.unwrap().header.revision;
    let ttl = node.lease_time_to_live(id, true).await.unwrap().body;
    let keys: Vec<&[u8]> = ttl.keys.iter().map(AsRef::as_ref).collect();
    assert_eq!(keys, vec![&b"s/a"[..], b"s/b", b"s/d"]);
    assert_eq!(node.leases().await.unwrap().body, vec![id]);

    let mut watch = node
        .watch(WatchSpec {
            start_revision: Some(last.next()),
            ..WatchSpec::new(KeyRange::prefix(&b"s/"[..]))
        })
        .await
        .unwrap();
    let revoked = node.lease_revoke(id).await.unwrap();
    let rev = revoked.header.revision;
    assert_eq!(
        rev,
        last.next(),
        "all deletes in the revoke's single revision"
    );
    let events = collect(&mut watch, rev).await;
    let expected: Vec<_> = [&b"s/a"[..], b"s/b", b"s/d"]
        .iter()
        .map(|k| (k.to_vec(), EventKind::Delete, rev.get()))
        .collect();
    assert_eq!(events, expected);
    assert!(exists(&node, b"s/c").await, "the detached key survives");
    assert!(node.leases().await.unwrap().body.is_empty());
    assert_eq!(
        node.lease_revoke(id).await.unwrap_err(),
        NodeError::LeaseNotFound { lease: id }
    );
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_leases_are_typed_errors_and_change_nothing() {
    let clock = ManualClock::new();
    let node = single(&clock).await;
    let unknown = LeaseId::new(99).unwrap();
    let before = node.status().await.unwrap().header.revision;

    let err = node
        .put_request(leased_put(b"k", unknown))
        .await
        .unwrap_err();
    assert_eq!(err, NodeError::LeaseNotFound { lease: unknown });
    assert_eq!(err.to_string(), "etcdserver: requested lease not found");
    let err = node
        .txn(TxnRequest {
            success: vec![
                RequestOp::Put(PutRequest::new(&b"other"[..], &b"v"[..])),
                RequestOp::Put(leased_put(b"k", unknown)),
            ],
            ..TxnRequest::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err, NodeError::LeaseNotFound { lease: unknown });
    assert!(
        !exists(&node, b"other").await,
        "a refused txn writes nothing"
    );
    assert_eq!(node.status().await.unwrap().header.revision, before);

    for err in [
        node.lease_keep_alive(unknown).await.unwrap_err(),
        node.lease_revoke(unknown).await.unwrap_err(),
        node.lease_time_to_live(unknown, true).await.unwrap_err(),
    ] {
        assert_eq!(err, NodeError::LeaseNotFound { lease: unknown });
    }
    let id = node.lease_grant(10, Some(unknown)).await.unwrap().body.id;
    assert_eq!(id, unknown);
    let err = node.lease_grant(10, Some(id)).await.unwrap_err();
    assert_eq!(err.to_string(), "etcdserver: lease already exists");
    let err = node.lease_grant(0, None).await.unwrap_err();
    assert_eq!(err.to_string(), "etcdserver: lease TTL must be positive");
    // Raised to the minimum TTL, ceil(1.5 x 300 ms) = 1 s.
    let short = node.lease_grant(1, None).await.unwrap().body;
    assert_eq!(short.ttl_secs, 1);
    assert_eq!(node.leases().await.unwrap().body.len(), 2);
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_lease_expires_and_its_keys_are_deleted_exactly_once() {
    let clock = ManualClock::new();
    let node = single(&clock).await;
    let id = node.lease_grant(5, None).await.unwrap().body.id;
    // A long lease whose checkpoints show when the driver has looked at the clock.
    let witness = node.lease_grant(60, None).await.unwrap().body.id;
    let put = node.put_request(leased_put(b"e/k", id)).await.unwrap();
    let mut watch = node
        .watch(WatchSpec {
            start_revision: Some(put.header.revision.next()),
            ..WatchSpec::new(KeyRange::prefix(&b"e/"[..]))
        })
        .await
        .unwrap();

    // 4.9 s after the grant the driver checkpoints, and has not expired the lease.
    advance_and_wait_for_tick(&node, &clock, Duration::from_millis(4900)).await;
    assert!(node.leases().await.unwrap().body.contains(&id));
    assert!(exists(&node, b"e/k").await);

    // Past the TTL: expired within a tick.
    clock.advance(Duration::from_millis(200));
    let n = &node;
    wait_until("expiry", || async move { !exists(n, b"e/k").await }).await;
    assert_eq!(node.leases().await.unwrap().body, vec![witness]);

    // Well past the expiry retry, seen by the driver: nothing is revoked twice. The next
    // event after the delete is the marker put.
    advance_and_wait_for_tick(&node, &clock, Duration::from_secs(3)).await;
    advance_and_wait_for_tick(&node, &clock, Duration::from_secs(3)).await;
    let marker = node.put(&b"e/marker"[..], &b"m"[..]).await.unwrap();
    let events = collect(&mut watch, marker.header.revision).await;
    let deleted = marker.header.revision.get() - 1;
    assert_eq!(
        events,
        vec![
            (b"e/k".to_vec(), EventKind::Delete, deleted),
            (
                b"e/marker".to_vec(),
                EventKind::Put,
                marker.header.revision.get()
            ),
        ]
    );
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_alive_lease_never_expires() {
    let clock = ManualClock::new();
    let node = single(&clock).await;
    let id = node.lease_grant(2, None).await.unwrap().body.id;
    let put = node.put_request(leased_put(b"a/k", id)).await.unwrap();
    let mut watch = node
        .watch(WatchSpec {
            start_revision: Some(put.header.revision.next()),
            ..WatchSpec::new(KeyRange::prefix(&b"a/"[..]))
        })
        .await
        .unwrap();
    // 15 s of 1.5 s steps against a 2 s TTL, each step seen by the driver (a checkpoint).
    for _ in 0..10 {
        advance_and_wait_for_tick(&node, &clock, Duration::from_millis(1500)).await;
        let renewed = node.lease_keep_alive(id).await.unwrap();
        assert_eq!(renewed.body.ttl_secs, 2);
        assert_eq!(renewed.body.id, id);
    }
    assert!(exists(&node, b"a/k").await);
    let marker = node.put(&b"a/marker"[..], &b"m"[..]).await.unwrap();
    let events = collect(&mut watch, marker.header.revision).await;
    assert_eq!(events.len(), 1, "no delete while kept alive: {events:?}");

    // Abandoned, it expires.
    clock.advance(Duration::from_millis(2100));
    let n = &node;
    wait_until("expiry", || async move { !exists(n, b"a/k").await }).await;
    node.shutdown().await;
}

/// Wait until every node in `nodes` agrees on one leader among them.
async fn agreed_leader(nodes: &[&Node]) -> MemberId {
    let work = async {
        loop {
            let mut leaders = Vec::new();
            for n in nodes {
                leaders.push(n.wait_for_leader(DEADLINE).await.unwrap());
            }
            let first = leaders[0];
            if leaders.iter().all(|l| *l == first) && nodes.iter().any(|n| n.id() == first) {
                return first;
            }
            tokio::time::sleep(POLL).await;
        }
    };
    tokio::time::timeout(DEADLINE, work)
        .await
        .expect("no agreed leader")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remaining_ttl_is_resumed_across_a_leader_change() {
    let clock = ManualClock::new();
    let net = InMemoryNetwork::new();
    let ids: Vec<MemberId> = (1..=3).map(MemberId::new).collect();
    let mut nodes = Vec::new();
    for id in &ids {
        let node = builder(id.get(), &clock)
            .name(format!("n{id}"))
            .initial_members(ids.iter().map(|i| (*i, format!("n{i}"))))
            .network(net.endpoint(*id))
            .start()
            .await
            .unwrap();
        net.register(*id, node.peer_handler());
        nodes.push(node);
    }
    let all: Vec<&Node> = nodes.iter().collect();
    let old_id = agreed_leader(&all).await;
    let old = nodes.iter().find(|n| n.id() == old_id).unwrap();
    let rest: Vec<&Node> = nodes.iter().filter(|n| n.id() != old_id).collect();

    wait_for_lease_primary(old).await;
    let ttl = Duration::from_secs(10);
    let id = old.lease_grant(10, None).await.unwrap().body.id;
    old.put_request(leased_put(b"l/k", id)).await.unwrap();

    // 4 s later the leader checkpoints the remaining 6 s; the followers apply it.
    let grace = Duration::from_millis(300);
    advance_and_wait_for_tick(old, &clock, Duration::from_secs(4)).await;
    let persisted = rest[0].lease_time_to_live(id, false).await.unwrap().body;
    assert_eq!(persisted.remaining, ttl - Duration::from_secs(4));

    net.isolate(old_id);
    let new_id = agreed_leader(&rest).await;
    let new = rest.iter().find(|n| n.id() == new_id).unwrap();
    // Once promoted, the new leader counts down from the checkpoint plus the 300 ms grace:
    // not reset to the full TTL, not shorter than what is left of it.
    wait_until("promotion", || async {
        new.lease_time_to_live(id, false)
            .await
            .unwrap()
            .body
            .remaining
            > persisted.remaining
    })
    .await;
    let resumed = new.lease_time_to_live(id, true).await.unwrap().body;
    assert_eq!(resumed.remaining, ttl - Duration::from_secs(4) + grace);
    assert_eq!(resumed.keys.len(), 1);

    // Just before that deadline the new leader has ticked (and checkpointed) but not expired
    // the lease; just after, it expires it.
    let before_deadline = resumed.remaining - Duration::from_millis(100);
    advance_and_wait_for_tick(new, &clock, before_deadline).await;
    assert_eq!(new.leases().await.unwrap().body, vec![id]);
    assert!(exists(new, b"l/k").await);
    clock.advance(Duration::from_millis(200));
    wait_until("expiry on the new leader", || async {
        !exists(new, b"l/k").await
    })
    .await;

    // The old leader rejoins and converges on the same state.
    net.rejoin(old_id);
    wait_until("old leader catches up", || async {
        matches!(old.get(&b"l/k"[..]).await, Ok(r) if r.body.is_none())
    })
    .await;
    assert!(old.leases().await.unwrap().body.is_empty());
    for node in &nodes {
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_and_attachments_survive_restart() {
    let clock = ManualClock::new();
    let dir = tempfile::tempdir().unwrap();
    let id = LeaseId::new(42).unwrap();
    {
        let node = builder(1, &clock)
            .data_dir(dir.path())
            .start()
            .await
            .unwrap();
        node.lease_grant(60, Some(id)).await.unwrap();
        node.lease_grant(30, None).await.unwrap();
        node.put_request(leased_put(b"r/k", id)).await.unwrap();
        node.shutdown().await;
    }
    let node = builder(1, &clock)
        .data_dir(dir.path())
        .start()
        .await
        .unwrap();
    node.wait_for_leader(DEADLINE).await.unwrap();
    let leases = node.leases().await.unwrap().body;
    assert_eq!(leases.len(), 2);
    assert!(leases.contains(&id));
    let ttl = node.lease_time_to_live(id, true).await.unwrap().body;
    assert_eq!(ttl.granted_ttl_secs, 60);
    assert_eq!(ttl.keys, vec![bytes::Bytes::from_static(b"r/k")]);
    // The generator resumes: a new grant does not collide with the persisted ones.
    let third = node.lease_grant(30, None).await.unwrap().body.id;
    assert!(!leases.contains(&third));
    node.lease_keep_alive(id).await.unwrap();
    node.lease_revoke(id).await.unwrap();
    assert!(!exists(&node, b"r/k").await);
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_catches_up_through_a_snapshot_gets_the_leases() {
    let clock = ManualClock::new();
    let net = InMemoryNetwork::new();
    let ids: Vec<MemberId> = (1..=3).map(MemberId::new).collect();
    let mut nodes = Vec::new();
    for id in &ids {
        let node = builder(id.get(), &clock)
            .name(format!("n{id}"))
            .initial_members(ids.iter().map(|i| (*i, format!("n{i}"))))
            .network(net.endpoint(*id))
            .snapshot_policy(keel::SnapshotPolicy {
                entries_between: 10,
                catch_up_entries: 0,
            })
            .start()
            .await
            .unwrap();
        net.register(*id, node.peer_handler());
        nodes.push(node);
    }
    let all: Vec<&Node> = nodes.iter().collect();
    let leader_id = agreed_leader(&all).await;
    let leader = nodes.iter().find(|n| n.id() == leader_id).unwrap();
    let lagger = nodes.iter().find(|n| n.id() != leader_id).unwrap();
    let lagger_last = lagger.status().await.unwrap().raft_index;

    net.isolate(lagger.id());
    let id = leader.lease_grant(60, None).await.unwrap().body.id;
    let other = leader.lease_grant(30, None).await.unwrap().body.id;
    for i in 0..20u32 {
        leader
            .put_request(PutRequest {
                lease: Some(id),
                ..PutRequest::new(format!("snap/{i:02}"), &b"v"[..])
            })
            .await
            .unwrap();
    }
    leader
        .wait_for_status(DEADLINE, |s| {
            s.purged_index.is_some_and(|p| p > lagger_last + 1)
        })
        .await
        .unwrap();

    net.heal();
    let target = leader.status().await.unwrap().applied_index;
    let caught_up = lagger
        .wait_for_status(DEADLINE, |s| s.applied_index >= target)
        .await
        .unwrap();
    assert!(caught_up.snapshot_index.is_some(), "{caught_up:?}");
    // The lagger's lessor was reloaded from the installed lease records.
    let mut expected = vec![id, other];
    expected.sort();
    assert_eq!(lagger.leases().await.unwrap().body, expected);
    let ttl = lagger.lease_time_to_live(id, true).await.unwrap().body;
    assert_eq!(ttl.keys.len(), 20);
    // A revoke through the lagger (forwarded) deletes the keys on every member.
    lagger.lease_revoke(id).await.unwrap();
    for node in &nodes {
        let r = node
            .range(
                &keel_storage::mvcc::RangeRequest::new(KeyRange::prefix(&b"snap/"[..])),
                keel::ReadConsistency::Linearizable,
            )
            .await
            .unwrap();
        assert_eq!(r.body.count, 0);
    }
    for node in &nodes {
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_keep_alives_share_renew_entries() {
    let clock = ManualClock::new();
    let node = single(&clock).await;
    let mut ids = Vec::new();
    for _ in 0..50 {
        ids.push(node.lease_grant(60, None).await.unwrap().body.id);
    }
    let unknown = LeaseId::new(5).unwrap();
    assert!(!ids.contains(&unknown));
    let before = node
        .wait_for_status(DEADLINE, |s| s.applied_index >= s.raft_index)
        .await
        .unwrap()
        .raft_index;
    let calls = ids
        .iter()
        .chain(std::iter::once(&unknown))
        .map(|id| node.lease_keep_alive(*id));
    let results = futures::future::join_all(calls).await;
    for (id, result) in ids.iter().zip(&results) {
        let renewed = result.as_ref().unwrap();
        assert_eq!((renewed.body.id, renewed.body.ttl_secs), (*id, 60));
    }
    assert_eq!(
        results.last().unwrap().as_ref().unwrap_err(),
        &NodeError::LeaseNotFound { lease: unknown }
    );
    let after = node.status().await.unwrap().raft_index;
    assert!(after > before);
    assert!(
        after - before < 51,
        "51 keep-alives took {} entries",
        after - before
    );
    node.shutdown().await;
}
