//! The MVCC keyspace with etcd's semantics: revisions, ranges at any revision, txn,
//! compaction, hash, history.

mod cache;
mod check;
mod read;
mod store;
mod types;
mod write;

pub use check::{check_txn_depth, txn_depth};
pub use store::{HashKv, MvccStore};
pub use types::{
    Committed, Compare, CompareOp, CompareTarget, DeleteRequest, DeleteResponse, Event, EventKind,
    KeyValue, PutRequest, PutResponse, RangeRequest, RangeResponse, RequestOp, ResponseOp,
    SortOrder, SortTarget, TxnRequest, TxnResponse,
};
pub use write::WriteTxn;
