//! Checks of the wire conversion (`convert`), shared by the `grpc_request` fuzz target in
//! `fuzz/` and this crate's property tests. Built with the `fuzzing` feature (and in tests);
//! not part of the server's API.
//!
//! Each check converts an etcd request as the gRPC services do and reports, as an `Err`, a
//! conversion that disagrees with etcd's own checks (a request etcd refuses accepted, or the
//! reverse) or that loses or reorders what the request asks for.
//!
//! # Examples
//! ```
//! use keel_server::fuzzing;
//! // A put of an empty key: refused, as etcd refuses it, so the check passes.
//! fuzzing::check_encoded(&[2]).unwrap();
//! ```

use crate::convert;
use crate::pb::etcdserverpb as pb;
use keel::ReadConsistency;
use keel_storage::mvcc::{RequestOp, TxnRequest};
use keel_types::KeyRange;
use pb::request_op::Request as W;
use prost::Message;

/// The `--max-txn-ops` the checks convert under (small, so that fuzzed requests cross it).
pub const OPS_MAX: usize = 4;

/// Whether etcd's checks accept `r`: a non-empty key and valid sort enums.
pub fn range_valid(r: &pb::RangeRequest) -> bool {
    !r.key.is_empty() && (0..=4).contains(&r.sort_target) && (0..=2).contains(&r.sort_order)
}

/// Whether etcd's checks accept `t` (at most [`OPS_MAX`] compares or operations per
/// branch, valid operations), at every nesting depth.
pub fn txn_valid(t: &pb::TxnRequest) -> bool {
    let count = t.compare.len().max(t.success.len()).max(t.failure.len());
    count <= OPS_MAX
        && t.success
            .iter()
            .chain(&t.failure)
            .all(|op| match &op.request {
                None => true,
                Some(W::RequestRange(r)) => range_valid(r),
                Some(W::RequestPut(r)) => !r.key.is_empty(),
                Some(W::RequestDeleteRange(r)) => !r.key.is_empty(),
                Some(W::RequestTxn(t)) => txn_valid(t),
            })
}

/// Whether the converted `txn` keeps every compare of `wire` and every operation that
/// names one, in order, at every nesting depth.
pub fn same_shape(wire: &pb::TxnRequest, txn: &TxnRequest) -> bool {
    let ops = |ops: &[pb::RequestOp], got: &[RequestOp]| {
        let named: Vec<&W> = ops.iter().filter_map(|op| op.request.as_ref()).collect();
        named.len() == got.len()
            && named.iter().zip(got).all(|(w, k)| match (w, k) {
                (W::RequestTxn(w), RequestOp::Txn(k)) => same_shape(w, k),
                (W::RequestRange(_), RequestOp::Range(_))
                | (W::RequestPut(_), RequestOp::Put(_))
                | (W::RequestDeleteRange(_), RequestOp::Delete(_)) => true,
                _ => false,
            })
    };
    wire.compare.len() == txn.compare.len()
        && ops(&wire.success, &txn.success)
        && ops(&wire.failure, &txn.failure)
}

/// A txn converts iff etcd accepts it, and keeps its shape.
///
/// # Errors
/// What disagrees.
pub fn check_txn(wire: &pb::TxnRequest) -> Result<(), String> {
    match convert::txn_request(wire.clone(), OPS_MAX) {
        Ok(_) if !txn_valid(wire) => Err(format!("accepted a txn etcd refuses: {wire:?}")),
        Ok(txn) if !same_shape(wire, &txn) => {
            Err(format!("operations lost or reordered: {wire:?}"))
        }
        Ok(_) => Ok(()),
        Err(e) if txn_valid(wire) => Err(format!("refused a valid txn ({e:?}): {wire:?}")),
        Err(_) => Ok(()),
    }
}

/// A range converts iff etcd accepts it, with 0 read as "unset" (latest revision, no
/// limit) and the consistency it asks for.
///
/// # Errors
/// What disagrees.
pub fn check_range(wire: &pb::RangeRequest) -> Result<(), String> {
    match convert::range_request(wire.clone()) {
        Ok((r, consistency)) => {
            let fine = range_valid(wire)
                && r.revision.is_none() == (wire.revision <= 0)
                && r.limit.is_none() == (wire.limit <= 0)
                && (consistency == ReadConsistency::Serializable) == wire.serializable
                && r.range == KeyRange::from_etcd(wire.key.clone(), wire.range_end.clone());
            if fine {
                Ok(())
            } else {
                Err(format!("range converted wrongly: {wire:?} -> {r:?}"))
            }
        }
        Err(_) if range_valid(wire) => Err(format!("refused a valid range: {wire:?}")),
        Err(_) => Ok(()),
    }
}

/// A compare converts for any enum and operand, onto the range etcd reads.
///
/// # Errors
/// What disagrees.
pub fn check_compare(wire: &pb::Compare) -> Result<(), String> {
    let c = convert::compare(wire.clone());
    if c.range == KeyRange::from_etcd(wire.key.clone(), wire.range_end.clone()) {
        Ok(())
    } else {
        Err(format!("compare on the wrong range: {wire:?} -> {c:?}"))
    }
}

/// A put or delete converts iff its key is not empty.
///
/// # Errors
/// What disagrees.
fn check_keyed<T: std::fmt::Debug, E>(key: &[u8], converted: Result<T, E>) -> Result<(), String> {
    match converted {
        Ok(got) if key.is_empty() => Err(format!("accepted an empty key: {got:?}")),
        Err(_) if !key.is_empty() => Err(format!("refused a non-empty key {key:?}")),
        _ => Ok(()),
    }
}

/// Decode `bytes[1..]` as the request kind `bytes[0]` selects (txn, range, put, delete,
/// compare) and check its conversion. Bytes that do not decode are fine: the gRPC layer
/// refuses them before any conversion.
///
/// # Errors
/// What disagrees.
pub fn check_encoded(bytes: &[u8]) -> Result<(), String> {
    let Some((kind, body)) = bytes.split_first() else {
        return Ok(());
    };
    match kind % 5 {
        0 => pb::TxnRequest::decode(body).map_or(Ok(()), |w| check_txn(&w)),
        1 => pb::RangeRequest::decode(body).map_or(Ok(()), |w| check_range(&w)),
        2 => pb::PutRequest::decode(body).map_or(Ok(()), |w| {
            check_keyed(&w.key.clone(), convert::put_request(w))
        }),
        3 => pb::DeleteRangeRequest::decode(body).map_or(Ok(()), |w| {
            check_keyed(&w.key.clone(), convert::delete_request(w))
        }),
        _ => pb::Compare::decode(body).map_or(Ok(()), |w| check_compare(&w)),
    }
}
