//! A custom transport behind keel's `Network` trait: the seam a team uses to carry keel's
//! member-to-member traffic over its own RPC system. This one encodes every message to bytes
//! (as a wire transport must), counts the traffic per link, and relays through a registry of
//! in-process handlers; three nodes form a cluster over it and serve writes and reads.
//!
//! Run: `cargo run -p keel-examples --example custom_network`

use keel::{Network, NodeBuilder, NodeError, PeerHandler, PeerMessage, PeerReply, SendFuture};
use keel_types::MemberId;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The receiving ends of every member: what a real transport's server side would hold.
#[derive(Default)]
struct Registry {
    handlers: Mutex<BTreeMap<MemberId, PeerHandler>>,
    bytes_sent: AtomicU64,
}

/// One member's sending side.
struct CountingTransport {
    registry: Arc<Registry>,
}

impl Network for CountingTransport {
    fn send(&self, to: MemberId, message: PeerMessage) -> SendFuture<'_> {
        Box::pin(async move {
            // Encode and decode as if the bytes crossed a wire.
            let bytes = message.to_bytes()?;
            self.registry
                .bytes_sent
                .fetch_add(bytes.len() as u64, Ordering::Relaxed);
            let handler = match self.registry.handlers.lock() {
                Ok(h) => h.get(&to).cloned(),
                Err(_) => None,
            };
            // Not delivered: keel may resend it.
            let Some(handler) = handler else {
                return Err(NodeError::Unreachable { member: to });
            };
            let reply = handler.handle(PeerMessage::from_bytes(&bytes)?).await?;
            PeerReply::from_bytes(&reply.to_bytes()?)
        })
    }
}

#[tokio::main]
async fn main() -> Result<(), NodeError> {
    let registry = Arc::new(Registry::default());
    let ids: Vec<MemberId> = (1..=3).map(MemberId::new).collect();
    let mut nodes = Vec::new();
    for id in &ids {
        let transport = Arc::new(CountingTransport {
            registry: Arc::clone(&registry),
        });
        let node = NodeBuilder::new(*id)
            .name(format!("n{id}"))
            .initial_members(ids.iter().map(|i| (*i, format!("n{i}"))))
            .network(transport)
            .start()
            .await?;
        if let Ok(mut h) = registry.handlers.lock() {
            h.insert(*id, node.peer_handler());
        }
        nodes.push(node);
    }
    let leader = nodes[0].wait_for_leader(Duration::from_secs(10)).await?;
    println!("leader elected over the custom transport: member {leader}");
    // Writes on any member (followers forward to the leader), linearizable reads anywhere.
    nodes[1].put(&b"transport"[..], &b"custom"[..]).await?;
    let got = nodes[2].get(&b"transport"[..]).await?;
    let value = got.body.map(|kv| kv.value).unwrap_or_default();
    println!("read back on member 3: {}", String::from_utf8_lossy(&value));
    assert_eq!(value.as_ref(), b"custom");
    println!(
        "bytes carried by the transport: {}",
        registry.bytes_sent.load(Ordering::Relaxed)
    );
    for n in &nodes {
        n.shutdown().await;
    }
    Ok(())
}
