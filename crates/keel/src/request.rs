//! The replicated request (one Raft log entry's payload) and the result of applying it.

use crate::auth::{AuthRequest, Caller};
use crate::codec;
use crate::error::NodeError;
use crate::lease::{LeaseApplied, LeaseRejection, LeaseRequest};
use keel_storage::mvcc::{
    DeleteRequest, DeleteResponse, PutRequest, PutResponse, TxnRequest, TxnResponse,
};
use keel_storage::StorageError;
use keel_types::{LeaseId, Revision};
use serde::{Deserialize, Serialize};

/// One write replicated through Raft and applied by every member as one atomic batch.
///
/// Encoded with [`Request::encode`] as a format version byte followed by a compact binary
/// body; [`Request::decode`] returns typed errors on bad input.
///
/// # Examples
/// ```
/// use keel::Request;
/// use keel_storage::mvcc::PutRequest;
/// let req = Request::Put(PutRequest::new(&b"k"[..], &b"v"[..]));
/// let bytes = req.encode()?;
/// assert_eq!(bytes[0], 2); // the format version
/// assert_eq!(Request::decode(&bytes)?, req);
/// assert!(Request::decode(&[]).is_err());
/// # Ok::<(), keel::NodeError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Request {
    /// etcd Put.
    Put(PutRequest),
    /// etcd DeleteRange.
    DeleteRange(DeleteRequest),
    /// etcd Txn.
    Txn(TxnRequest),
    /// etcd Compact: drop history at or below `revision`.
    Compact {
        /// The compaction revision.
        revision: Revision,
    },
    /// A lease operation (grant, revoke, renew, and the leader's checkpoints and expiries).
    Lease(LeaseRequest),
    /// A change to users, roles, permissions, or a token issued.
    Auth(AuthRequest),
    /// A client's request, checked against the caller's permissions when applied (see
    /// [`crate::auth`]); `caller` is `None` for a client without a token.
    Checked {
        /// Who asks.
        caller: Option<Caller>,
        /// What is asked.
        #[serde(deserialize_with = "keel_storage::nesting::deserialize_nested")]
        request: Box<Request>,
    },
}

impl Request {
    /// Whether applying it can grow the state (checked against the space quota): a put, a
    /// txn that may put, a lease grant.
    pub(crate) fn grows_state(&self) -> bool {
        fn ops_put(ops: &[keel_storage::mvcc::RequestOp]) -> bool {
            use keel_storage::mvcc::RequestOp;
            ops.iter().any(|op| match op {
                RequestOp::Put(_) => true,
                RequestOp::Txn(t) => ops_put(&t.success) || ops_put(&t.failure),
                RequestOp::Range(_) | RequestOp::Delete(_) => false,
            })
        }
        match self {
            Request::Put(_) => true,
            Request::Txn(t) => ops_put(&t.success) || ops_put(&t.failure),
            Request::Lease(LeaseRequest::Grant { .. }) => true,
            Request::Checked { request, .. } => request.grows_state(),
            Request::Lease(_)
            | Request::DeleteRange(_)
            | Request::Compact { .. }
            | Request::Auth(_) => false,
        }
    }

    /// Whether the state machine may apply it in a write transaction shared with the
    /// entries before it, each in its own revision (`WriteTxn::seal_revision`): a put, a
    /// delete, or a txn that reads no explicit revision (such a read sees only committed
    /// revisions, so it must not follow uncommitted ones). Compactions, lease and auth
    /// requests apply alone.
    pub(crate) fn joins_apply_group(&self) -> bool {
        fn ops_join(ops: &[keel_storage::mvcc::RequestOp]) -> bool {
            use keel_storage::mvcc::RequestOp;
            ops.iter().all(|op| match op {
                RequestOp::Range(r) => r.revision.is_none(),
                RequestOp::Txn(t) => ops_join(&t.success) && ops_join(&t.failure),
                RequestOp::Put(_) | RequestOp::Delete(_) => true,
            })
        }
        match self {
            Request::Put(_) | Request::DeleteRange(_) => true,
            Request::Txn(t) => ops_join(&t.success) && ops_join(&t.failure),
            Request::Checked { request, .. } => request.joins_apply_group(),
            Request::Compact { .. } | Request::Lease(_) | Request::Auth(_) => false,
        }
    }

