//! [`InMemoryNetwork`]: a router between nodes in one process, with fault injection.

use super::network::{Network, PeerHandler, PeerMessage, PeerReply, SendFuture};
use crate::error::NodeError;
use keel_types::MemberId;
use parking_lot::Mutex;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

/// Routes messages between in-process nodes, and can cut links to test failures.
///
/// Each node gets its own [`InMemoryNetwork::endpoint`] (which knows the sender, so that
/// links are directional) and is reachable once [`InMemoryNetwork::register`]ed. A message on
/// a cut link fails with [`NodeError::Unreachable`] without being delivered; a reply on a cut
/// link is lost after delivery ([`NodeError::Network`]). A message that has left is delivered
/// even if its sender stops waiting for the reply, as on a real link.
///
/// Links can also be slowed down ([`InMemoryNetwork::delay`]), which reorders messages
/// sent over links with different delays, and made lossy ([`InMemoryNetwork::drop_every`]):
/// deterministically, every n-th message on the link is lost.
///
/// Invariants:
/// 1. A link `a -> b` delivers iff neither end is isolated, `(a, b)` is not blocked, and (while
///    a partition is set) `a` and `b` are in the same group.
/// 2. The router holds handlers, which hold nodes weakly: it never keeps a node alive.
///
/// # Examples
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use keel::{InMemoryNetwork, NodeBuilder};
/// use keel_types::MemberId;
/// let net = InMemoryNetwork::new();
/// let ids: Vec<MemberId> = (1..=3).map(MemberId::new).collect();
/// let mut nodes = Vec::new();
/// for id in &ids {
///     let node = NodeBuilder::new(*id)
///         .initial_members(ids.iter().map(|i| (*i, format!("n{i}"))))
///         .network(net.endpoint(*id))
///         .start()
///         .await?;
///     net.register(*id, node.peer_handler());
///     nodes.push(node);
/// }
/// nodes[0].put(&b"k"[..], &b"v"[..]).await?;
/// assert_eq!(nodes[2].get(&b"k"[..]).await?.body.unwrap().value.as_ref(), b"v");
/// for n in &nodes { n.shutdown().await; }
/// # Ok::<(), keel::NodeError>(())
/// # }).unwrap();
/// ```
#[derive(Clone, Debug, Default)]
pub struct InMemoryNetwork {
    /// Guards the routing table and faults; never held across an await.
    router: Arc<Mutex<Router>>,
}

#[derive(Debug, Default)]
struct Router {
    handlers: BTreeMap<MemberId, PeerHandler>,
    isolated: BTreeSet<MemberId>,
    blocked: BTreeSet<(MemberId, MemberId)>,
    groups: Option<Vec<BTreeSet<MemberId>>>,
    delays: BTreeMap<(MemberId, MemberId), Duration>,
    /// Lossy links: (every how many messages one is lost, messages sent so far).
    drops: BTreeMap<(MemberId, MemberId), (u32, u32)>,
}

impl Router {
    fn delivers(&self, from: MemberId, to: MemberId) -> bool {
        if self.isolated.contains(&from) || self.isolated.contains(&to) {
            return false;
        }
        if self.blocked.contains(&(from, to)) {
            return false;
        }
        match &self.groups {
            None => true,
            Some(groups) => groups.iter().any(|g| g.contains(&from) && g.contains(&to)),
        }
    }
}

impl InMemoryNetwork {
    /// An empty router.
    pub fn new() -> Self {
        Self::default()
    }

    /// The network as seen by member `from` (pass it to that node's builder).
    pub fn endpoint(&self, from: MemberId) -> Arc<dyn Network> {
        Arc::new(Endpoint {
            net: self.clone(),
            from,
        })
    }

    /// Make member `id` reachable through `handler` (replaces an earlier registration).
    pub fn register(&self, id: MemberId, handler: PeerHandler) {
        self.router.lock().handlers.insert(id, handler);
    }

    /// Remove member `id` from the routing table.
    pub fn unregister(&self, id: MemberId) {
        self.router.lock().handlers.remove(&id);
    }

    /// Cut every link to and from `id`.
    pub fn isolate(&self, id: MemberId) {
        self.router.lock().isolated.insert(id);
    }

    /// Undo [`InMemoryNetwork::isolate`] for `id`.
    pub fn rejoin(&self, id: MemberId) {
        self.router.lock().isolated.remove(&id);
    }

    /// Drop every message from `from` to `to` (one direction).
    pub fn block(&self, from: MemberId, to: MemberId) {
        self.router.lock().blocked.insert((from, to));
    }

    /// Split the members into groups that only talk within themselves; members in no group
    /// talk to nobody.
    pub fn partition(&self, groups: &[&[MemberId]]) {
        self.router.lock().groups =
            Some(groups.iter().map(|g| g.iter().copied().collect()).collect());
    }

