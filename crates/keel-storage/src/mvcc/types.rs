//! Requests, responses and values of the MVCC keyspace (etcd's KV API, as keel values).

use bytes::Bytes;
use keel_types::{KeyRange, LeaseId, Revision};

/// A key at one version, as etcd's `mvccpb.KeyValue`.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct KeyValue {
    /// The key.
    pub key: Bytes,
    /// Revision of the key's creation (since its last deletion).
    pub create_revision: Revision,
    /// Revision of this version.
    pub mod_revision: Revision,
    /// Number of writes since creation (1 = just created).
    pub version: u64,
    /// The value (empty with `keys_only`).
    pub value: Bytes,
    /// Attached lease.
    pub lease: Option<LeaseId>,
}

/// What [`RangeRequest`] sorts by.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum SortTarget {
    /// The key (the natural order).
    #[default]
    Key,
    /// The per-key version.
    Version,
    /// The create revision.
    Create,
    /// The mod revision.
    Mod,
    /// The value bytes.
    Value,
}

/// Sort direction of [`RangeRequest`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum SortOrder {
    /// No sorting asked (key order; etcd sorts ascending when the target is not the key).
    #[default]
    None,
    /// Ascending.
    Ascend,
    /// Descending.
    Descend,
}

/// A read of a key range (etcd's `RangeRequest`).
///
/// # Examples
/// ```
/// use keel_storage::mvcc::{RangeRequest, SortOrder, SortTarget};
/// use keel_types::KeyRange;
/// let req = RangeRequest {
///     limit: Some(10),
///     sort_target: SortTarget::Mod,
///     sort_order: SortOrder::Descend,
///     ..RangeRequest::new(KeyRange::prefix(&b"jobs/"[..]))
/// };
/// assert!(req.revision.is_none());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct RangeRequest {
    /// Keys to read.
    pub range: KeyRange,
    /// Revision to read at; `None` = latest.
    pub revision: Option<Revision>,
    /// Most keys to return; `None` = all.
    pub limit: Option<usize>,
    /// Sort target.
    pub sort_target: SortTarget,
    /// Sort order.
    pub sort_order: SortOrder,
    /// Omit values.
    pub keys_only: bool,
    /// Return only the count.
    pub count_only: bool,
    /// Drop keys whose mod revision is below this.
    pub min_mod_revision: Option<Revision>,
    /// Drop keys whose mod revision is above this.
    pub max_mod_revision: Option<Revision>,
    /// Drop keys whose create revision is below this.
    pub min_create_revision: Option<Revision>,
    /// Drop keys whose create revision is above this.
    pub max_create_revision: Option<Revision>,
}

impl RangeRequest {
    /// Read every key of `range` at the latest revision.
    pub fn new(range: KeyRange) -> Self {
        RangeRequest {
            range,
            revision: None,
            limit: None,
            sort_target: SortTarget::Key,
            sort_order: SortOrder::None,
            keys_only: false,
            count_only: false,
            min_mod_revision: None,
            max_mod_revision: None,
            min_create_revision: None,
            max_create_revision: None,
        }
    }

    /// Whether any post-filter is set (etcd then fetches everything before limiting).
    pub(crate) fn has_filters(&self) -> bool {
        self.min_mod_revision.is_some()
            || self.max_mod_revision.is_some()
            || self.min_create_revision.is_some()
            || self.max_create_revision.is_some()
    }
}

/// Result of a range.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct RangeResponse {
    /// The keys (none with `count_only`).
    pub kvs: Vec<KeyValue>,
    /// Whether `limit` cut the result.
    pub more: bool,
    /// Number of keys in the range at the revision (before limit and filters).
    pub count: u64,
    /// The store's current revision when the read was served.
    pub revision: Revision,
}

/// A write of one key (etcd's `PutRequest`).
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct PutRequest {
    /// The key (not empty).
    pub key: Bytes,
    /// The value.
    pub value: Bytes,
    /// Lease to attach (the caller checks that it exists).
    pub lease: Option<LeaseId>,
    /// Return the previous version.
    pub prev_kv: bool,
    /// Keep the current value (the key must exist; `value` must be empty).
    pub ignore_value: bool,
    /// Keep the current lease (the key must exist; `lease` must be none).
    pub ignore_lease: bool,
}

