//! openraft's log storage on keel-storage's [`DurableLog`].
//!
//! Invariants (the durability argument):
//! 1. `append` signals openraft's IO callback only once the entries are on disk: it writes them
//!    buffered and hands the callback to the group-commit syncer (`log_sync`), which completes
//!    it after an fsync that started after the write. An entry counts toward commit only once
//!    it is on disk.
//! 2. The vote is written synced before `save_vote` returns: a member never votes twice in a
//!    term across a crash.
//! 3. The committed log id is written buffered and handed to the OS before `save_committed`
//!    returns ([`Engine::flush_buffered`]; the node's engine keeps buffered writes in the
//!    process). openraft saves it before it applies the entries it covers, and a lone
//!    survivor forced into a new cluster applies its log up to it
//!    (`super::apply_committed_offline`), so it must survive a crash of the process, as
//!    etcd's hard state in its WAL does. Log and state share one engine (one WAL), and
//!    entries are on disk before they count toward commit, so a committed id that survived
//!    a crash refers to entries that survived it too.
//! 4. Before a purge the engine is synced: the state that replaces the purged entries is
//!    durable before the entries disappear. The purged log id is recorded in the same synced
//!    step, so `get_log_state` can report it after the entries are gone.
//! 5. The newest entries are also kept decoded in memory (`super::recent_entries`): an
//!    append enters them once the log took them, and a truncate or purge drops its entries
//!    from memory before it drops them from the log, so memory never holds an entry the log
//!    does not. Reads of entries it holds entirely are answered from it.

use super::recent_entries::RecentEntries;
use super::{io_err, Entry, LogId, TypeConfig, Vote};
use crate::codec::{decode_io, encode_io};
use keel_storage::engine::{Durability, Engine};
use keel_storage::DurableLog;
use openraft::storage::{IOFlushed, LogState, RaftLogReader, RaftLogStorage};
use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

const META_PURGED: &str = "purged_log_id";
pub(super) const META_COMMITTED: &str = "committed_log_id";

/// The Raft log on a [`DurableLog`]; cheap to clone (the reader is a clone).
#[derive(Clone)]
pub(crate) struct LogStore {
    log: Arc<DurableLog>,
    engine: Arc<dyn Engine>,
    syncer: super::log_sync::LogSyncer,
    /// Invariant 5; shared by the store and its readers.
    recent: Arc<parking_lot::Mutex<RecentEntries>>,
}

impl Debug for LogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogStore")
            .field("log", &self.log)
            .finish_non_exhaustive()
    }
}

