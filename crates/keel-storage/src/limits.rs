//! Limits of the MVCC keyspace (etcd's defaults).

/// etcd's default `--max-request-bytes`: 1.5 MiB.
pub const REQUEST_BYTES_MAX: usize = 1536 * 1024;
/// etcd's default `--max-txn-ops`.
pub const TXN_OPS_MAX: usize = 128;

/// Most nesting levels of a txn (a txn inside a txn's branch is one level more). etcd has no
/// explicit limit, but gRPC's decoder stops at about 50 txn levels (100 message levels), so
/// no etcd client sends more than this. Checked before a request is proposed.
pub const TXN_DEPTH_MAX: usize = 64;

/// Most levels of recursive values (nested txns and their responses) a decoder enters: a
/// bound on its stack, four times [`TXN_DEPTH_MAX`] so that everything keel accepted decodes.
pub const DECODE_NESTING_MAX: usize = 4 * TXN_DEPTH_MAX;
/// Events returned by one watch catch-up step (whole revisions are never split, so a single
/// revision larger than this is returned whole).
pub const CATCH_UP_EVENTS_MAX: usize = 1024;
/// Batches buffered per watcher before it becomes a victim and is caught up from history.
pub const WATCHER_BUFFER_BATCHES: usize = 128;
/// Watchers one hub accepts.
pub const WATCHERS_MAX: usize = 1_000_000;
/// Keys one compaction batch removes before releasing the writer.
pub const COMPACTION_BATCH_KEYS: usize = 1000;
/// Entries of the cache of latest versions (a put that hits it skips reading the previous
/// version from the engine; a single-key read at the latest revision that hits it reads
/// nothing from the engine). When either bound would be exceeded the cache is
/// emptied and refills from later commits; misses read the engine.
pub const LATEST_CACHE_ENTRIES_MAX: usize = 256 * 1024;
/// Bytes (keys plus values, as counted by the cache) the latest-version cache holds at most;
/// a single entry larger than an eighth of this is never cached.
pub const LATEST_CACHE_BYTES_MAX: usize = 64 << 20;

/// Validated size limits of a store.
///
/// # Examples
/// ```
/// use keel_storage::MvccLimits;
/// let limits = MvccLimits { txn_ops_max: 64, ..MvccLimits::default() };
/// assert_eq!(limits.request_bytes_max, 1536 * 1024);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MvccLimits {
    /// Largest key.
    pub key_bytes_max: usize,
    /// Largest value.
    pub value_bytes_max: usize,
    /// Largest request (sum of keys and values of a put or txn).
    pub request_bytes_max: usize,
    /// Most operations per txn level (etcd's `--max-txn-ops`).
    pub txn_ops_max: usize,
}

impl Default for MvccLimits {
    fn default() -> Self {
        MvccLimits {
            key_bytes_max: REQUEST_BYTES_MAX,
            value_bytes_max: REQUEST_BYTES_MAX,
            request_bytes_max: REQUEST_BYTES_MAX,
            txn_ops_max: TXN_OPS_MAX,
        }
    }
}
