//! The space quota and the NOSPACE alarm (etcd's `--quota-backend-bytes`).
//!
//! Before a write that can grow the keyspace (a put, a txn with a put, a lease grant) the
//! member compares the size of its replicated state (the log excluded, as etcd's backend
//! excludes its WAL) with the quota. Over it, the NOSPACE alarm is raised and such writes are
//! refused with etcd's "database space exceeded"; reads, deletes, lease revokes and
//! compactions still go through. Once usage is back under the quota the alarm clears by
//! itself at the next check: a compaction run while the alarm is raised also compacts the
//! storage engine (etcd's defragment), so compacting and deleting is enough to recover.
//!
//! Deviations from etcd: etcd needs `etcdctl alarm disarm` after freeing space (keel clears
//! the alarm itself), and etcd replicates alarms through Raft so every member refuses at
//! once; in keel each member raises its own alarm from its own size (members hold the same
//! state, so they cross the quota at about the same write).

use super::{Node, Running};
use crate::error::NodeError;
use std::sync::atomic::{AtomicBool, Ordering};

/// An alarm a member can raise.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Alarm {
    /// The replicated state exceeds the space quota: writes that grow it are refused.
    NoSpace,
}

/// The quota and this member's alarm.
#[derive(Debug)]
pub(crate) struct Quota {
    bytes: u64,
    nospace: AtomicBool,
}

impl Quota {
    pub(crate) fn new(bytes: u64) -> Self {
        Quota {
            bytes,
            nospace: AtomicBool::new(false),
        }
    }
}

impl Node {
    /// The alarms raised on this member.
    ///
    /// # Examples
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// use keel::{Alarm, NodeBuilder, NodeError};
    /// use keel_types::MemberId;
    /// let node = NodeBuilder::new(MemberId::new(1)).quota_backend_bytes(4096).start().await?;
    /// let big = vec![b'x'; 8192];
    /// node.put(&b"a"[..], big.clone()).await?; // under the quota when it was checked
    /// assert_eq!(node.put(&b"b"[..], big).await.unwrap_err(), NodeError::NoSpace);
    /// assert_eq!(node.alarms(), [Alarm::NoSpace]);
    /// // Deleting and compacting frees the space; the alarm clears by itself.
    /// let del = node.delete(&b"a"[..]).await?;
    /// node.compact(del.header.revision).await?;
    /// node.put(&b"c"[..], &b"small"[..]).await?;
    /// assert!(node.alarms().is_empty());
    /// # node.shutdown().await;
    /// # Ok::<(), keel::NodeError>(())
    /// # }).unwrap();
    /// ```
    pub fn alarms(&self) -> Vec<Alarm> {
        let mut alarms = Vec::new();
        if self.inner.quota.nospace.load(Ordering::Acquire) {
            alarms.push(Alarm::NoSpace);
        }
        alarms
    }

    /// Raise `alarm` by hand (etcd's `AlarmRequest` ACTIVATE); the next quota check clears
    /// NOSPACE again if the state is under the quota.
    pub fn activate_alarm(&self, alarm: Alarm) {
        match alarm {
            Alarm::NoSpace => self.inner.quota.nospace.store(true, Ordering::Release),
        }
    }

    /// Clear `alarm` (etcd's `alarm disarm`); the next write over the quota raises it again.
    pub fn disarm_alarm(&self, alarm: Alarm) {
        match alarm {
            Alarm::NoSpace => self.inner.quota.nospace.store(false, Ordering::Release),
        }
    }

    /// Compact the storage engine now (etcd's Defragment): deleted and compacted data stops
    /// taking space. Then re-check the quota.
    ///
    /// # Errors
    /// Storage failure, [`NodeError::Stopped`].
    pub async fn defragment(&self) -> Result<(), NodeError> {
        let running = self.inner.running()?;
        self.check_admin()?;
        let engine = std::sync::Arc::clone(running.store.engine());
        tokio::task::spawn_blocking(move || engine.compact_all())
            .await
            .map_err(|e| NodeError::Raft {
                detail: format!("defragment task: {e}"),
            })??;
        self.check_quota(&running).map(|_| ()).or_else(|e| match e {
            NodeError::NoSpace => Ok(()),
            other => Err(other),
        })
    }

    /// The size the quota applies to: the replicated state, without the log.
    fn state_bytes(running: &Running) -> Result<u64, NodeError> {
        Ok(running
            .store
            .engine()
            .size_bytes_of(&crate::raft::STATE_COLUMN_FAMILIES)?)
    }

    /// Raise or clear NOSPACE from the current size; `Err(NoSpace)` while it is raised.
    pub(super) fn check_quota(&self, running: &Running) -> Result<(), NodeError> {
        let quota = &self.inner.quota;
        let size = Self::state_bytes(running)?;
        let over = size > quota.bytes;
        let was = quota.nospace.swap(over, Ordering::AcqRel);
        match (was, over) {
            (false, true) => {
                tracing::warn!(
                    size,
                    quota = quota.bytes,
                    "NOSPACE alarm raised: writes that grow the state are refused"
                );
            }
            (true, false) => tracing::info!(size, quota = quota.bytes, "NOSPACE alarm cleared"),
            _ => {}
        }
        if over {
            Err(NodeError::NoSpace)
        } else {
            Ok(())
        }
    }

    /// After a compaction while NOSPACE is raised, compact the engine so the space is
    /// reclaimed and the alarm can clear.
    pub(super) async fn reclaim_if_alarmed(&self) -> Result<(), NodeError> {
        if self.inner.quota.nospace.load(Ordering::Acquire) {
            self.defragment().await?;
        }
        Ok(())
    }
}