    /// The request's name in logs.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Request::Put(_) => "put",
            Request::DeleteRange(_) => "delete_range",
            Request::Txn(_) => "txn",
            Request::Compact { .. } => "compact",
            Request::Lease(_) => "lease",
            Request::Auth(_) => "auth",
            Request::Checked { request, .. } => request.kind(),
        }
    }
}

impl Request {
    /// The versioned encoding.
    ///
    /// # Errors
    /// [`NodeError::Codec`] if the value cannot be encoded.
    pub fn encode(&self) -> Result<Vec<u8>, NodeError> {
        codec::encode("request", self)
    }

    /// Decode [`Request::encode`]'s output.
    ///
    /// # Errors
    /// [`NodeError::Codec`]: empty input, unknown version, malformed or trailing bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, NodeError> {
        codec::decode("request", bytes)
    }

    /// Every lease the request attaches keys to (both branches of txns, nested ones too).
    pub(crate) fn leases(&self) -> std::collections::BTreeSet<LeaseId> {
        crate::lease::named_leases(self)
    }

    /// Refuse a request whose encoding exceeds [`REQUEST_BYTES_MAX`]; its encoded size
    /// otherwise.
    pub(crate) fn check_size(&self, max_bytes: usize) -> Result<usize, NodeError> {
        let len_bytes =
            postcard::experimental::serialized_size(self).map_err(|e| NodeError::Codec {
                what: "request",
                detail: e.to_string(),
            })? + 1;
        if len_bytes > max_bytes {
            return Err(NodeError::RequestTooLarge {
                len_bytes,
                max_bytes,
            });
        }
        Ok(len_bytes)
    }
}

impl std::fmt::Display for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Request::Put(p) => write!(
                f,
                "put({} key bytes, {} value bytes)",
                p.key.len(),
                p.value.len()
            ),
            Request::DeleteRange(d) => write!(f, "delete_range({:?})", d.range),
            Request::Txn(t) => write!(
                f,
                "txn({} compares, {} success ops, {} failure ops)",
                t.compare.len(),
                t.success.len(),
                t.failure.len()
            ),
            Request::Compact { revision } => write!(f, "compact({revision})"),
            Request::Lease(l) => write!(f, "{l}"),
            Request::Auth(a) => write!(f, "{a}"),
            Request::Checked { caller, request } => match caller {
                Some(c) => write!(f, "{request} as {}", c.user),
                None => write!(f, "{request} as anonymous"),
            },
        }
    }
}

/// The result of applying one log entry (openraft's response type).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Applied {
    /// A blank or membership entry: nothing for a client.
    Internal,
    /// A put.
    Put(PutResponse),
    /// A delete.
    Delete(DeleteResponse),
    /// A txn.
    Txn(TxnResponse),
    /// A compaction, scheduled at the given store revision.
    Compact {
        /// The store's revision when the compaction was applied.
        revision: Revision,
    },
    /// The store refused the request (deterministically, on every member).
    Rejected(Rejection),
    /// A lease request.
    Lease(LeaseApplied),
    /// An auth request: the auth revision after it.
    Auth {
        /// The auth revision.
        revision: u64,
    },
}

/// A refusal by the store, in a form that crosses the network.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Rejection {
    EmptyKey,
    KeyTooLarge {
        len_bytes: usize,
        max_bytes: usize,
    },
    ValueTooLarge {
        len_bytes: usize,
        max_bytes: usize,
    },
    RequestTooLarge {
        len_bytes: usize,
        max_bytes: usize,
    },
    Compacted {
        requested: Revision,
        compacted: Revision,
    },
    FutureRevision {
        requested: Revision,
        current: Revision,
    },
    NegativeRevision {
        value: i64,
    },
    TooManyOps {
        count: usize,
        max: usize,
    },
    DuplicateKey,
    KeyNotFound,
    ValueProvided,
    LeaseProvided,
    Other {
        message: String,
    },
    /// The lessor refused the request.
    Lease(LeaseRejection),
    /// The auth store refused the request, or the caller may not make it.
    Auth(keel_auth::AuthError),
}