impl PutRequest {
    /// Put `value` at `key`, no lease, no options.
    pub fn new(key: impl Into<Bytes>, value: impl Into<Bytes>) -> Self {
        PutRequest {
            key: key.into(),
            value: value.into(),
            lease: None,
            prev_kv: false,
            ignore_value: false,
            ignore_lease: false,
        }
    }
}

/// Result of a put.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct PutResponse {
    /// The previous version, when asked and present.
    pub prev_kv: Option<KeyValue>,
    /// Revision after the write.
    pub revision: Revision,
}

/// A deletion of a key range (etcd's `DeleteRangeRequest`).
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct DeleteRequest {
    /// Keys to delete.
    pub range: KeyRange,
    /// Return the deleted versions.
    pub prev_kv: bool,
}

/// Result of a deletion.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct DeleteResponse {
    /// Number of keys deleted.
    pub deleted: u64,
    /// The deleted versions, when asked.
    pub prev_kvs: Vec<KeyValue>,
    /// Revision after the deletion (unchanged when nothing was deleted).
    pub revision: Revision,
}

/// What a [`Compare`] looks at.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum CompareTarget {
    /// The per-key version (0 when missing).
    Version(u64),
    /// The create revision (0 when missing).
    Create(Revision),
    /// The mod revision (0 when missing).
    Mod(Revision),
    /// The value (a missing key never matches).
    Value(Bytes),
    /// The attached lease (none when missing).
    Lease(Option<LeaseId>),
}

/// Comparison operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum CompareOp {
    /// `=`
    Equal,
    /// `!=`
    NotEqual,
    /// `<`
    Less,
    /// `>`
    Greater,
}

/// A txn guard: `target(key) op value` for every key of `range`.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Compare {
    /// Keys compared (each must satisfy it).
    pub range: KeyRange,
    /// Operator.
    pub op: CompareOp,
    /// Target and operand.
    pub target: CompareTarget,
}

/// One operation of a txn branch.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum RequestOp {
    /// A read.
    Range(RangeRequest),
    /// A write.
    Put(PutRequest),
    /// A deletion.
    Delete(DeleteRequest),
    /// A nested txn.
    #[cfg_attr(
        feature = "serde",
        serde(deserialize_with = "crate::nesting::deserialize_nested")
    )]
    Txn(TxnRequest),
}

/// Result of one txn operation.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum ResponseOp {
    /// Result of a read.
    Range(RangeResponse),
    /// Result of a write.
    Put(PutResponse),
    /// Result of a deletion.
    Delete(DeleteResponse),
    /// Result of a nested txn.
    #[cfg_attr(
        feature = "serde",
        serde(deserialize_with = "crate::nesting::deserialize_nested")
    )]
    Txn(TxnResponse),
}

/// An atomic compare-then-act (etcd's `TxnRequest`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct TxnRequest {
    /// Guards; all must hold for `success` to run.
    pub compare: Vec<Compare>,
    /// Operations when every guard holds.
    pub success: Vec<RequestOp>,
    /// Operations otherwise.
    pub failure: Vec<RequestOp>,
}

/// Result of a txn.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct TxnResponse {
    /// Whether the guards held.
    pub succeeded: bool,
    /// One response per executed operation.
    pub responses: Vec<ResponseOp>,
    /// Revision after the txn (unchanged when it wrote nothing).
    pub revision: Revision,
}

/// Kind of a change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum EventKind {
    /// A put.
    Put,
    /// A deletion.
    Delete,
}

/// One change of the keyspace, as watchers see it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Event {
    /// Put or delete.
    pub kind: EventKind,
    /// The new version (for a delete: key and mod revision only).
    pub kv: KeyValue,
    /// The version before the change, if any.
    pub prev_kv: Option<KeyValue>,
    /// Sub position inside the revision.
    pub sub: u32,
}

/// Outcome of a committed write transaction.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Committed {
    /// Store revision after the commit.
    pub revision: Revision,
    /// The changes, in sub order (empty when nothing changed).
    pub events: Vec<Event>,
}
