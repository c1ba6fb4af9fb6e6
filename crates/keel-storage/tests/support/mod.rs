//! Fixtures shared by the failpoint tests on the in-memory engine (`failpoints.rs`) and on
//! real RocksDB directories (`rocks_failpoints.rs`).
#![allow(dead_code, reason = "each test binary uses part of it")]

pub mod abort;

use keel_storage::engine::{Engine, ScanBounds};
use keel_storage::mvcc::{DeleteRequest, PutRequest};
use keel_storage::MvccStore;
use keel_types::{KeyRange, Revision};
use std::ops::ControlFlow;

/// Every key and value of every family, to compare two engines exactly.
pub fn dump(engine: &dyn Engine, families: &[&str]) -> Vec<Vec<(Vec<u8>, Vec<u8>)>> {
    let view = engine.view().unwrap();
    families
        .iter()
        .map(|name| {
            let cf = engine.column_family(name).unwrap();
            let mut rows = Vec::new();
            view.scan(cf, ScanBounds::forward(&[], None), &mut |k, v| {
                rows.push((k.to_vec(), v.to_vec()));
                Ok(ControlFlow::Continue(()))
            })
            .unwrap();
            rows
        })
        .collect()
}

/// History worth compacting: 40 keys, each rewritten four times, the last deletion left
/// standing.
pub fn write_history(store: &MvccStore) {
    for round in 0..4u32 {
        for k in 0..40u32 {
            store
                .put(PutRequest::new(format!("k{k:02}"), format!("v{round}")))
                .unwrap();
        }
        store
            .delete_range(&DeleteRequest {
                range: KeyRange::key(format!("k{round:02}")),
                prev_kv: false,
            })
            .unwrap();
    }
}

/// The revision the compaction tests compact to (inside [`write_history`]).
pub const COMPACT_TARGET: Revision = Revision::new(120);

/// Schedule the compaction to [`COMPACT_TARGET`] and run it to the end in small steps.
///
/// # Errors
/// The store's.
pub fn compact(store: &MvccStore) -> Result<(), keel_storage::StorageError> {
    store.compact(COMPACT_TARGET, false)?;
    while !store.compact_step(7)? {}
    Ok(())
}

/// Applied batch `i` of the apply tests: five keys, `i` marked applied; every third batch
/// synced.
///
/// # Errors
/// The store's.
pub fn apply_batches(store: &MvccStore, upto: u64) -> Result<(), keel_storage::StorageError> {
    use keel_storage::engine::Durability;
    for i in 0..upto {
        let mut txn = store.begin()?;
        for k in 0..5 {
            txn.put(PutRequest::new(format!("b{i:02}/{k}"), format!("{i}")))?;
        }
        txn.set_applied(&i.to_be_bytes());
        let synced = i % 3 == 2;
        txn.commit(if synced {
            Durability::Synced
        } else {
            Durability::Buffered
        })?;
    }
    Ok(())
}
