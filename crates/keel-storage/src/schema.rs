//! Physical layout of the MVCC keyspace (format version 1).
//!
//! Four column families, all written in the same batch per revision:
//!
//! ```text
//! kv          user key                      -> Record      latest live version of each key
//! kv_history  esc(user key) ++ !main (8 BE) -> Record      every kept version, newest first
//! kv_revs     main (8 BE) ++ sub (4 BE)     -> user key    one entry per change, revision order
//! meta        name                          -> value       see the META_* keys below
//! ```
//!
//! `esc` is an order-preserving, prefix-free escape: byte `0x00` becomes `0x00 0xff` and the
//! key ends with `0x00 0x01`. So `kv_history` is ordered by (user key ascending, revision
//! descending): the version of `k` visible at revision `R` is the first entry at or after
//! `esc(k) ++ !R`. Nothing has to be rebuilt at open: reads at the latest revision use `kv`,
//! reads at older revisions and compaction use `kv_history`, watch catch-up uses `kv_revs`.
//!
//! A key is written at most once per main revision (txns refuse duplicate keys), so
//! (key, main) identifies a version; the sub position is kept in the record.

/// Latest live version of each key.
pub const KV_CF: &str = "kv";
/// Every kept version of each key, newest first.
pub const HISTORY_CF: &str = "kv_history";
/// One entry per change in revision order (watch replay, compaction).
pub const REVS_CF: &str = "kv_revs";
/// Store metadata.
pub const META_CF: &str = "meta";

/// Every column family the MVCC store needs; pass them (with other crates' families) when
/// opening the engine.
pub const COLUMN_FAMILIES: [&str; 4] = [KV_CF, HISTORY_CF, REVS_CF, META_CF];

/// Format version of the layout, stored under [`META_FORMAT`].
pub const FORMAT_VERSION: u8 = 1;

/// `meta` key: format version (1 byte).
pub const META_FORMAT: &[u8] = b"format";
/// `meta` key: current revision (8 bytes BE).
pub const META_REVISION: &[u8] = b"revision";
/// `meta` key: compaction revision requested (8 bytes BE); reads below it are refused.
pub const META_COMPACT_SCHEDULED: &[u8] = b"compact_scheduled";
/// `meta` key: revision up to which compaction physically finished (8 bytes BE).
pub const META_COMPACT_FINISHED: &[u8] = b"compact_finished";
/// `meta` key: the caller's opaque applied marker.
pub const META_APPLIED: &[u8] = b"applied";
/// `meta` key: present while a snapshot install is in progress.
pub const META_INSTALLING: &[u8] = b"installing";
