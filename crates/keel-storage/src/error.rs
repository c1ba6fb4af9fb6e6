//! The storage crate's error type.

use keel_types::Revision;

/// Result alias of keel-storage.
pub type Result<T, E = StorageError> = std::result::Result<T, E>;

/// Everything that can go wrong in keel-storage.
///
/// Display texts mirror etcd's messages where a client may match on them
/// (etcd: server/etcdserver/api/v3rpc/rpctypes/error.go, server/storage/mvcc/kvstore.go).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// An earlier write or fsync failed; the store refuses every later call.
    #[error("storage is poisoned by an earlier failure: {cause}")]
    Poisoned {
        /// What failed first.
        cause: String,
    },
    /// The engine reported an I/O failure (the store is poisoned from now on).
    #[error("storage i/o failed during {op}: {message}")]
    Io {
        /// The operation that failed.
        op: &'static str,
        /// The engine's message.
        message: String,
    },
    /// A persisted record could not be decoded.
    #[error("corrupted {what}: {detail}")]
    Corrupted {
        /// The kind of record.
        what: &'static str,
        /// What was wrong with it.
        detail: String,
    },
    /// A column family that was not registered at open.
    #[error("unknown column family {name:?}")]
    UnknownColumnFamily {
        /// The name asked for.
        name: String,
    },
    /// A request with an empty key.
    #[error("etcdserver: key is not provided")]
    EmptyKey,
    /// A key longer than the limit.
    #[error("etcdserver: request is too large: key of {len_bytes} bytes exceeds {max_bytes}")]
    KeyTooLarge {
        /// Length of the key.
        len_bytes: usize,
        /// The limit.
        max_bytes: usize,
    },
    /// A value longer than the limit.
    #[error("etcdserver: request is too large: value of {len_bytes} bytes exceeds {max_bytes}")]
    ValueTooLarge {
        /// Length of the value.
        len_bytes: usize,
        /// The limit.
        max_bytes: usize,
    },
    /// A whole request (e.g. a txn) larger than the limit.
    #[error("etcdserver: request is too large")]
    RequestTooLarge {
        /// Size of the request.
        len_bytes: usize,
        /// The limit.
        max_bytes: usize,
    },
    /// A read or watch below the compacted revision.
    #[error("mvcc: required revision has been compacted")]
    Compacted {
        /// The revision asked for.
        requested: Revision,
        /// The store's compacted revision.
        compacted: Revision,
    },
    /// A read or compaction above the current revision.
    #[error("mvcc: required revision is a future revision")]
    FutureRevision {
        /// The revision asked for.
        requested: Revision,
        /// The store's current revision.
        current: Revision,
    },
    /// A negative revision on input.
    #[error("invalid revision {value}: revisions are not negative")]
    NegativeRevision {
        /// The value given.
        value: i64,
    },
    /// A txn with more operations than allowed (nested txns included).
    #[error("etcdserver: too many operations in txn request")]
    TooManyOps {
        /// Operations in the request.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// A txn branch that writes one key twice.
    #[error("etcdserver: duplicate key given in txn request")]
    DuplicateKey,
    /// `ignore_value`/`ignore_lease` on a key that does not exist.
    #[error("etcdserver: key not found")]
    KeyNotFound,
    /// A value given together with `ignore_value`.
    #[error("etcdserver: value is provided")]
    ValueProvided,
    /// A lease given together with `ignore_lease`.
    #[error("etcdserver: lease is provided")]
    LeaseProvided,
    /// A snapshot stream that is malformed, truncated or fails its checksum.
    #[error("invalid snapshot: {detail}")]
    InvalidSnapshot {
        /// What was wrong.
        detail: String,
    },
    /// The store holds a snapshot install that did not finish; it must be installed again.
    #[error("an interrupted snapshot install left the store incomplete; install a snapshot again")]
    IncompleteInstall,
    /// A durable-log operation that breaks the log's contiguity.
    #[error("log: {detail}")]
    LogOrder {
        /// What was wrong.
        detail: String,
    },
    /// A read inside a write transaction at a revision the transaction sealed
    /// ([`crate::mvcc::WriteTxn::seal_revision`]) but has not committed yet.
    #[error("revision {requested} is not committed yet (committed: {committed})")]
    UncommittedRevision {
        /// The revision asked for.
        requested: Revision,
        /// The store's committed revision.
        committed: Revision,
    },
    /// A watch could not be registered or has been closed.
    #[error("watch: {detail}")]
    Watch {
        /// What was wrong.
        detail: String,
    },
}

impl StorageError {
    /// Whether this error leaves the store unusable (poisoned / i/o / corruption) rather than
    /// rejecting one request.
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            StorageError::Poisoned { .. }
                | StorageError::Io { .. }
                | StorageError::Corrupted { .. }
                | StorageError::IncompleteInstall
        )
    }

    pub(crate) fn corrupted(what: &'static str, detail: impl Into<String>) -> Self {
        StorageError::Corrupted {
            what,
            detail: detail.into(),
        }
    }
}
