//! The only place where protobuf types meet keel types.
//!
//! etcd's wire format spells "none" and "latest" as 0 (no lease, latest revision, no limit,
//! unset filter); keel spells them `None`. Conversions from the wire also apply the checks
//! etcd's gRPC layer makes before a request reaches the server
//! (etcd: server/etcdserver/api/v3rpc/key.go `checkRangeRequest`, `checkTxnRequest`).

use crate::pb::etcdserverpb as pb;
use crate::pb::mvccpb;
use crate::status::RequestError;
use keel::{MemberStatus, ReadConsistency, ResponseHeader};
use keel_storage::mvcc::{
    Compare, CompareOp, CompareTarget, DeleteRequest, DeleteResponse, Event, EventKind, KeyValue,
    PutRequest, PutResponse, RangeRequest, RangeResponse, RequestOp, ResponseOp, SortOrder,
    SortTarget, TxnRequest, TxnResponse,
};
use keel_storage::watch::WatchSpec;
use keel_types::{KeyRange, LeaseId, Revision};
use pb::compare::{CompareResult, CompareTarget as WireTarget, TargetUnion};

/// etcd's header from keel's.
pub(crate) fn header(h: &ResponseHeader) -> pb::ResponseHeader {
    pb::ResponseHeader {
        cluster_id: h.cluster_id.get(),
        member_id: h.member_id.get(),
        revision: h.revision.to_etcd(),
        raft_term: h.raft_term,
    }
}

