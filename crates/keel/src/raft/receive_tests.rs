//! The snapshot receiver fed forged transfers: a damaged stream is refused and the member
//! keeps serving; nothing received outlives its use in the snapshot store.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

use super::network::{Message, PeerMessage, Reply};
use super::TypeConfig;
use crate::{Node, NodeBuilder, NodeError};
use keel_storage::engine::{Durability, Engine, MemEngine, WriteBatch};
use keel_storage::snapshot_store::SnapshotStore;
use keel_storage::StorageError;
use keel_types::MemberId;
use std::sync::Arc;

/// A valid snapshot stream of several small chunks (its content is never installed here).
fn stream() -> Vec<Vec<u8>> {
    let src: Arc<dyn Engine> = Arc::new(MemEngine::new(&["meta", "a"]));
    let a = src.column_family("a").unwrap();
    let mut batch = WriteBatch::default();
    for i in 0..40u32 {
        batch.put(a, format!("key-{i:03}").into_bytes(), vec![7u8; 24]);
    }
    src.write(batch, Durability::Synced).unwrap();
    let chunks: Vec<Vec<u8>> = keel_storage::snapshot::export(&src, &["a"], 256)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(
        chunks.len() >= 4,
        "want several chunks, got {}",
        chunks.len()
    );
    chunks
}

/// Chunk `index` of `chunks`, as a transfer of the snapshot at `id` under a stale vote.
fn chunk_message(id: u64, index: usize, chunks: &[Vec<u8>]) -> PeerMessage {
    let leader = openraft::alias::CommittedLeaderIdOf::<TypeConfig>::new(0);
    PeerMessage(Message::SnapshotChunk {
        vote: super::Vote::new(0, 0),
        meta: super::SnapshotMeta {
            last_log_id: Some(openraft::LogId::new(leader, id)),
            last_membership: super::StoredMembership::default(),
        },
        index: index as u64,
        count: chunks.len() as u64,
        chunk: chunks[index].clone(),
    })
}

/// Send chunks `range` of a transfer of snapshot `id`; the reply to the last one sent.
async fn send(
    node: &Node,
    id: u64,
    chunks: &[Vec<u8>],
    range: std::ops::Range<usize>,
) -> Result<Reply, NodeError> {
    let handler = node.peer_handler();
    let mut last = None;
    for index in range {
        last = Some(
            handler
                .handle(chunk_message(id, index, chunks))
                .await
                .map(|r| r.0),
        );
    }
    last.expect("at least one chunk")
}

fn holds_chunks_of(store: &SnapshotStore, id: u64) -> bool {
    store.chunk(id, 0).is_ok() || store.chunk(id, 1).is_ok()
}

async fn still_serves(node: &Node, key: &'static str) {
    node.put(key, "after").await.unwrap();
    let got = node.get(key).await.unwrap();
    assert_eq!(got.body.expect("the key").value.as_ref(), b"after");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_snapshot_transfer_is_refused_and_the_member_keeps_serving() {
    let engine: Arc<dyn Engine> = Arc::new(MemEngine::new(&Node::column_families()));
    let node = NodeBuilder::new(MemberId::new(1))
        .engine(Arc::clone(&engine))
        .start()
        .await
        .unwrap();
    node.put("before", "v").await.unwrap();
    let store = SnapshotStore::open(Arc::clone(&engine)).unwrap();
    let good = stream();

    // One byte flipped in a middle chunk: refused as an invalid snapshot at the last chunk,
    // and the stream is gone from the store.
    let mut damaged = good.clone();
    let middle = damaged.len() / 2;
    let at = damaged[middle].len() / 2;
    damaged[middle][at] ^= 0x5a;
    let refused = send(&node, 1_000, &damaged, 0..damaged.len()).await;
    assert!(
        matches!(
            refused,
            Err(NodeError::Rejected(StorageError::InvalidSnapshot { .. }))
        ),
        "{refused:?}"
    );
    assert!(!holds_chunks_of(&store, 1_000));
    still_serves(&node, "k1").await;

    // A chunk missing from the middle: refused the same way.
    send(&node, 1_500, &good, 0..middle).await.unwrap();
    let gap = send(&node, 1_500, &good, middle + 1..good.len()).await;
    assert!(
        matches!(
            gap,
            Err(NodeError::Rejected(StorageError::InvalidSnapshot { .. }))
        ),
        "{gap:?}"
    );
    assert!(!holds_chunks_of(&store, 1_500));

    // A transfer that breaks off keeps its chunks until the next transfer starts.
    send(&node, 2_000, &good, 0..2).await.unwrap();
    assert!(holds_chunks_of(&store, 2_000));
    let first = send(&node, 3_000, &good, 0..1).await.unwrap();
    assert!(matches!(first, Reply::ChunkStored));
    assert!(
        !holds_chunks_of(&store, 2_000),
        "the broken-off transfer's chunks stay"
    );

    // The same stream undamaged passes the check and reaches openraft, which does not
    // install it under a stale vote: the reply carries the member's vote, the state is
    // untouched, and the stream goes.
    let reply = send(&node, 3_000, &good, 1..good.len()).await.unwrap();
    let Reply::Snapshot(resp) = reply else {
        panic!("expected a snapshot reply, got {reply:?}");
    };
    assert!(resp.vote > super::Vote::new(0, 0), "{:?}", resp.vote);
    assert!(!holds_chunks_of(&store, 3_000));
    let before = node.get("before").await.unwrap();
    assert_eq!(before.body.expect("the key").value.as_ref(), b"v");
    still_serves(&node, "k2").await;
    node.shutdown().await;
}
