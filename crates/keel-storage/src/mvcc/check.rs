//! Request validation that runs before anything changes, so a refused request writes nothing.
//!
//! etcd: server/etcdserver/api/v3rpc/key.go (`checkTxnRequest`, `checkIntervals`).

use super::types::{PutRequest, RequestOp, TxnRequest};
use crate::error::{Result, StorageError};
use crate::limits::MvccLimits;
use keel_types::KeyRange;
use std::collections::BTreeSet;

pub(crate) fn check_key(key: &[u8], limits: &MvccLimits) -> Result<()> {
    if key.is_empty() {
        return Err(StorageError::EmptyKey);
    }
    if key.len() > limits.key_bytes_max {
        return Err(StorageError::KeyTooLarge {
            len_bytes: key.len(),
            max_bytes: limits.key_bytes_max,
        });
    }
    Ok(())
}

pub(crate) fn check_range(range: &KeyRange, limits: &MvccLimits) -> Result<()> {
    check_key(range.start(), limits)
}

pub(crate) fn check_put(req: &PutRequest, limits: &MvccLimits) -> Result<()> {
    check_key(&req.key, limits)?;
    if req.value.len() > limits.value_bytes_max {
        return Err(StorageError::ValueTooLarge {
            len_bytes: req.value.len(),
            max_bytes: limits.value_bytes_max,
        });
    }
    let size = req.key.len() + req.value.len();
    if size > limits.request_bytes_max {
        return Err(StorageError::RequestTooLarge {
            len_bytes: size,
            max_bytes: limits.request_bytes_max,
        });
    }
    if req.ignore_value && !req.value.is_empty() {
        return Err(StorageError::ValueProvided);
    }
    if req.ignore_lease && req.lease.is_some() {
        return Err(StorageError::LeaseProvided);
    }
    Ok(())
}

/// The number of txn levels in `req` (1 for a txn without nested txns), counted without
/// recursion, so that any depth is measured safely.
pub fn txn_depth(req: &TxnRequest) -> usize {
    let mut deepest = 0;
    let mut pending = vec![(req, 1usize)];
    while let Some((txn, depth)) = pending.pop() {
        deepest = deepest.max(depth);
        for op in txn.success.iter().chain(&txn.failure) {
            if let RequestOp::Txn(t) = op {
                pending.push((t, depth + 1));
            }
        }
    }
    deepest
}

/// Refuse a txn nested deeper than [`crate::limits::TXN_DEPTH_MAX`] levels, as etcd's "too
/// many operations" (each level is at least one operation).
///
/// # Errors
/// [`StorageError::TooManyOps`] with the depth and the limit.
pub fn check_txn_depth(req: &TxnRequest) -> Result<()> {
    let depth = txn_depth(req);
    if depth > crate::limits::TXN_DEPTH_MAX {
        return Err(StorageError::TooManyOps {
            count: depth,
            max: crate::limits::TXN_DEPTH_MAX,
        });
    }
    Ok(())
}

/// Op counts per level (etcd's budget: a nested txn gets what its parent level left).
pub(crate) fn check_txn_ops(req: &TxnRequest, ops_max: usize) -> Result<()> {
    let level = req
        .compare
        .len()
        .max(req.success.len())
        .max(req.failure.len());
    if level > ops_max {
        return Err(StorageError::TooManyOps {
            count: level,
            max: ops_max,
        });
    }
    for op in req.success.iter().chain(&req.failure) {
        if let RequestOp::Txn(t) = op {
            check_txn_ops(t, ops_max - level)?;
        }
    }
    Ok(())
}

/// Sizes, keys and options of every operation, and the request's total size.
pub(crate) fn check_txn_contents(req: &TxnRequest, limits: &MvccLimits) -> Result<usize> {
    let mut size = 0usize;
    for c in &req.compare {
        check_range(&c.range, limits)?;
        size += c.range.start().len();
    }
    for op in req.success.iter().chain(&req.failure) {
        size += match op {
            RequestOp::Range(r) => {
                check_range(&r.range, limits)?;
                r.range.start().len()
            }
            RequestOp::Put(p) => {
                check_put(p, limits)?;
                p.key.len() + p.value.len()
            }
            RequestOp::Delete(d) => {
                check_range(&d.range, limits)?;
                d.range.start().len()
            }
            RequestOp::Txn(t) => check_txn_contents(t, limits)?,
        };
    }
    if size > limits.request_bytes_max {
        return Err(StorageError::RequestTooLarge {
            len_bytes: size,
            max_bytes: limits.request_bytes_max,
        });
    }
    Ok(size)
}

type Intervals = (BTreeSet<Vec<u8>>, Vec<KeyRange>);

