//! Backup and restore, etcdutl's `snapshot status` and `snapshot restore`: a snapshot taken
//! with [`Node::snapshot`] read back, or installed into a new data directory from which a
//! member of a **new** cluster starts.
//!
//! What a restore keeps and drops (etcdutl's behaviour): the keyspace with its history and
//! revision, and the leases, are kept; the source cluster's membership, its Raft log position
//! and its cluster id are dropped. The restored member starts as a fresh member of the cluster
//! its builder configures (its initial members), whose id derives from that configuration.

use super::Node;
use crate::builder::{NodeBuilder, Storage};
use crate::error::NodeError;
use keel_membership::schema::MEMBERS_CF;
use keel_storage::engine::{Durability, Engine, MemEngine, WriteBatch};
use keel_storage::mvcc::RangeRequest;
use keel_storage::{DurableLog, MvccLimits, MvccStore, LOG_CF};
use keel_types::{ClusterId, KeyRange, Revision};
use std::path::Path;
use std::sync::Arc;

/// What a snapshot holds (etcdutl's `snapshot status`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapshotSummary {
    /// The revision the snapshot was taken at.
    pub revision: Revision,
    /// Its compaction revision.
    pub compact_revision: Revision,
    /// Keys live at `revision`.
    pub total_keys: u64,
    /// HashKV at `revision`: equal to the source cluster's `hash_kv` at that revision, and to
    /// a restored cluster's.
    pub hash: u32,
}

/// Read a snapshot's content without writing anything to disk (it is installed into an
/// in-memory engine).
///
/// # Errors
/// [`NodeError::Storage`] for a corrupt or truncated snapshot (its chunks are checksummed).
///
/// # Examples
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use keel::{snapshot_summary, NodeBuilder};
/// use keel_types::MemberId;
/// let node = NodeBuilder::new(MemberId::new(1)).start().await?;
/// node.put(&b"a"[..], &b"1"[..]).await?;
/// let put = node.put(&b"b"[..], &b"2"[..]).await?;
/// let chunks = node.snapshot()?.collect::<Result<Vec<_>, _>>()?;
/// let summary = snapshot_summary(chunks)?;
/// assert_eq!(summary.revision, put.header.revision);
/// assert_eq!(summary.total_keys, 2);
/// assert_eq!(summary.hash, node.hash_kv(None).await?.body.hash);
/// node.shutdown().await;
/// # Ok::<(), keel::NodeError>(())
/// # }).unwrap();
/// ```
pub fn snapshot_summary(
    chunks: impl IntoIterator<Item = Vec<u8>>,
) -> Result<SnapshotSummary, NodeError> {
    let engine: Arc<dyn Engine> = Arc::new(MemEngine::new(&Node::column_families()));
    install(&engine, chunks)
}

/// Install `chunks` into `engine`, drop the source cluster's membership and Raft position,
/// and summarize what is there.
fn install(
    engine: &Arc<dyn Engine>,
    chunks: impl IntoIterator<Item = Vec<u8>>,
) -> Result<SnapshotSummary, NodeError> {
    let store = MvccStore::open_with(
        Arc::clone(engine),
        MvccLimits::default(),
        Durability::Buffered,
    )?;
    store.install_snapshot(chunks.into_iter().map(Ok))?;
    engine.write(state_reset(engine)?, Durability::Synced)?;
    let hash = store.hash_kv(None)?;
    let count = store.range(&RangeRequest {
        count_only: true,
        ..RangeRequest::new(KeyRange::all())
    })?;
    Ok(SnapshotSummary {
        revision: hash.revision,
        compact_revision: hash.compact_revision,
        total_keys: count.count,
        hash: hash.hash,
    })
}

/// The cluster id recorded in `log`'s metadata, if any.
pub(crate) fn recorded_cluster_id(log: &DurableLog) -> Result<Option<ClusterId>, NodeError> {
    match log.meta(crate::builder::META_CLUSTER_ID)? {
        Some(bytes) => Ok(Some(crate::codec::decode("cluster id", &bytes)?)),
        None => Ok(None),
    }
}

/// Drop the Raft log (vote and metadata included), the applied position and the member
/// records of the state on `engine`, for `--force-new-cluster`, once the committed entries
/// are applied (see [`crate::NodeBuilder::force_new_cluster`]).
pub(crate) fn force_reset(engine: &Arc<dyn Engine>) -> Result<(), NodeError> {
    let mut reset = state_reset(engine)?;
    reset.delete_range(engine.column_family(LOG_CF)?, Vec::new(), vec![0xff; 16]);
    engine.write(reset, Durability::Synced)?;
    mark_adopted(engine)
}