impl From<&StorageError> for Rejection {
    fn from(e: &StorageError) -> Self {
        use StorageError as S;
        match e.clone() {
            S::EmptyKey => Rejection::EmptyKey,
            S::KeyTooLarge {
                len_bytes,
                max_bytes,
            } => Rejection::KeyTooLarge {
                len_bytes,
                max_bytes,
            },
            S::ValueTooLarge {
                len_bytes,
                max_bytes,
            } => Rejection::ValueTooLarge {
                len_bytes,
                max_bytes,
            },
            S::RequestTooLarge {
                len_bytes,
                max_bytes,
            } => Rejection::RequestTooLarge {
                len_bytes,
                max_bytes,
            },
            S::Compacted {
                requested,
                compacted,
            } => Rejection::Compacted {
                requested,
                compacted,
            },
            S::FutureRevision { requested, current } => {
                Rejection::FutureRevision { requested, current }
            }
            S::NegativeRevision { value } => Rejection::NegativeRevision { value },
            S::TooManyOps { count, max } => Rejection::TooManyOps { count, max },
            S::DuplicateKey => Rejection::DuplicateKey,
            S::KeyNotFound => Rejection::KeyNotFound,
            S::ValueProvided => Rejection::ValueProvided,
            S::LeaseProvided => Rejection::LeaseProvided,
            other => Rejection::Other {
                message: other.to_string(),
            },
        }
    }
}

