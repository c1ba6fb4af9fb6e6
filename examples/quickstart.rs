//! The README's main example: keel's storage on a local data directory.
//!
//! Until the replicated `Node` lands (see the tracker), this exercises the storage crate
//! directly: an MVCC store on RocksDB in `./keel-data` with puts, reads at old revisions,
//! a compare-and-swap txn, a watch and compaction.
//!
//! Run: `cargo run -p keel-examples --example quickstart` (add a directory argument to use
//! another data directory).

use keel_storage::engine::{RocksEngine, RocksOptions};
use keel_storage::mvcc::{
    Compare, CompareOp, CompareTarget, PutRequest, RangeRequest, RequestOp, TxnRequest,
};
use keel_storage::watch::WatchSpec;
use keel_storage::{MvccStore, StorageError};
use keel_types::{KeyRange, Revision};
use std::sync::Arc;

fn main() -> Result<(), StorageError> {
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "keel-data".to_string());
    let engine = RocksEngine::open(&dir, &RocksOptions::new(&MvccStore::COLUMN_FAMILIES))?;
    let store = Arc::new(MvccStore::open(Arc::new(engine))?);
    println!("opened {dir} at revision {}", store.current_revision()?);

    let mut watcher = store.watch(WatchSpec {
        prev_kv: true,
        ..WatchSpec::new(KeyRange::prefix(&b"config/"[..]))
    })?;

    let first = store.put(PutRequest::new(&b"config/greeting"[..], &b"hello"[..]))?;
    store.put(PutRequest::new(
        &b"config/greeting"[..],
        &b"hello, keel"[..],
    ))?;
    println!(
        "put config/greeting twice (first at revision {})",
        first.revision
    );

    let now = store.range(&RangeRequest::new(KeyRange::key(&b"config/greeting"[..])))?;
    let then = store.range(&RangeRequest {
        revision: Some(first.revision),
        ..RangeRequest::new(KeyRange::key(&b"config/greeting"[..]))
    })?;
    println!(
        "latest = {:?}, at revision {} = {:?}",
        String::from_utf8_lossy(&now.kvs[0].value),
        first.revision,
        String::from_utf8_lossy(&then.kvs[0].value)
    );

    // Compare-and-swap: only if nobody changed the key since we read it.
    let cas = store.txn(&TxnRequest {
        compare: vec![Compare {
            range: KeyRange::key(&b"config/greeting"[..]),
            op: CompareOp::Equal,
            target: CompareTarget::Mod(now.kvs[0].mod_revision),
        }],
        success: vec![RequestOp::Put(PutRequest::new(
            &b"config/greeting"[..],
            &b"swapped"[..],
        ))],
        failure: vec![],
    })?;
    println!("compare-and-swap succeeded: {}", cas.succeeded);

    while let Some(batch) = watcher.poll()? {
        for e in batch.events {
            println!(
                "watch: {:?} {} = {:?} (revision {}, previous {:?})",
                e.kind,
                String::from_utf8_lossy(&e.kv.key),
                String::from_utf8_lossy(&e.kv.value),
                e.kv.mod_revision,
                e.prev_kv
                    .map(|p| String::from_utf8_lossy(&p.value).into_owned())
            );
        }
    }

    let current = store.current_revision()?;
    let compact_to = Revision::new(current.get().saturating_sub(1).max(1));
    match store.compact(compact_to, true) {
        Ok(_) => println!("compacted up to revision {compact_to}"),
        Err(StorageError::Compacted { compacted, .. }) => {
            println!("already compacted at revision {compacted}")
        }
        Err(e) => return Err(e),
    }
    let hash = store.hash_kv(None)?;
    println!(
        "hash of the keyspace at revision {}: {:08x}",
        hash.revision, hash.hash
    );
    Ok(())
}