impl LogStore {
    /// Adapt `log`, which lives on `engine`, and start its syncer thread.
    ///
    /// # Errors
    /// The syncer thread could not be started.
    pub(crate) fn new(
        log: Arc<DurableLog>,
        engine: Arc<dyn Engine>,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> io::Result<Self> {
        let syncer = super::log_sync::LogSyncer::start(Arc::clone(&engine), metrics)?;
        Ok(LogStore {
            log,
            engine,
            syncer,
            recent: Arc::default(),
        })
    }

    fn purged(&self) -> io::Result<Option<LogId>> {
        match self.log.meta(META_PURGED).map_err(io_err)? {
            Some(b) => Ok(Some(decode_io("purged log id", &b)?)),
            None => Ok(None),
        }
    }
}

fn index_range(range: &impl RangeBounds<u64>) -> (u64, u64) {
    let from = match range.start_bound() {
        Bound::Included(&i) => i,
        Bound::Excluded(&i) => i.saturating_add(1),
        Bound::Unbounded => 0,
    };
    let to = match range.end_bound() {
        Bound::Included(&i) => i.saturating_add(1),
        Bound::Excluded(&i) => i,
        Bound::Unbounded => u64::MAX,
    };
    (from, to)
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> io::Result<Vec<Entry>> {
        let (from, to) = index_range(&range);
        if from >= to {
            return Ok(Vec::new());
        }
        if let Some(entries) = self.recent.lock().get(from, to) {
            return Ok(entries);
        }
        self.log
            .entries(from, to)
            .map_err(io_err)?
            .iter()
            .map(|(_, bytes)| decode_io("log entry", bytes))
            .collect()
    }

    async fn read_vote(&mut self) -> io::Result<Option<Vote>> {
        match self.log.vote().map_err(io_err)? {
            Some(b) => Ok(Some(decode_io("vote", &b)?)),
            None => Ok(None),
        }
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> io::Result<LogState<TypeConfig>> {
        let purged = self.purged()?;
        let last = match self.log.bounds().last {
            Some(index) => match self.log.get(index).map_err(io_err)? {
                Some(bytes) => Some(decode_io::<Entry>("log entry", &bytes)?.log_id),
                None => return Err(io::Error::other(format!("log entry {index} missing"))),
            },
            None => purged,
        };
        Ok(LogState {
            last_purged_log_id: purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> io::Result<()> {
        self.log
            .save_vote(&encode_io("vote", vote)?)
            .map_err(io_err)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> io::Result<()> {
        let bytes = encode_io("committed log id", &committed)?;
        self.log
            .save_meta(META_COMMITTED, &bytes, Durability::Buffered)
            .map_err(io_err)?;
        // Invariant 3.
        self.engine.flush_buffered().map_err(io_err)
    }

    async fn read_committed(&mut self) -> io::Result<Option<LogId>> {
        persisted_committed(&self.log)
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<TypeConfig>) -> io::Result<()>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let encoded = entries
            .iter()
            .map(|e| Ok((e.log_id.index, encode_io("log entry", e)?)))
            .collect::<io::Result<Vec<_>>>()?;
        // Invariant 1: written now, the callback completes after the next fsync.
        let sizes: Vec<usize> = encoded.iter().map(|(_, bytes)| bytes.len()).collect();
        let written = self.log.append(encoded, Durability::Buffered);
        if written.is_ok() {
            // Invariant 5. Readers of these entries come after the fsync, so after this.
            self.recent.lock().append(entries.iter().zip(sizes));
        }
        match written.map_err(io_err) {
            #[cfg(feature = "planted-bugs")]
            Ok(()) if crate::planted::on(&crate::planted::ACK_BEFORE_FSYNC) => {
                callback.io_completed(Ok(()));
                Ok(())
            }
            Ok(()) => self.syncer.after_sync(callback),
            Err(e) => {
                callback.io_completed(Err(io::Error::other(e.to_string())));
                Err(e)
            }
        }
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> io::Result<()> {
        let from = last_log_id.map_or(0, |l| l.index + 1);
        // Invariant 5: dropped from the cache first, so no reader sees them after the log
        // lost them (if the truncate fails the engine is poisoned: the cache only misses).
        self.recent.lock().truncate_from(from);
        self.log.truncate_from(from).map_err(io_err)
    }

    async fn purge(&mut self, log_id: LogId) -> io::Result<()> {
        // Invariant 4: the state replacing these entries is durable first.
        self.engine.sync().map_err(io_err)?;
        // One batch: the purged log id never runs ahead of the entries (a crash between two
        // writes left it ahead, and openraft then refused the log as corrupted).
        let bytes = encode_io("purged log id", &log_id)?;
        self.recent.lock().purge_to(log_id.index);
        (self.log)
            .purge_to_with_meta(log_id.index, Some((META_PURGED, &bytes)))
            .map_err(io_err)
    }
}

/// The committed log id `log` last persisted (openraft's `save_committed`), if any.
pub(super) fn persisted_committed(log: &DurableLog) -> io::Result<Option<LogId>> {
    match log.meta(META_COMMITTED).map_err(io_err)? {
        Some(b) => decode_io("committed log id", &b),
        None => Ok(None),
    }
}