impl From<Rejection> for NodeError {
    fn from(r: Rejection) -> Self {
        use StorageError as S;
        let e = match r {
            Rejection::EmptyKey => S::EmptyKey,
            Rejection::KeyTooLarge {
                len_bytes,
                max_bytes,
            } => S::KeyTooLarge {
                len_bytes,
                max_bytes,
            },
            Rejection::ValueTooLarge {
                len_bytes,
                max_bytes,
            } => S::ValueTooLarge {
                len_bytes,
                max_bytes,
            },
            Rejection::RequestTooLarge {
                len_bytes,
                max_bytes,
            } => S::RequestTooLarge {
                len_bytes,
                max_bytes,
            },
            Rejection::Compacted {
                requested,
                compacted,
            } => S::Compacted {
                requested,
                compacted,
            },
            Rejection::FutureRevision { requested, current } => {
                S::FutureRevision { requested, current }
            }
            Rejection::NegativeRevision { value } => S::NegativeRevision { value },
            Rejection::TooManyOps { count, max } => S::TooManyOps { count, max },
            Rejection::DuplicateKey => S::DuplicateKey,
            Rejection::KeyNotFound => S::KeyNotFound,
            Rejection::ValueProvided => S::ValueProvided,
            Rejection::LeaseProvided => S::LeaseProvided,
            Rejection::Other { message } => return NodeError::Refused { message },
            Rejection::Lease(l) => return l.into(),
            Rejection::Auth(a) => return NodeError::Auth(a),
        };
        NodeError::Rejected(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::REQUEST_BYTES_MAX;
    use bytes::Bytes;
    use keel_storage::mvcc::{Compare, CompareOp, CompareTarget, RangeRequest, RequestOp};
    use keel_types::{KeyRange, LeaseId};
    use proptest::prelude::*;

    fn bytes() -> impl Strategy<Value = Bytes> {
        proptest::collection::vec(any::<u8>(), 0..16).prop_map(Bytes::from)
    }

    fn range() -> impl Strategy<Value = KeyRange> {
        prop_oneof![
            bytes().prop_map(KeyRange::Key),
            (bytes(), bytes()).prop_map(|(start, end)| KeyRange::Span { start, end }),
            bytes().prop_map(KeyRange::FromKey),
        ]
    }

    fn put() -> impl Strategy<Value = PutRequest> {
        (
            bytes(),
            bytes(),
            proptest::option::of(1i64..1000),
            any::<[bool; 3]>(),
        )
            .prop_map(
                |(k, v, lease, [prev_kv, ignore_value, ignore_lease])| PutRequest {
                    lease: lease.and_then(LeaseId::new),
                    prev_kv,
                    ignore_value,
                    ignore_lease,
                    ..PutRequest::new(k, v)
                },
            )
    }

    fn delete() -> impl Strategy<Value = DeleteRequest> {
        (range(), any::<bool>()).prop_map(|(range, prev_kv)| DeleteRequest { range, prev_kv })
    }

    fn get() -> impl Strategy<Value = RangeRequest> {
        (
            range(),
            proptest::option::of(1u64..100),
            proptest::option::of(1usize..10),
            any::<bool>(),
        )
            .prop_map(|(r, rev, limit, keys_only)| RangeRequest {
                revision: rev.map(Revision::new),
                limit,
                keys_only,
                ..RangeRequest::new(r)
            })
    }

    fn compare() -> impl Strategy<Value = Compare> {
        let target = prop_oneof![
            any::<u64>().prop_map(CompareTarget::Version),
            any::<u64>().prop_map(|r| CompareTarget::Mod(Revision::new(r))),
            bytes().prop_map(CompareTarget::Value),
            proptest::option::of(1i64..10)
                .prop_map(|l| CompareTarget::Lease(l.and_then(LeaseId::new))),
        ];
        let op = prop_oneof![
            Just(CompareOp::Equal),
            Just(CompareOp::NotEqual),
            Just(CompareOp::Less),
            Just(CompareOp::Greater)
        ];
        (range(), op, target).prop_map(|(range, op, target)| Compare { range, op, target })
    }

    fn op() -> impl Strategy<Value = RequestOp> {
        prop_oneof![
            get().prop_map(RequestOp::Range),
            put().prop_map(RequestOp::Put),
            delete().prop_map(RequestOp::Delete),
        ]
    }

    fn flat_txn() -> impl Strategy<Value = TxnRequest> {
        (
            proptest::collection::vec(compare(), 0..3),
            proptest::collection::vec(op(), 0..3),
            proptest::collection::vec(op(), 0..3),
        )
            .prop_map(|(compare, success, failure)| TxnRequest {
                compare,
                success,
                failure,
            })
    }

    fn txn() -> impl Strategy<Value = TxnRequest> {
        (flat_txn(), flat_txn()).prop_map(|(mut outer, inner)| {
            outer.success.push(RequestOp::Txn(inner));
            outer
        })
    }

    fn request() -> impl Strategy<Value = Request> {
        prop_oneof![
            put().prop_map(Request::Put),
            delete().prop_map(Request::DeleteRange),
            txn().prop_map(Request::Txn),
            any::<u64>().prop_map(|r| Request::Compact {
                revision: Revision::new(r)
            }),
            (proptest::option::of(1i64..1000), any::<i64>()).prop_map(|(id, ttl_secs)| {
                Request::Lease(LeaseRequest::Grant {
                    id: id.and_then(LeaseId::new),
                    ttl_secs,
                })
            }),
            proptest::collection::vec(1i64..1000, 0..4).prop_map(|ids| {
                Request::Lease(LeaseRequest::Renew {
                    ids: ids.into_iter().filter_map(LeaseId::new).collect(),
                })
            }),
            (1i64..1000, any::<u32>(), any::<u64>()).prop_map(|(id, renew_count, remaining_ms)| {
                Request::Lease(LeaseRequest::Checkpoint {
                    checkpoints: LeaseId::new(id)
                        .map(|id| crate::lease::LeaseCheckpoint {
                            id,
                            renew_count,
                            remaining_ms,
                        })
                        .into_iter()
                        .collect(),
                })
            }),
            (1i64..1000, any::<u32>()).prop_map(|(id, renew_count)| {
                Request::Lease(LeaseRequest::RevokeExpired {
                    expired: LeaseId::new(id)
                        .map(|id| crate::lease::LeaseExpired { id, renew_count })
                        .into_iter()
                        .collect(),
                })
            }),
        ]
    }

    proptest! {
        // Deterministic: the same cases on every run (a failure is saved and replayed).
        #![proptest_config(proptest::test_runner::Config {
            rng_seed: proptest::test_runner::RngSeed::Fixed(0x6b65_656c),
            ..proptest::test_runner::Config::default()
        })]
        #[test]
        fn request_round_trips(req in request()) {
            let bytes = req.encode().unwrap();
            prop_assert_eq!(bytes[0], codec::FORMAT_VERSION);
            prop_assert_eq!(Request::decode(&bytes).unwrap(), req);
        }