    /// Delay every message from `from` to `to` (one direction) by `delay`; messages sent
    /// at different times under different delays overtake each other (reordering).
    pub fn delay(&self, from: MemberId, to: MemberId, delay: Duration) {
        self.router.lock().delays.insert((from, to), delay);
    }

    /// Lose every `n`-th message from `from` to `to` (one direction; `n` below 2 is taken
    /// as 2). The message is not delivered and the sender gets [`NodeError::Unreachable`]
    /// (as for a cut link: it may resend).
    pub fn drop_every(&self, from: MemberId, to: MemberId, n: u32) {
        self.router.lock().drops.insert((from, to), (n.max(2), 0));
    }

    /// Remove every fault: isolation, blocked links, partitions, delays and losses.
    pub fn heal(&self) {
        let mut r = self.router.lock();
        r.isolated.clear();
        r.blocked.clear();
        r.groups = None;
        r.delays.clear();
        r.drops.clear();
    }

    /// Count a message on `from -> to`; whether the link loses it.
    fn loses(&self, from: MemberId, to: MemberId) -> bool {
        let mut r = self.router.lock();
        match r.drops.get_mut(&(from, to)) {
            Some((n, sent)) => {
                *sent = sent.wrapping_add(1);
                *sent % *n == 0
            }
            None => false,
        }
    }

    fn delay_of(&self, from: MemberId, to: MemberId) -> Duration {
        self.router
            .lock()
            .delays
            .get(&(from, to))
            .copied()
            .unwrap_or(Duration::ZERO)
    }

    fn route(&self, from: MemberId, to: MemberId) -> Option<PeerHandler> {
        let r = self.router.lock();
        if r.delivers(from, to) {
            r.handlers.get(&to).cloned()
        } else {
            None
        }
    }

    fn delivers(&self, from: MemberId, to: MemberId) -> bool {
        self.router.lock().delivers(from, to)
    }
}

struct Endpoint {
    net: InMemoryNetwork,
    from: MemberId,
}

impl Network for Endpoint {
    fn send(&self, to: MemberId, message: PeerMessage) -> SendFuture<'_> {
        // The message travels as a task of its own: a sender that stops waiting (openraft
        // abandons a heartbeat after one heartbeat interval) loses only the reply, as on a
        // real link, where the request is already on the wire. Awaiting the delivery inside
        // the sender's future would take the message back out of the network.
        let delivery = super::rt::spawn(deliver(self.net.clone(), self.from, to, message));
        Box::pin(async move {
            delivery.await.map_err(|e| NodeError::Network {
                detail: format!("delivery to {to} did not finish: {e}"),
            })?
        })
    }
}

/// Carry `message` from `from` to `to` through the link's faults, and its reply back.
async fn deliver(
    net: InMemoryNetwork,
    from: MemberId,
    to: MemberId,
    message: PeerMessage,
) -> Result<PeerReply, NodeError> {
    let there = net.delay_of(from, to);
    if !there.is_zero() {
        super::rt::sleep(there).await;
    }
    if net.loses(from, to) {
        return Err(NodeError::Unreachable { member: to });
    }
    // Faults are checked when the message arrives, not when it leaves.
    let Some(handler) = net.route(from, to) else {
        return Err(NodeError::Unreachable { member: to });
    };
    let reply = handler.handle(message).await?;
    let back = net.delay_of(to, from);
    if !back.is_zero() {
        super::rt::sleep(back).await;
    }
    if net.delivers(to, from) {
        Ok(reply)
    } else {
        Err(NodeError::Network {
            detail: format!("reply from {to} dropped"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_follow_the_link_rules() {
        let (a, b, c) = (MemberId::new(1), MemberId::new(2), MemberId::new(3));
        let net = InMemoryNetwork::new();
        assert!(net.delivers(a, b));
        net.block(a, b);
        assert!(!net.delivers(a, b));
        assert!(net.delivers(b, a));
        net.heal();
        net.isolate(c);
        assert!(!net.delivers(a, c) && !net.delivers(c, b));
        net.rejoin(c);
        net.partition(&[&[a, b], &[c]]);
        assert!(net.delivers(a, b) && !net.delivers(b, c) && !net.delivers(c, a));
        net.heal();
        assert!(net.delivers(c, a));
    }

    #[test]
    fn a_lossy_link_loses_every_nth_message_one_way_until_healed() {
        let (a, b) = (MemberId::new(1), MemberId::new(2));
        let net = InMemoryNetwork::new();
        net.drop_every(a, b, 3);
        let lost: Vec<bool> = (0..6).map(|_| net.loses(a, b)).collect();
        assert_eq!(lost, [false, false, true, false, false, true]);
        assert!(!net.loses(b, a));
        net.heal();
        assert!((0..6).all(|_| !net.loses(a, b)));
    }
}