/// Record that the state machine holds state the (empty) log does not explain.
fn mark_adopted(engine: &Arc<dyn Engine>) -> Result<(), NodeError> {
    let log = DurableLog::open(Arc::clone(engine))?;
    log.save_meta(crate::raft::META_ADOPTED_STATE, &[1], Durability::Synced)?;
    Ok(())
}

/// A batch that drops the applied position and every membership record.
fn state_reset(engine: &Arc<dyn Engine>) -> Result<WriteBatch, NodeError> {
    let mut reset = WriteBatch::default();
    reset.delete(
        engine.column_family(keel_storage::schema::META_CF)?,
        keel_storage::schema::META_APPLIED,
    );
    // Every membership record (members, removed ids, cluster id) sorts below this key.
    reset.delete_range(
        engine.column_family(MEMBERS_CF)?,
        Vec::new(),
        vec![0xff; 16],
    );
    Ok(reset)
}

impl NodeBuilder {
    /// Restore a snapshot ([`Node::snapshot`]'s chunks) into this builder's data directory,
    /// which must not exist yet or be empty. Then [`NodeBuilder::start`] (with the same
    /// configuration on every restored member) starts a new cluster serving the snapshot's
    /// keyspace. Nothing is left behind when the snapshot is corrupt or truncated.
    ///
    /// # Errors
    /// [`NodeError::Config`] when the builder has no data directory or it holds data;
    /// [`NodeError::Storage`] for a corrupt or truncated snapshot or an I/O failure.
    ///
    /// # Examples
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// use keel::NodeBuilder;
    /// use keel_types::MemberId;
    /// let source = NodeBuilder::new(MemberId::new(1)).start().await?;
    /// source.put(&b"config"[..], &b"v1"[..]).await?;
    /// let chunks = source.snapshot()?.collect::<Result<Vec<_>, _>>()?;
    ///
    /// let dir = tempfile::tempdir().unwrap();
    /// let builder = NodeBuilder::new(MemberId::new(7)).data_dir(dir.path().join("restored"));
    /// builder.restore_snapshot(chunks)?;
    /// let restored = builder.start().await?;
    /// let got = restored.get(&b"config"[..]).await?;
    /// assert_eq!(got.body.unwrap().value.as_ref(), b"v1");
    /// assert_ne!(restored.cluster_id(), source.cluster_id());
    /// # restored.shutdown().await;
    /// # source.shutdown().await;
    /// # Ok::<(), keel::NodeError>(())
    /// # }).unwrap();
    /// ```
    pub fn restore_snapshot(
        &self,
        chunks: impl IntoIterator<Item = Vec<u8>>,
    ) -> Result<SnapshotSummary, NodeError> {
        let Storage::Dir(dir) = &self.storage else {
            return Err(NodeError::Config {
                detail: "restoring a snapshot needs a data directory".into(),
            });
        };
        refuse_existing(dir)?;
        let staging = dir.with_extension("restoring");
        if staging.exists() {
            std::fs::remove_dir_all(&staging).map_err(|e| io_error("clear", &staging, &e))?;
        }
        let installed = (|| {
            let engine = crate::builder::open_dir_engine(&staging)?;
            let summary = install(&engine, chunks)?;
            mark_adopted(&engine)?;
            engine.sync()?;
            Ok::<_, NodeError>(summary)
        })();
        let summary = match installed {
            Ok(summary) => summary,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&staging);
                return Err(e);
            }
        };
        if dir.exists() {
            std::fs::remove_dir(dir).map_err(|e| io_error("replace", dir, &e))?;
        }
        std::fs::rename(&staging, dir).map_err(|e| io_error("rename", &staging, &e))?;
        Ok(summary)
    }
}

/// A restore writes only into a new (or empty) directory.
fn refuse_existing(dir: &Path) -> Result<(), NodeError> {
    let Ok(mut entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    if entries.next().is_some() {
        return Err(NodeError::Config {
            detail: format!(
                "data directory {} exists and is not empty: restore needs a new one",
                dir.display()
            ),
        });
    }
    Ok(())
}

fn io_error(what: &str, path: &Path, e: &std::io::Error) -> NodeError {
    NodeError::Storage(keel_storage::StorageError::Io {
        op: "restore",
        message: format!("{what} {}: {e}", path.display()),
    })
}