/// A wire count or version as etcd's signed value (saturating).
pub(crate) fn signed(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

pub(crate) fn key_value(kv: KeyValue) -> mvccpb::KeyValue {
    mvccpb::KeyValue {
        key: kv.key,
        create_revision: kv.create_revision.to_etcd(),
        mod_revision: kv.mod_revision.to_etcd(),
        version: signed(kv.version),
        value: kv.value,
        lease: LeaseId::option_to_etcd(kv.lease),
    }
}

/// A revision where 0 (or less) means "latest" / "unset".
fn positive_revision(value: i64) -> Option<Revision> {
    Revision::from_etcd(value).filter(|r| r.get() > 0)
}

/// An upper bound filter: 0 = unset; a negative bound excludes every key, as in etcd.
fn upper_bound(value: i64) -> Option<Revision> {
    match value {
        0 => None,
        v => Some(Revision::from_etcd(v).unwrap_or(Revision::new(0))),
    }
}

fn sort_order(value: i32) -> Result<SortOrder, RequestError> {
    use pb::range_request::SortOrder as W;
    match W::try_from(value).map_err(|_| RequestError::InvalidSortOption)? {
        W::None => Ok(SortOrder::None),
        W::Ascend => Ok(SortOrder::Ascend),
        W::Descend => Ok(SortOrder::Descend),
    }
}

fn sort_target(value: i32) -> Result<SortTarget, RequestError> {
    use pb::range_request::SortTarget as W;
    match W::try_from(value).map_err(|_| RequestError::InvalidSortOption)? {
        W::Key => Ok(SortTarget::Key),
        W::Version => Ok(SortTarget::Version),
        W::Create => Ok(SortTarget::Create),
        W::Mod => Ok(SortTarget::Mod),
        W::Value => Ok(SortTarget::Value),
    }
}

/// etcd's RangeRequest as keel's, with the consistency it asks for.
pub(crate) fn range_request(
    r: pb::RangeRequest,
) -> Result<(RangeRequest, ReadConsistency), RequestError> {
    if r.key.is_empty() {
        return Err(RequestError::EmptyKey);
    }
    let consistency = if r.serializable {
        ReadConsistency::Serializable
    } else {
        ReadConsistency::Linearizable
    };
    let request = RangeRequest {
        range: KeyRange::from_etcd(r.key, r.range_end),
        revision: positive_revision(r.revision),
        limit: usize::try_from(r.limit).ok().filter(|l| *l > 0),
        sort_target: sort_target(r.sort_target)?,
        sort_order: sort_order(r.sort_order)?,
        keys_only: r.keys_only,
        count_only: r.count_only,
        min_mod_revision: positive_revision(r.min_mod_revision),
        max_mod_revision: upper_bound(r.max_mod_revision),
        min_create_revision: positive_revision(r.min_create_revision),
        max_create_revision: upper_bound(r.max_create_revision),
    };
    Ok((request, consistency))
}

pub(crate) fn range_response(h: &ResponseHeader, body: RangeResponse) -> pb::RangeResponse {
    pb::RangeResponse {
        header: Some(header(h)),
        kvs: body.kvs.into_iter().map(key_value).collect(),
        more: body.more,
        count: signed(body.count),
    }
}

pub(crate) fn put_request(r: pb::PutRequest) -> Result<PutRequest, RequestError> {
    if r.key.is_empty() {
        return Err(RequestError::EmptyKey);
    }
    Ok(PutRequest {
        key: r.key,
        value: r.value,
        lease: LeaseId::new(r.lease),
        prev_kv: r.prev_kv,
        ignore_value: r.ignore_value,
        ignore_lease: r.ignore_lease,
    })
}

pub(crate) fn put_response(h: &ResponseHeader, body: PutResponse) -> pb::PutResponse {
    pb::PutResponse {
        header: Some(header(h)),
        prev_kv: body.prev_kv.map(key_value),
    }
}

pub(crate) fn delete_request(r: pb::DeleteRangeRequest) -> Result<DeleteRequest, RequestError> {
    if r.key.is_empty() {
        return Err(RequestError::EmptyKey);
    }
    Ok(DeleteRequest {
        range: KeyRange::from_etcd(r.key, r.range_end),
        prev_kv: r.prev_kv,
    })
}

pub(crate) fn delete_response(h: &ResponseHeader, body: DeleteResponse) -> pb::DeleteRangeResponse {
    pb::DeleteRangeResponse {
        header: Some(header(h)),
        deleted: signed(body.deleted),
        prev_kvs: body.prev_kvs.into_iter().map(key_value).collect(),
    }
}

/// etcd's TxnRequest as keel's; refuses more than `ops_max` compares or operations per
/// branch, at any nesting depth.
pub(crate) fn txn_request(r: pb::TxnRequest, ops_max: usize) -> Result<TxnRequest, RequestError> {
    let count = r.compare.len().max(r.success.len()).max(r.failure.len());
    if count > ops_max {
        return Err(RequestError::TooManyOps {
            count,
            max: ops_max,
        });
    }
    let ops = |ops: Vec<pb::RequestOp>| {
        ops.into_iter()
            .filter_map(|op| op.request)
            .map(|op| request_op(op, ops_max))
            .collect::<Result<Vec<_>, _>>()
    };
    Ok(TxnRequest {
        compare: r.compare.into_iter().map(compare).collect(),
        success: ops(r.success)?,
        failure: ops(r.failure)?,
    })
}

fn request_op(op: pb::request_op::Request, ops_max: usize) -> Result<RequestOp, RequestError> {
    use pb::request_op::Request as W;
    Ok(match op {
        // Consistency is the txn's: the range is part of one atomic step.
        W::RequestRange(r) => RequestOp::Range(range_request(r)?.0),
        W::RequestPut(r) => RequestOp::Put(put_request(r)?),
        W::RequestDeleteRange(r) => RequestOp::Delete(delete_request(r)?),
        W::RequestTxn(r) => RequestOp::Txn(txn_request(r, ops_max)?),
    })
}

/// A numeric compare operand as keel's unsigned one. Every stored version and revision is at
/// least 0, so against a negative operand `>` and `!=` always hold and `=` and `<` never
/// do; those compares become `< u64::MAX` (always true) and `> u64::MAX` (always false).
fn unsigned_operand(op: CompareOp, operand: i64) -> (CompareOp, u64) {
    match u64::try_from(operand) {
        Ok(v) => (op, v),
        Err(_) => match op {
            CompareOp::Greater | CompareOp::NotEqual => (CompareOp::Less, u64::MAX),
            CompareOp::Equal | CompareOp::Less => (CompareOp::Greater, u64::MAX),
        },
    }
}

/// etcd's Compare as keel's. As in etcd, the operand is the union field that matches the
/// target; any other (or none) reads as zero / empty.
pub(crate) fn compare(c: pb::Compare) -> Compare {
    let op = match c.result() {
        CompareResult::Equal => CompareOp::Equal,
        CompareResult::Greater => CompareOp::Greater,
        CompareResult::Less => CompareOp::Less,
        CompareResult::NotEqual => CompareOp::NotEqual,
    };
    let wire_target = c.target();
    let number = match (wire_target, &c.target_union) {
        (WireTarget::Version, Some(TargetUnion::Version(v)))
        | (WireTarget::Create, Some(TargetUnion::CreateRevision(v)))
        | (WireTarget::Mod, Some(TargetUnion::ModRevision(v)))
        | (WireTarget::Lease, Some(TargetUnion::Lease(v))) => *v,
        _ => 0,
    };
    let (op, target) = match wire_target {
        WireTarget::Version => {
            let (op, v) = unsigned_operand(op, number);
            (op, CompareTarget::Version(v))
        }
        WireTarget::Create => {
            let (op, v) = unsigned_operand(op, number);
            (op, CompareTarget::Create(Revision::new(v)))
        }
        WireTarget::Mod => {
            let (op, v) = unsigned_operand(op, number);
            (op, CompareTarget::Mod(Revision::new(v)))
        }
        WireTarget::Value => match c.target_union {
            Some(TargetUnion::Value(v)) => (op, CompareTarget::Value(v)),
            _ => (op, CompareTarget::Value(bytes::Bytes::new())),
        },
        WireTarget::Lease => (op, CompareTarget::Lease(LeaseId::new(number))),
    };
    Compare {
        range: KeyRange::from_etcd(c.key, c.range_end),
        op,
        target,
    }
}

pub(crate) fn txn_response(h: &ResponseHeader, body: TxnResponse) -> pb::TxnResponse {
    pb::TxnResponse {
        header: Some(header(h)),
        succeeded: body.succeeded,
        responses: body
            .responses
            .into_iter()
            .map(|r| response_op(h, r))
            .collect(),
    }
}

/// Nested responses carry the txn's header: every operation belongs to its one revision.
fn response_op(h: &ResponseHeader, r: ResponseOp) -> pb::ResponseOp {
    use pb::response_op::Response as W;
    let response = match r {
        ResponseOp::Range(b) => W::ResponseRange(range_response(h, b)),
        ResponseOp::Put(b) => W::ResponsePut(put_response(h, b)),
        ResponseOp::Delete(b) => W::ResponseDeleteRange(delete_response(h, b)),
        ResponseOp::Txn(b) => W::ResponseTxn(txn_response(h, b)),
    };
    pb::ResponseOp {
        response: Some(response),
    }
}

pub(crate) fn event(e: Event) -> mvccpb::Event {
    let kind = match e.kind {
        EventKind::Put => mvccpb::event::EventType::Put,
        EventKind::Delete => mvccpb::event::EventType::Delete,
    };
    mvccpb::Event {
        r#type: kind.into(),
        kv: Some(key_value(e.kv)),
        prev_kv: e.prev_kv.map(key_value),
    }
}

/// etcd's WatchCreateRequest as a keel watch; unknown filter values are ignored.
pub(crate) fn watch_spec(c: &pb::WatchCreateRequest) -> WatchSpec {
    use pb::watch_create_request::FilterType;
    let has = |f: FilterType| c.filters.contains(&i32::from(f));
    WatchSpec {
        range: KeyRange::from_etcd(c.key.clone(), c.range_end.clone()),
        start_revision: positive_revision(c.start_revision),
        prev_kv: c.prev_kv,
        no_put: has(FilterType::Noput),
        no_delete: has(FilterType::Nodelete),
    }
}

pub(crate) fn member(m: MemberStatus) -> pb::Member {
    pb::Member {
        id: m.id.get(),
        name: m.name,
        peer_ur_ls: m.peer_urls,
        client_ur_ls: m.client_urls,
        is_learner: m.is_learner,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_means_latest_and_unset() {
        let (req, consistency) = range_request(pb::RangeRequest {
            key: "a".into(),
            serializable: true,
            max_mod_revision: -1,
            ..Default::default()
        })
        .unwrap();
        assert_eq!(consistency, ReadConsistency::Serializable);
        assert_eq!(req.revision, None);
        assert_eq!(req.limit, None);
        assert_eq!(req.min_mod_revision, None);
        assert_eq!(req.max_mod_revision, Some(Revision::new(0)));
        assert_eq!(
            range_request(pb::RangeRequest::default()),
            Err(RequestError::EmptyKey)
        );
        let bad_sort = pb::RangeRequest {
            key: "a".into(),
            sort_order: 9,
            ..Default::default()
        };
        assert_eq!(
            range_request(bad_sort),
            Err(RequestError::InvalidSortOption)
        );
    }

    #[test]
    fn negative_compare_operands_keep_etcd_meaning() {
        let c = |result: CompareResult| {
            compare(pb::Compare {
                result: result.into(),
                target: WireTarget::Version.into(),
                key: "k".into(),
                target_union: Some(TargetUnion::Version(-1)),
                ..Default::default()
            })
        };
        assert_eq!(c(CompareResult::Greater).op, CompareOp::Less);
        assert_eq!(c(CompareResult::Equal).op, CompareOp::Greater);
        assert_eq!(
            c(CompareResult::Greater).target,
            CompareTarget::Version(u64::MAX)
        );
    }

    #[test]
    fn nested_txn_ops_are_counted() {
        let put = || pb::RequestOp {
            request: Some(pb::request_op::Request::RequestPut(pb::PutRequest {
                key: "k".into(),
                ..Default::default()
            })),
        };
        let inner = pb::TxnRequest {
            success: vec![put(), put(), put()],
            ..Default::default()
        };
        let outer = pb::TxnRequest {
            success: vec![pb::RequestOp {
                request: Some(pb::request_op::Request::RequestTxn(inner)),
            }],
            ..Default::default()
        };
        assert_eq!(
            txn_request(outer, 2),
            Err(RequestError::TooManyOps { count: 3, max: 2 })
        );
    }
}

/// The conversion of arbitrary wire requests: generated etcd requests (nested txns, any enum
/// and integer values), also re-decoded from randomly damaged encodings, through the checks
/// of [`crate::fuzzing`] (which the `grpc_request` fuzz target runs on raw bytes).
#[cfg(test)]
mod wire_properties {
    use super::*;
    use crate::fuzzing;
    use bytes::Bytes;
    use pb::request_op::Request as W;
    use proptest::prelude::*;
    use prost::Message;

    fn key() -> impl Strategy<Value = Bytes> {
        prop::collection::vec(any::<u8>(), 0..3).prop_map(Bytes::from)
    }

    fn range() -> impl Strategy<Value = pb::RangeRequest> {
        let revisions = (any::<i64>(), any::<i64>(), any::<i64>(), any::<i64>());
        (key(), key(), revisions, -1i32..7, -1i32..5, any::<bool>()).prop_map(
            |(key, range_end, (revision, limit, min_mod, max_create), target, order, s)| {
                pb::RangeRequest {
                    key,
                    range_end,
                    revision,
                    limit,
                    sort_target: target,
                    sort_order: order,
                    serializable: s,
                    min_mod_revision: min_mod,
                    max_create_revision: max_create,
                    ..Default::default()
                }
            },
        )
    }

    fn put() -> impl Strategy<Value = pb::PutRequest> {
        (key(), key(), any::<i64>(), any::<bool>()).prop_map(|(key, value, lease, prev_kv)| {
            pb::PutRequest {
                key,
                value,
                lease,
                prev_kv,
                ..Default::default()
            }
        })
    }

    fn delete() -> impl Strategy<Value = pb::DeleteRangeRequest> {
        (key(), key()).prop_map(|(key, range_end)| pb::DeleteRangeRequest {
            key,
            range_end,
            prev_kv: false,
        })
    }

    fn compare() -> impl Strategy<Value = pb::Compare> {
        let operand = prop_oneof![
            Just(None),
            any::<i64>().prop_map(|v| Some(TargetUnion::Version(v))),
            any::<i64>().prop_map(|v| Some(TargetUnion::ModRevision(v))),
            any::<i64>().prop_map(|v| Some(TargetUnion::Lease(v))),
            key().prop_map(|v| Some(TargetUnion::Value(v))),
        ];
        (-1i32..5, -1i32..6, key(), key(), operand).prop_map(
            |(result, target, key, range_end, target_union)| pb::Compare {
                result,
                target,
                key,
                range_end,
                target_union,
            },
        )
    }

    fn txn() -> impl Strategy<Value = pb::TxnRequest> {
        let leaf = Just(pb::TxnRequest::default());
        leaf.prop_recursive(3, 40, 6, |inner| {
            let op = prop_oneof![
                Just(None),
                range().prop_map(|r| Some(W::RequestRange(r))),
                put().prop_map(|r| Some(W::RequestPut(r))),
                delete().prop_map(|r| Some(W::RequestDeleteRange(r))),
                inner.prop_map(|t| Some(W::RequestTxn(t))),
            ]
            .prop_map(|request| pb::RequestOp { request });
            let ops = prop::collection::vec(op, 0..6);
            (prop::collection::vec(compare(), 0..6), ops.clone(), ops).prop_map(
                |(compare, success, failure)| pb::TxnRequest {
                    compare,
                    success,
                    failure,
                },
            )
        })
    }

    fn check_txn(wire: &pb::TxnRequest) -> Result<(), TestCaseError> {
        fuzzing::check_txn(wire).map_err(TestCaseError::fail)
    }

    proptest! {
        // Deterministic: the same cases on every run (a failure is saved and replayed).
        #![proptest_config(ProptestConfig {
            cases: 512,
            rng_seed: proptest::test_runner::RngSeed::Fixed(0x6b65_656c),
            ..ProptestConfig::default()
        })]

        #[test]
        fn txns_convert_iff_etcds_checks_accept_them(wire in txn()) {
            check_txn(&wire)?;
        }

        #[test]
        fn damaged_encodings_decode_and_convert_without_panicking(
            wire in txn(),
            damage in prop::collection::vec((any::<usize>(), any::<u8>()), 1..4),
        ) {
            let mut bytes = wire.encode_to_vec();
            if !bytes.is_empty() {
                for (at, xor) in damage {
                    let at = at % bytes.len();
                    bytes[at] ^= xor;
                }
            }
            if let Ok(decoded) = pb::TxnRequest::decode(bytes.as_slice()) {
                check_txn(&decoded)?;
            }
        }

        #[test]
        fn ranges_convert_iff_valid_with_zero_as_unset(wire in range()) {
            fuzzing::check_range(&wire).map_err(TestCaseError::fail)?;
        }

        #[test]
        fn compares_convert_for_any_enum_and_operand(wire in compare()) {
            fuzzing::check_compare(&wire).map_err(TestCaseError::fail)?;
        }
    }
}
