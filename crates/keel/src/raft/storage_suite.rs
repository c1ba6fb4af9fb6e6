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
