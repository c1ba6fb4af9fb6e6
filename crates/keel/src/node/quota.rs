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
//! Measuring the state size reads RocksDB properties of every state column family, too much
//! for every write. The check keeps the last measured size plus the encoded size of the
//! writes admitted since, and measures again only when that estimate would cross the quota,
//! when the measurement is older than [`SIZE_REFRESH`], or while the alarm is raised. The
//! estimate only grows between measurements, so a write that would cross the quota is always
//! checked against a fresh measurement.
//!
//! Deviations from etcd: etcd needs `etcdctl alarm disarm` after freeing space (keel clears
//! the alarm itself), and etcd replicates alarms through Raft so every member refuses at
//! once; in keel each member raises its own alarm from its own size (members hold the same
//! state, so they cross the quota at about the same write).

use super::{Node, Running};
use crate::error::NodeError;
use parking_lot::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// What a write of `len_bytes` encoded bytes may add to the state at most, for the estimate:
/// the key and value stored twice over (the MVCC record and its index entry) plus a fixed
/// allowance for revision keys and metadata.
pub(crate) fn growth_bound(len_bytes: usize) -> u64 {
    (len_bytes as u64).saturating_mul(2).saturating_add(256)
}

/// How long a measured state size is trusted (with the writes admitted since added to it).
pub(crate) const SIZE_REFRESH: Duration = Duration::from_millis(100);

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
    estimate: Mutex<SizeEstimate>,
}

/// The last measured state size and what was admitted since.
#[derive(Debug, Default)]
struct SizeEstimate {
    /// When it was measured (the injected clock); `None`: never.
    at: Option<Duration>,
    measured: u64,
    added: u64,
}

impl Quota {
    pub(crate) fn new(bytes: u64) -> Self {
        Quota {
            bytes,
            nospace: AtomicBool::new(false),
            estimate: Mutex::new(SizeEstimate::default()),
        }
    }

    /// Admit a write of `len_bytes` on the estimate alone, if it is fresh, the alarm is
    /// down, and the write cannot cross the quota.
    fn admit_on_estimate(&self, now: Duration, len_bytes: u64) -> bool {
        if self.nospace.load(Ordering::Acquire) {
            return false;
        }
        let mut e = self.estimate.lock();
        let fresh = e.at.is_some_and(|at| now.saturating_sub(at) < SIZE_REFRESH);
        let after = e.measured.saturating_add(e.added).saturating_add(len_bytes);
        if fresh && after <= self.bytes {
            e.added = e.added.saturating_add(len_bytes);
            return true;
        }
        false
    }

    /// Record a measurement, counting the write about to be admitted.
    fn measured(&self, now: Duration, size: u64, len_bytes: u64) {
        *self.estimate.lock() = SizeEstimate {
            at: Some(now),
            measured: size,
            added: len_bytes,
        };
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
    ///
    /// # Errors
    /// [`NodeError::Auth`] "permission denied" on a checked handle without the `root` role
    /// (an alarm refuses everyone's writes).
    pub fn activate_alarm(&self, alarm: Alarm) -> Result<(), NodeError> {
        self.check_admin()?;
        match alarm {
            Alarm::NoSpace => self.inner.quota.nospace.store(true, Ordering::Release),
        }
        Ok(())
    }

    /// Clear `alarm` (etcd's `alarm disarm`); the next write over the quota raises it again.
    ///
    /// # Errors
    /// As [`Node::activate_alarm`].
    pub fn disarm_alarm(&self, alarm: Alarm) -> Result<(), NodeError> {
        self.check_admin()?;
        match alarm {
            Alarm::NoSpace => self.inner.quota.nospace.store(false, Ordering::Release),
        }
        Ok(())
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
        crate::raft::rt::blocking(move || engine.compact_all())
            .await
            .map_err(|e| NodeError::Raft {
                detail: format!("defragment task: {e}"),
            })??;
        self.check_quota(&running, 0)
            .map(|_| ())
            .or_else(|e| match e {
                // Still over the quota: the defragmentation itself succeeded and the alarm
                // stays raised, as etcd's Defragment answers.
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

    /// Admit a write of `len_bytes` that may grow the state, or raise or clear NOSPACE from
    /// a fresh measurement; `Err(NoSpace)` while it is raised.
    pub(super) fn check_quota(&self, running: &Running, len_bytes: u64) -> Result<(), NodeError> {
        let quota = &self.inner.quota;
        let now = self.inner.metrics.now();
        if quota.admit_on_estimate(now, len_bytes) {
            return Ok(());
        }
        let size = Self::state_bytes(running)?;
        let over = size > quota.bytes;
        quota.measured(now, size, if over { 0 } else { len_bytes });
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