        #[test]
        fn truncated_or_garbage_input_is_an_error_not_a_panic(
            req in request(), cut in 0usize..64, garbage in proptest::collection::vec(any::<u8>(), 0..64)
        ) {
            let bytes = req.encode().unwrap();
            let cut = cut.min(bytes.len().saturating_sub(1));
            prop_assert!(Request::decode(&bytes[..cut]).is_err());
            let _ = Request::decode(&garbage);
        }
    }

    #[test]
    fn rejections_round_trip_into_storage_errors() {
        let e = StorageError::Compacted {
            requested: Revision::new(2),
            compacted: Revision::new(5),
        };
        assert_eq!(NodeError::from(Rejection::from(&e)), NodeError::Rejected(e));
    }

    #[test]
    fn leases_are_found_in_nested_txns() {
        let leased = PutRequest {
            lease: LeaseId::new(7),
            ..PutRequest::new(&b"k"[..], &b"v"[..])
        };
        let inner = TxnRequest {
            failure: vec![RequestOp::Put(leased)],
            ..TxnRequest::default()
        };
        let outer = Request::Txn(TxnRequest {
            success: vec![RequestOp::Txn(inner)],
            ..TxnRequest::default()
        });
        assert_eq!(
            outer.leases().into_iter().collect::<Vec<_>>(),
            vec![LeaseId::new(7).unwrap()]
        );
        assert!(Request::Put(PutRequest::new(&b"k"[..], &b"v"[..]))
            .leases()
            .is_empty());
    }

    /// A request's encoding whose txn is nested `levels` deep (one nested txn per level,
    /// the innermost empty), built as bytes: such a value cannot even be dropped safely.
    fn nested_txn_bytes(levels: usize) -> Vec<u8> {
        // The format version, Request::Txn; per level: no compares, one success op, RequestOp::Txn.
        let mut bytes = vec![codec::FORMAT_VERSION, 2];
        for _ in 1..levels {
            bytes.extend_from_slice(&[0, 1, 3]);
        }
        bytes.extend_from_slice(&[0, 0, 0]);
        bytes.extend(std::iter::repeat_n(0, levels - 1));
        bytes
    }

    /// A checked request wrapping a checked request ... `levels` deep (no caller), around a
    /// put of `k`.
    fn nested_checked_bytes(levels: usize) -> Vec<u8> {
        let mut bytes = vec![codec::FORMAT_VERSION];
        for _ in 0..levels {
            bytes.extend_from_slice(&[6, 0]);
        }
        bytes.extend_from_slice(&[0, 1, b'k', 0, 0, 0, 0, 0]);
        bytes
    }

    #[test]
    fn a_request_nested_too_deep_is_refused_by_the_decoder_not_a_stack_overflow() {
        use keel_storage::limits::DECODE_NESTING_MAX;
        let shallow = Request::decode(&nested_txn_bytes(4)).unwrap();
        let Request::Txn(txn) = &shallow else {
            panic!("{shallow:?}")
        };
        assert_eq!(keel_storage::mvcc::txn_depth(txn), 4);
        // The outermost txn plus DECODE_NESTING_MAX nested ones decode; one more does not,
        // although the bytes are well formed.
        assert!(Request::decode(&nested_txn_bytes(DECODE_NESTING_MAX + 1)).is_ok());
        assert!(Request::decode(&nested_txn_bytes(DECODE_NESTING_MAX + 2)).is_err());
        // Far deeper than a test thread's stack survives without the bound: an error, not an
        // overflow that aborts the process.
        assert!(Request::decode(&nested_txn_bytes(200_000)).is_err());
        // The same through checked requests wrapping checked requests.
        assert!(Request::decode(&nested_checked_bytes(1)).is_ok());
        assert!(Request::decode(&nested_checked_bytes(DECODE_NESTING_MAX)).is_ok());
        assert!(Request::decode(&nested_checked_bytes(DECODE_NESTING_MAX + 1)).is_err());
        assert!(Request::decode(&nested_checked_bytes(200_000)).is_err());
        // The bound is per decode: the next one starts from zero.
        assert_eq!(Request::decode(&nested_txn_bytes(4)).unwrap(), shallow);
        assert!(Request::decode(&nested_txn_bytes(DECODE_NESTING_MAX + 1)).is_ok());
    }

    #[test]
    fn oversized_request_is_refused_before_proposal() {
        let big = Request::Put(PutRequest::new(&b"k"[..], vec![0u8; REQUEST_BYTES_MAX]));
        assert!(matches!(
            big.check_size(REQUEST_BYTES_MAX),
            Err(NodeError::RequestTooLarge { .. })
        ));
        let small = Request::Put(PutRequest::new(&b"k"[..], &b"v"[..]));
        assert!(small.check_size(REQUEST_BYTES_MAX).is_ok());
    }
}
