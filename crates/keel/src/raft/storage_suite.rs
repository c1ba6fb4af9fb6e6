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

/// The log store and state machine of one member on a fresh in-memory engine, with the
/// store and metrics they write to.
struct Parts {
    store: Arc<MvccStore>,
    metrics: Arc<crate::metrics::Metrics>,
    log: LogStore,
    sm: StateMachine,
}

impl StoreBuilder<TypeConfig, LogStore, StateMachine, ()> for Builder {
    async fn build(&self) -> Result<((), LogStore, StateMachine), StorageError<TypeConfig>> {
        let parts = parts()?;
        Ok(((), parts.log, parts.sm))
    }
}

fn parts() -> Result<Parts, StorageError<TypeConfig>> {
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
    Ok(Parts {
        store: Arc::clone(&store),
        metrics: Arc::clone(&metrics),
        log: LogStore::new(log, Arc::clone(&engine), Arc::clone(&metrics)).map_err(|e| {
            StorageError::from_io_error(
                openraft::ErrorSubject::Store,
                openraft::ErrorVerb::Write,
                e,
            )
        })?,
        sm: StateMachine::new(
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
    })
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

/// Entries `1..` of term 1 holding `requests`.
fn entries(requests: Vec<crate::request::Request>) -> Vec<super::Entry> {
    let leader = openraft::alias::CommittedLeaderIdOf::<TypeConfig>::new(1);
    requests
        .into_iter()
        .zip(1u64..)
        .map(|(req, index)| super::Entry {
            log_id: openraft::LogId::new(leader, index),
            payload: openraft::EntryPayload::Normal(req),
        })
        .collect()
}

/// The value of the metric sample named `name` in `text`.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// KV entries that openraft hands over together apply in one engine write, each in its own
/// revision; a refused request among them changes nothing and the ones after it apply; an
/// entry that cannot join (a compaction) ends the run and applies alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::unwrap_used, reason = "test")]
async fn ready_kv_entries_apply_in_one_write_one_revision_each() {
    use crate::request::Request;
    use keel_storage::mvcc::{
        Compare, CompareOp, CompareTarget, DeleteRequest, PutRequest, RangeRequest, RequestOp,
        TxnRequest,
    };
    use keel_storage::watch::WatchSpec;
    use keel_types::{KeyRange, Revision};
    use openraft::storage::RaftStateMachine;

    let mut parts = parts().unwrap();
    let mut watcher = parts.store.watch(WatchSpec::new(KeyRange::all())).unwrap();
    let mut missing = PutRequest::new("b", "");
    missing.ignore_value = true;
    let txn = TxnRequest {
        compare: vec![Compare {
            range: KeyRange::key("a"),
            target: CompareTarget::Version(1),
            op: CompareOp::Equal,
        }],
        success: vec![RequestOp::Put(PutRequest::new("a", "3"))],
        failure: vec![],
    };
    let batch = entries(vec![
        Request::Put(PutRequest::new("a", "1")), // revision 2
        Request::Put(missing),                   // refused: no key "b"
        Request::Put(PutRequest::new("b", "2")), // 3
        Request::Txn(txn),                       // 4: sees the run's first put
        Request::DeleteRange(DeleteRequest {
            range: KeyRange::key("a"),
            prev_kv: false,
        }), // 5
        Request::Compact {
            revision: Revision::new(3),
        }, // applies alone
        Request::Put(PutRequest::new("c", "1")), // 6, a run of its own
    ]);
    let stream = futures::stream::iter(batch.into_iter().map(|e| Ok((e, None))));
    parts.sm.apply(stream).await.unwrap();

    assert_eq!(parts.store.current_revision().unwrap(), Revision::new(6));
    let at = |key: &str, rev: u64| {
        let req = RangeRequest {
            revision: Some(Revision::new(rev)),
            ..RangeRequest::new(KeyRange::key(key.to_string()))
        };
        parts
            .store
            .range(&req)
            .unwrap()
            .kvs
            .iter()
            .map(|kv| String::from_utf8(kv.value.to_vec()).unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(at("b", 3), vec!["2"]);
    assert_eq!(at("a", 4), vec!["3"]);
    assert!(at("a", 5).is_empty());
    assert_eq!(at("c", 6), vec!["1"]);
    // one watch batch per revision, in order
    let mut revisions = Vec::new();
    while let Some(b) = watcher.poll().unwrap() {
        revisions.push((b.revision.get(), b.events.len()));
    }
    assert_eq!(revisions, vec![(2, 1), (3, 1), (4, 1), (5, 1), (6, 1)]);
    // three engine writes: the run of five, the compaction, the last put
    let text = parts.metrics.render().unwrap();
    assert_eq!(
        sample(&text, "etcd_disk_backend_commit_duration_seconds_count"),
        Some(3.0),
        "{text}"
    );
    assert_eq!(sample(&text, "etcd_mvcc_put_total"), Some(3.0), "{text}");
    // the marker names the last entry
    let (applied, _) = parts.sm.applied_state().await.unwrap();
    assert_eq!(applied.map(|l| l.index), Some(7));
}
