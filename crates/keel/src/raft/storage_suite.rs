//! openraft's storage conformance suite, run against the log store and state machine on an
//! in-memory engine.

use super::log_store::LogStore;
use super::state_machine::StateMachine;
use super::TypeConfig;
use keel_storage::engine::{Engine, MemEngine};
use keel_storage::{DurableLog, MvccStore};
use openraft::testing::log::{StoreBuilder, Suite};
use openraft::StorageError;
use std::sync::Arc;

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, ()> for Builder {
    async fn build(&self) -> Result<((), LogStore, StateMachine), StorageError<TypeConfig>> {
        let engine: Arc<dyn Engine> = Arc::new(MemEngine::new(&crate::builder::column_families()));
        let store = Arc::new(MvccStore::open(Arc::clone(&engine)).map_err(io)?);
        let log = Arc::new(DurableLog::open(Arc::clone(&engine)).map_err(io)?);
        let metrics = Arc::new(crate::metrics::Metrics::new(
            Arc::new(keel_types::ManualClock::new()),
            crate::metrics::SLOW_REQUEST,
        ));
        let lease = Arc::new(
            crate::lease::LeaseState::open(
                engine.as_ref(),
                keel_lease::LessorConfig::default(),
                Arc::new(keel_types::ManualClock::new()),
            )
            .map_err(|e| {
                io(keel_storage::StorageError::Corrupted {
                    what: "lease",
                    detail: e.to_string(),
                })
            })?,
        );
        let auth = Arc::new(
            crate::auth::AuthGate::open(
                engine.as_ref(),
                Arc::new(keel_types::ManualClock::new()),
                crate::AuthConfig::default(),
            )
            .map_err(|e| {
                io(keel_storage::StorageError::Corrupted {
                    what: "auth",
                    detail: e.to_string(),
                })
            })?,
        );
        Ok((
            (),
            LogStore::new(log, Arc::clone(&engine), Arc::clone(&metrics)).map_err(|e| {
                StorageError::from_io_error(
                    openraft::ErrorSubject::Store,
                    openraft::ErrorVerb::Write,
                    e,
                )
            })?,
            StateMachine::new(
                store,
                keel_types::ClusterId::new(1),
                Arc::new(|| {}),
                lease,
                metrics,
                auth,
                Arc::new(
                    keel_storage::snapshot_store::SnapshotStore::open(Arc::clone(&engine))
                        .map_err(io)?,
                ),
            ),
        ))
    }
}

fn io(e: keel_storage::StorageError) -> StorageError<TypeConfig> {
    StorageError::from_io_error(
        openraft::ErrorSubject::Store,
        openraft::ErrorVerb::Read,
        std::io::Error::other(e),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openraft_storage_conformance() {
    Suite::test_all(Builder).await.unwrap();
}

/// A snapshot at `index` whose stream (`chunks` chunks) is in `sm`'s snapshot store.
fn stored_snapshot(sm: &StateMachine, index: u64) -> super::state_machine::SnapshotOf {
    let store = Arc::clone(sm.snapshot_store());
    let stream = store.store(index, [Ok(vec![1u8]), Ok(vec![2u8])]).unwrap();
    let leader = openraft::alias::CommittedLeaderIdOf::<TypeConfig>::new(1);
    openraft::storage::Snapshot {
        meta: super::SnapshotMeta {
            last_log_id: Some(openraft::LogId::new(leader, index)),
            last_membership: super::StoredMembership::default(),
        },
        snapshot: super::state_machine::SnapshotData { store, stream },
    }
}

/// An install can finish while an older build is still being stored; the older snapshot
/// must not become current afterwards, and the loser's stream goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::unwrap_used, reason = "test")]
async fn an_older_snapshot_never_replaces_a_newer_one() {
    let ((), _log, sm) = Builder.build().await.unwrap();
    let store = Arc::clone(sm.snapshot_store());
    sm.replace_current(stored_snapshot(&sm, 10)).unwrap();
    sm.replace_current(stored_snapshot(&sm, 20)).unwrap();
    assert_eq!(sm.current_snapshot().map(|c| c.0), Some(Some(20)));
    assert_eq!(store.sealed(10).unwrap(), None, "the replaced stream goes");
    sm.replace_current(stored_snapshot(&sm, 15)).unwrap();
    assert_eq!(sm.current_snapshot().map(|c| c.0), Some(Some(20)));
    assert_eq!(
        store.sealed(15).unwrap(),
        None,
        "the older snapshot's stream goes"
    );
    let (_, kept) = sm.current_snapshot().unwrap();
    assert_eq!(store.chunks(kept).count(), 2);
    assert!(store.chunks(kept).all(|c| c.is_ok()));
    // The same snapshot again (a rebuild at the same index) keeps its stream.
    sm.replace_current(stored_snapshot(&sm, 20)).unwrap();
    assert_eq!(store.sealed(20).unwrap(), Some(kept));
}
