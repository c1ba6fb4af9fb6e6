//! Three keel nodes in one process over `InMemoryNetwork`: add a fourth as a learner, let it
//! catch up, promote it, kill (isolate and shut down) the leader, keep writing through the
//! new leader, then remove the dead member from the configuration.
//!
//! Every wait has a deadline; the example exits 0 when all steps succeeded.
//!
//! Run: `cargo run -p keel-examples --example cluster`

use keel::{InMemoryNetwork, Node, NodeBuilder, NodeError, Timings};
use keel_types::MemberId;
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(10);

fn timings() -> Timings {
    Timings {
        heartbeat_interval: Duration::from_millis(50),
        election_timeout: Duration::from_millis(300),
        request_timeout: Duration::from_secs(3),
    }
}

#[tokio::main]
async fn main() -> Result<(), NodeError> {
    let net = InMemoryNetwork::new();
    let ids: Vec<MemberId> = (1..=3).map(MemberId::new).collect();
    let mut nodes = Vec::new();
    for id in &ids {
        // In memory: no data directory needed for the demo.
        let node = NodeBuilder::new(*id)
            .name(format!("n{id}"))
            .initial_members(ids.iter().map(|i| (*i, format!("n{i}"))))
            .network(net.endpoint(*id))
            .timings(timings())
            .start()
            .await?;
        net.register(*id, node.peer_handler());
        nodes.push(node);
    }
    let leader = leader_of(&nodes).await?;
    println!("3 members started; leader is {}", leader.id());
    for i in 0..10u32 {
        nodes[i as usize % 3]
            .put(format!("orders/{i:02}"), format!("order {i}"))
            .await?;
    }
    println!("wrote 10 keys through all three members (followers forward to the leader)");

    let n4 = add_fourth(&net, &leader, &ids).await?;
    nodes.push(n4);

    // Kill the leader: cut it off, then stop it.
    let dead = leader.id();
    net.isolate(dead);
    leader.shutdown().await;
    nodes.retain(|n| n.id() != dead);
    let leader = leader_of(&nodes).await?;
    println!("killed leader {dead}; new leader is {}", leader.id());
    for i in 10..20u32 {
        leader
            .put(format!("orders/{i:02}"), format!("order {i}"))
            .await?;
    }
    println!("kept writing: 10 more keys");

    // The dead member still counts in the configuration: remove it (3 voters remain).
    let after = leader.member_remove(dead).await?;
    println!("removed {dead}: {}", describe(&after.members));
    let count = leader
        .range(
            &keel_storage::mvcc::RangeRequest::new(keel_types::KeyRange::prefix(&b"orders/"[..])),
            keel::ReadConsistency::Linearizable,
        )
        .await?
        .body
        .count;
    println!("{count} orders readable through the new leader");
    for n in &nodes {
        n.shutdown().await;
    }
    if count == 20 {
        Ok(())
    } else {
        Err(NodeError::Refused {
            message: format!("expected 20 orders, found {count}"),
        })
    }
}

/// etcd's two-step add of a fourth member `n4`, then its promotion.
async fn add_fourth(
    net: &InMemoryNetwork,
    leader: &Node,
    ids: &[MemberId],
) -> Result<Node, NodeError> {
    // Step 1 of etcd's two-step add: the leader adds a learner and returns once committed.
    let added = leader.member_add("n4", &["unix://n4"]).await?;
    let id4 = added.member_id;
    println!("added learner n4 as member {id4}");
    // Step 2: the new member starts, verifies it was added, and catches up.
    let n4 = NodeBuilder::new(id4)
        .name("n4")
        .peer_urls(["unix://n4"])
        .join_existing(ids.iter().copied())
        .network(net.endpoint(id4))
        .timings(timings())
        .start()
        .await?;
    net.register(id4, n4.peer_handler());
    let target = leader.status().await?.raft_index;
    n4.wait_for_status(DEADLINE, |s| s.applied_index >= target)
        .await?;
    println!("n4 caught up to index {target}");
    promote_when_ready(leader, id4).await?;
    println!("promoted n4: {}", describe(&leader.members().await?));
    Ok(n4)
}

/// The leader that a member of `nodes` reports, once it is one of them.
async fn leader_of(nodes: &[Node]) -> Result<Node, NodeError> {
    let work = async {
        loop {
            for n in nodes {
                let status = n.status().await?;
                if let Some(l) = nodes.iter().find(|c| Some(c.id()) == status.leader) {
                    if l.status().await?.leader == Some(l.id()) {
                        return Ok(l.clone());
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(DEADLINE, work)
        .await
        .map_err(|_| NodeError::Timeout)?
}

/// Promote `id`, retrying while the leader does not yet see it in sync.
async fn promote_when_ready(leader: &Node, id: MemberId) -> Result<(), NodeError> {
    let work = async {
        loop {
            match leader.member_promote(id).await {
                Err(NodeError::Reconfig(e)) if e.to_string().contains("in sync") => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                other => return other.map(|_| ()),
            }
        }
    };
    tokio::time::timeout(DEADLINE, work)
        .await
        .map_err(|_| NodeError::Timeout)?
}

fn describe(members: &[keel::MemberStatus]) -> String {
    members
        .iter()
        .map(|m| {
            let role = if m.is_learner { "learner" } else { "voter" };
            format!("{}({role})", m.name)
        })
        .collect::<Vec<_>>()
        .join(", ")
}
