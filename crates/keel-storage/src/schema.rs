//! Physical layout of the MVCC keyspace (format version 2).
//!
//! Three column families, all written in the same batch per revision:
//!
//! ```text
//! kv_history  esc(user key) ++ !main (8 BE) -> Record      every kept version, newest first
//! kv_revs     main (8 BE)                   -> key list    the keys each revision changed
//! meta        name                          -> value       see the META_* keys below
//! ```
//!
//! `esc` is an order-preserving, prefix-free escape: byte `0x00` becomes `0x00 0xff` and the
//! key ends with `0x00 0x01`. So `kv_history` is ordered by (user key ascending, revision
//! descending): the version of `k` visible at revision `R` is the first entry at or after
//! `esc(k) ++ !R`, and its latest version is the first entry at or after `esc(k)`. Nothing
//! has to be rebuilt at open: every read seeks `kv_history` (the writer keeps a bounded
//! cache of recently written keys' latest versions), watch catch-up and compaction walk
//! `kv_revs`. A `kv_revs` value lists the revision's changed keys in sub order (4-byte BE
//! length, then the key; see [`crate::codec::push_revs_key`]).
//!
//! A put writes one record per key plus one `kv_revs` entry and the revision marker per
//! revision, so a batch of puts costs little more than the same puts in plain RocksDB.
//!
//! A key is written at most once per main revision (txns refuse duplicate keys), so
//! (key, main) identifies a version; the sub position is kept in the record.
//!
//! Format 1 also kept each key's latest version in a `kv` family and one `kv_revs` entry per
//! change, keyed by (main, sub). A format 1 store opens as format 2: its `kv_revs` entries
//! still parse ([`crate::codec::parse_revs_entry`]), and its `kv` family is left unread
//! (RocksDB opens every family a directory holds).

/// Every kept version of each key, newest first.
pub const HISTORY_CF: &str = "kv_history";
/// The keys each revision changed, in revision order (watch replay, compaction).
pub const REVS_CF: &str = "kv_revs";
/// Store metadata.
pub const META_CF: &str = "meta";

/// Every column family the MVCC store needs; pass them (with other crates' families) when
/// opening the engine.
pub const COLUMN_FAMILIES: [&str; 3] = [HISTORY_CF, REVS_CF, META_CF];

/// Format version of the layout, stored under [`META_FORMAT`].
pub const FORMAT_VERSION: u8 = 2;

/// The earlier format a store of this version still opens (see the module docs).
pub const FORMAT_VERSION_1: u8 = 1;

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