/// etcd's `checkIntervals`: within one branch (nested branches included) a key is put at most
/// once and never inside a range the same branch deletes. The two branches of a nested txn
/// exclude each other, so they may put the same key.
pub(crate) fn check_intervals(ops: &[RequestOp]) -> Result<Intervals> {
    let mut dels: Vec<KeyRange> = ops
        .iter()
        .filter_map(|op| match op {
            RequestOp::Delete(d) => Some(d.range.clone()),
            _ => None,
        })
        .collect();
    let mut puts: BTreeSet<Vec<u8>> = BTreeSet::new();
    let hits = |dels: &[KeyRange], k: &[u8]| dels.iter().any(|d| d.contains(k));
    for op in ops {
        let RequestOp::Txn(t) = op else { continue };
        let (puts_then, dels_then) = check_intervals(&t.success)?;
        let (puts_else, dels_else) = check_intervals(&t.failure)?;
        for k in &puts_then {
            if puts.contains(k) || hits(&dels, k) {
                return Err(StorageError::DuplicateKey);
            }
            puts.insert(k.clone());
        }
        for k in &puts_else {
            if (puts.contains(k) && !puts_then.contains(k)) || hits(&dels, k) {
                return Err(StorageError::DuplicateKey);
            }
            puts.insert(k.clone());
        }
        dels.extend(dels_then);
        dels.extend(dels_else);
    }
    for op in ops {
        let RequestOp::Put(p) = op else { continue };
        if puts.contains(p.key.as_ref()) || hits(&dels, &p.key) {
            return Err(StorageError::DuplicateKey);
        }
        puts.insert(p.key.to_vec());
    }
    Ok((puts, dels))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mvcc::types::DeleteRequest;

    fn put(k: &str) -> RequestOp {
        RequestOp::Put(PutRequest::new(k.as_bytes().to_vec(), b"v".to_vec()))
    }

    fn del(k: &str, e: &str) -> RequestOp {
        RequestOp::Delete(DeleteRequest {
            range: KeyRange::from_etcd(k.as_bytes().to_vec(), e.as_bytes().to_vec()),
            prev_kv: false,
        })
    }

    #[test]
    fn duplicate_puts_refused() {
        assert!(check_intervals(&[put("a"), put("b")]).is_ok());
        assert_eq!(
            check_intervals(&[put("a"), put("a")]).unwrap_err(),
            StorageError::DuplicateKey
        );
        assert_eq!(
            check_intervals(&[del("a", "c"), put("b")]).unwrap_err(),
            StorageError::DuplicateKey
        );
        assert!(check_intervals(&[del("a", "c"), put("c")]).is_ok());
    }

    #[test]
    fn nested_branches_may_share_keys() {
        let nested = RequestOp::Txn(TxnRequest {
            compare: vec![],
            success: vec![put("x")],
            failure: vec![put("x")],
        });
        assert!(check_intervals(std::slice::from_ref(&nested)).is_ok());
        assert_eq!(
            check_intervals(&[nested, put("x")]).unwrap_err(),
            StorageError::DuplicateKey
        );
    }

    #[test]
    fn op_budget_shrinks_with_depth() {
        let inner = TxnRequest {
            success: vec![put("a"), put("b")],
            ..TxnRequest::default()
        };
        let outer = TxnRequest {
            success: vec![RequestOp::Txn(inner.clone()), put("c")],
            ..TxnRequest::default()
        };
        assert!(check_txn_ops(&outer, 4).is_ok());
        assert!(matches!(
            check_txn_ops(&outer, 3),
            Err(StorageError::TooManyOps { .. })
        ));
    }

    #[test]
    fn depth_is_the_deepest_branch_at_any_level() {
        let flat = TxnRequest {
            success: vec![put("a")],
            ..TxnRequest::default()
        };
        assert_eq!(txn_depth(&TxnRequest::default()), 1);
        assert_eq!(txn_depth(&flat), 1);
        let mut deep = flat.clone();
        for _ in 1..crate::limits::TXN_DEPTH_MAX {
            deep = TxnRequest {
                success: vec![put("b")],
                failure: vec![RequestOp::Txn(deep)],
                ..TxnRequest::default()
            };
        }
        let two = TxnRequest {
            success: vec![RequestOp::Txn(flat)],
            failure: vec![RequestOp::Txn(deep.clone())],
            ..TxnRequest::default()
        };
        assert_eq!(txn_depth(&deep), crate::limits::TXN_DEPTH_MAX);
        assert!(check_txn_depth(&deep).is_ok());
        assert_eq!(txn_depth(&two), crate::limits::TXN_DEPTH_MAX + 1);
        assert!(matches!(
            check_txn_depth(&two),
            Err(StorageError::TooManyOps { count, max })
                if count == max + 1 && max == crate::limits::TXN_DEPTH_MAX
        ));
    }
}
