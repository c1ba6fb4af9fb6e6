//! `--force-new-cluster` keeps what this member knew committed: the entries up to its
//! persisted commit index are applied before the log is dropped, as etcd applies its WAL up
//! to the hard state's commit; an entry it held but did not know committed is dropped.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

use super::log_store::META_COMMITTED;
use super::{Entry, LogId};
use crate::codec::{decode_io, encode_io};
use crate::request::Request;
use crate::{NodeBuilder, Timings};
use keel_storage::engine::{Durability, Engine};
use keel_storage::mvcc::PutRequest;
use keel_storage::DurableLog;
use keel_types::MemberId;
use openraft::EntryPayload;
use std::sync::Arc;
use std::time::Duration;

/// Append puts of `keys` after the last entry of the log on `engine`, in the last entry's
/// term; returns their log ids.
fn append_puts(engine: &Arc<dyn Engine>, keys: &[&'static str]) -> Vec<LogId> {
    let log = DurableLog::open(Arc::clone(engine)).unwrap();
    let last_index = log.bounds().last.unwrap();
    let last: Entry = decode_io("log entry", &log.get(last_index).unwrap().unwrap()).unwrap();
    let mut ids = Vec::new();
    let mut encoded = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        let log_id = LogId::new(last.log_id.leader_id, last_index + 1 + i as u64);
        let entry = Entry {
            log_id,
            payload: EntryPayload::Normal(Request::Put(PutRequest::new(*key, "v"))),
        };
        encoded.push((log_id.index, encode_io("log entry", &entry).unwrap()));
        ids.push(log_id);
    }
    log.append(encoded, Durability::Synced).unwrap();
    ids
}

fn timings() -> Timings {
    Timings {
        heartbeat_interval: Duration::from_millis(50),
        election_timeout: Duration::from_millis(300),
        request_timeout: Duration::from_secs(2),
    }
}

#[tokio::test]
async fn forcing_a_new_cluster_applies_the_entries_known_committed() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeBuilder::new(MemberId::new(1))
        .data_dir(dir.path())
        .timings(timings())
        .start()
        .await
        .unwrap();
    node.put(&b"before"[..], &b"v"[..]).await.unwrap();
    let revision_before = node.status().await.unwrap().header.revision;
    node.shutdown().await;

    // As left by a member killed after learning that `committed` was committed and before
    // applying it, holding one more entry it had not learned was committed.
    let engine = crate::builder::open_dir_engine(dir.path()).unwrap();
    let ids = append_puts(&engine, &["committed", "not-known-committed"]);
    let log = DurableLog::open(Arc::clone(&engine)).unwrap();
    let bytes = encode_io("committed log id", &Some(ids[0])).unwrap();
    log.save_meta(META_COMMITTED, &bytes, Durability::Synced)
        .unwrap();
    drop((log, engine));

    let node = NodeBuilder::new(MemberId::new(1))
        .data_dir(dir.path())
        .timings(timings())
        .force_new_cluster(true)
        .start()
        .await
        .unwrap();
    let got = node.get(&b"committed"[..]).await.unwrap();
    let kv = got.body.expect("the committed entry was applied");
    assert_eq!(kv.mod_revision, revision_before.next());
    assert!(node
        .get(&b"not-known-committed"[..])
        .await
        .unwrap()
        .body
        .is_none());
    assert!(node.get(&b"before"[..]).await.unwrap().body.is_some());
    // the forced cluster takes writes, after the applied entry's revision
    let put = node.put(&b"after"[..], &b"v"[..]).await.unwrap();
    assert_eq!(put.header.revision, revision_before.next().next());
    node.shutdown().await;
}
