//! Every limit of the node, as documented constants (etcd's defaults unless noted).

use std::time::Duration;

/// Largest encoded replicated request (etcd: `--max-request-bytes`, 1.5 MiB), plus a small
/// allowance for the request envelope.
pub const REQUEST_BYTES_MAX: usize = 1536 * 1024 + REQUEST_ENVELOPE_BYTES;

/// Room for the replicated request's own encoding on top of the store's request limit.
pub const REQUEST_ENVELOPE_BYTES: usize = 4096;

/// Default deadline of one client call (etcd's client default request timeout is 5 s plus
/// the election timeout; keel uses one number).
pub const REQUEST_TIMEOUT_DEFAULT: Duration = Duration::from_secs(5);

/// Default Raft heartbeat interval (etcd: `--heartbeat-interval` 100 ms).
pub const HEARTBEAT_INTERVAL_DEFAULT: Duration = Duration::from_millis(100);

/// Default minimum election timeout (etcd: `--election-timeout` 1000 ms); openraft picks each
/// timeout uniformly between this and twice this.
pub const ELECTION_TIMEOUT_DEFAULT: Duration = Duration::from_millis(1000);

/// Pause before retrying a forwarded request after "not leader" or an unreachable leader.
pub const FORWARD_RETRY_PAUSE: Duration = Duration::from_millis(20);

/// Most writes a member forwards to the leader in one peer call (see the forward batcher in
/// `raft/forward_batch.rs`).
pub const FORWARD_BATCH_MAX: usize = 256;

/// Most encoded request bytes in one call of forwarded writes (a larger write goes alone).
pub const FORWARD_BATCH_BYTES_MAX: usize = 4 * 1024 * 1024;

/// Default space quota of the replicated state (etcd's `--quota-backend-bytes` default, 2 GiB).
pub const QUOTA_BACKEND_BYTES_DEFAULT: u64 = 2 * 1024 * 1024 * 1024;

/// Entries applied in one write transaction at most (see the state machine's invariant 1):
/// one engine write for a run of ready KV entries instead of one per entry.
pub const APPLY_GROUP_ENTRIES_MAX: usize = 256;

/// Bytes of engine batch after which a run of entries applied together ends (the entry
/// that crosses it is the run's last).
pub const APPLY_GROUP_BYTES_MAX: usize = 4 * 1024 * 1024;

/// Bytes per snapshot chunk exported from the store.
pub const SNAPSHOT_CHUNK_BYTES_MAX: usize = 1024 * 1024;

/// Superseded versions removed per physical compaction step during apply.
pub const COMPACTION_STEP_KEYS_MAX: usize = 10_000;

/// Default number of applied entries between snapshots (etcd 3.2 and later:
/// `--snapshot-count` 100000). Each snapshot exports the whole state, so under a steady write
/// load a smaller count costs throughput: at 10,000 the node benchmark's 64 writers made
/// about 30% fewer puts per second than at 100,000.
pub const SNAPSHOT_ENTRIES_DEFAULT: u64 = 100_000;

/// Default number of entries kept in the log behind a snapshot, so slightly lagging members
/// catch up from the log rather than a snapshot (etcd: `--experimental-snapshot-catchup-entries`
/// 5000).
pub const SNAPSHOT_CATCH_UP_ENTRIES_DEFAULT: u64 = 5_000;

/// Longest a shutdown waits for the consensus engine's workers to release the storage (so a
/// new node can open the same directory); after it, shutdown returns anyway with a warning.
pub const SHUTDOWN_RELEASE_MAX: Duration = Duration::from_secs(5);

/// Longest a start waits for purely local recovery: the consensus engine loading its
/// configuration from the log and re-applying the committed entries this member already holds
/// (at most [`SNAPSHOT_ENTRIES_DEFAULT`]-ish entries, since the log is purged after each
/// snapshot). It needs no other member, so it is not bounded by the request timeout, which a
/// busy machine can exceed; a start that makes no progress for this long fails with the
/// engine's state in the error.
pub const START_LOCAL_WAIT_MAX: Duration = Duration::from_secs(60);

/// How often a shutdown checks whether the storage has been released.
pub const SHUTDOWN_POLL_INTERVAL: Duration = Duration::from_millis(1);

/// The most expired leases (and, separately, checkpoints) the lease driver proposes in one
/// entry per tick; the rest are reported on the next ticks.
pub const LEASE_DUE_PER_TICK_MAX: usize = 1000;

/// The most keep-alives one replicated renew entry carries (concurrent keep-alives on one
/// member are batched).
pub const RENEW_BATCH_MAX: usize = 1000;

/// Committed but not yet applied entries above which this member refuses new writes with
/// [`crate::NodeError::TooManyRequests`] (etcd: `maxGapBetweenApplyAndCommitIndex`, 5000):
/// back-pressure when apply falls behind, instead of an unbounded queue.
pub const APPLY_BACKLOG_ENTRIES_MAX: u64 = 5000;

/// Newest log entries each member keeps decoded in memory for applying them (see
/// `raft/recent_entries.rs`).
pub const RECENT_ENTRIES_MAX: usize = 1024;

/// Most encoded bytes of the log entries kept in memory (see [`RECENT_ENTRIES_MAX`]).
pub const RECENT_ENTRIES_BYTES_MAX: usize = 64 * 1024 * 1024;
