//! etcd's v3 gRPC API end to end: a real single-member node on a temporary directory, served
//! by tonic on a loopback port, driven with the generated clients.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

mod common;

use common::sample;
use keel::{Node, NodeBuilder};
use keel_server::api::{self, ApiLimits};
use keel_server::pb::etcdserverpb as pb;
use keel_server::pb::etcdserverpb::{
    auth_client::AuthClient, cluster_client::ClusterClient, kv_client::KvClient,
    lease_client::LeaseClient, maintenance_client::MaintenanceClient, watch_client::WatchClient,
};
use keel_server::pb::mvccpb;
use keel_types::MemberId;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tokio_stream::StreamExt;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status, Streaming};

/// Longest any single step may take before the test fails.
const STEP_DEADLINE: Duration = Duration::from_secs(10);

struct Fixture {
    node: Arc<Node>,
    channel: Channel,
    server: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Fixture {
    async fn start(limits: ApiLimits) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let node = NodeBuilder::new(MemberId::new(1))
            .name("one")
            .data_dir(dir.path())
            .start()
            .await
            .unwrap();
        node.wait_for_leader(STEP_DEADLINE).await.unwrap();
        let node = Arc::new(node);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let routes = api::routes(Arc::clone(&node), limits);
        let server = tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_routes(routes)
                .serve_with_incoming(TcpListenerStream::new(listener))
                .await
                .unwrap();
        });
        let channel = Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        Fixture {
            node,
            channel,
            server,
            _dir: dir,
        }
    }

    fn kv(&self) -> KvClient<Channel> {
        KvClient::new(self.channel.clone())
    }

    async fn stop(self) {
        self.server.abort();
        self.node.shutdown().await;
    }
}

async fn put(kv: &mut KvClient<Channel>, key: &str, value: &str) -> pb::PutResponse {
    kv.put(pb::PutRequest {
        key: key.to_owned().into(),
        value: value.to_owned().into(),
        ..Default::default()
    })
    .await
    .unwrap()
    .into_inner()
}

fn range(key: &str, range_end: &str) -> pb::RangeRequest {
    pb::RangeRequest {
        key: key.to_owned().into(),
        range_end: range_end.to_owned().into(),
        ..Default::default()
    }
}

fn keys(kvs: &[mvccpb::KeyValue]) -> Vec<String> {
    kvs.iter()
        .map(|kv| String::from_utf8(kv.key.to_vec()).unwrap())
        .collect()
}

fn assert_status(status: &Status, code: Code, message: &str) {
    assert_eq!((status.code(), status.message()), (code, message));
}

fn revision(header: Option<&pb::ResponseHeader>) -> i64 {
    header.unwrap().revision
}

/// Limit, sort, keys-only, count-only and revision filters over keys a/1 and a/2, where a/1
/// was last written by `last`.
async fn check_range_options(kv: &mut KvClient<Channel>, last: &pb::PutResponse) {
    let limited = kv
        .range(pb::RangeRequest {
            limit: 1,
            sort_order: pb::range_request::SortOrder::Descend.into(),
            sort_target: pb::range_request::SortTarget::Key.into(),
            serializable: true,
            keys_only: true,
            ..range("a/", "a0")
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(keys(&limited.kvs), ["a/2"]);
    assert!(limited.more);
    assert_eq!(limited.count, 2);
    assert!(limited.kvs[0].value.is_empty());

    let by_mod = kv
        .range(pb::RangeRequest {
            sort_target: pb::range_request::SortTarget::Mod.into(),
            ..range("a/", "a0")
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(keys(&by_mod.kvs), ["a/2", "a/1"]);

    let filtered = kv
        .range(pb::RangeRequest {
            min_mod_revision: revision(last.header.as_ref()),
            ..range("\0", "\0")
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(keys(&filtered.kvs), ["a/1"]);

    let counted = kv
        .range(pb::RangeRequest {
            count_only: true,
            ..range("a", "\0")
        })
        .await
        .unwrap()
        .into_inner();
    assert!(counted.kvs.is_empty());
    assert_eq!(counted.count, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn range_put_delete_follow_etcd() {
    let fx = Fixture::start(ApiLimits::default()).await;
    let mut kv = fx.kv();
    let first = put(&mut kv, "a/1", "x").await;
    let header = first.header.unwrap();
    assert_eq!(header.member_id, 1);
    assert_eq!(header.cluster_id, fx.node.cluster_id().get());
    assert!(header.raft_term >= 1);
    put(&mut kv, "a/2", "yy").await;
    let last = put(&mut kv, "a/1", "z").await;

    let one = kv.range(range("a/1", "")).await.unwrap().into_inner();
    assert_eq!(one.kvs.len(), 1);
    let kv1 = &one.kvs[0];
    assert_eq!((kv1.value.as_ref(), kv1.version), (&b"z"[..], 2));
    assert_eq!(kv1.create_revision, header.revision);
    assert_eq!(kv1.mod_revision, revision(last.header.as_ref()));
    assert_eq!(one.count, 1);

    let missing = kv.range(range("nope", "")).await.unwrap().into_inner();
    assert!(missing.kvs.is_empty());
    assert_eq!(missing.count, 0);

    let old = kv
        .range(pb::RangeRequest {
            revision: header.revision,
            ..range("a/1", "")
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(old.kvs[0].value.as_ref(), b"x");

    check_range_options(&mut kv, &last).await;

    let deleted = kv
        .delete_range(pb::DeleteRangeRequest {
            key: "a/".into(),
            range_end: "a0".into(),
            prev_kv: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(deleted.deleted, 2);
    assert_eq!(keys(&deleted.prev_kvs), ["a/1", "a/2"]);
    assert_eq!(
        revision(deleted.header.as_ref()),
        revision(last.header.as_ref()) + 1
    );
    fx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_options_and_request_errors() {
    let fx = Fixture::start(ApiLimits::default()).await;
    let mut kv = fx.kv();
    let err = kv
        .put(pb::PutRequest {
            key: "k".into(),
            ignore_value: true,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_status(&err, Code::InvalidArgument, "etcdserver: key not found");

    put(&mut kv, "k", "v1").await;
    let kept = kv
        .put(pb::PutRequest {
            key: "k".into(),
            ignore_value: true,
            prev_kv: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(kept.prev_kv.unwrap().value.as_ref(), b"v1");
    let now = kv.range(range("k", "")).await.unwrap().into_inner();
    assert_eq!(now.kvs[0].value.as_ref(), b"v1");
    assert_eq!(now.kvs[0].version, 2);

    let err = kv
        .put(pb::PutRequest {
            key: "k".into(),
            lease: 12345,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_status(
        &err,
        Code::NotFound,
        "etcdserver: requested lease not found",
    );

    let err = kv.range(range("", "")).await.unwrap_err();
    assert_status(
        &err,
        Code::InvalidArgument,
        "etcdserver: key is not provided",
    );
    let err = kv
        .range(pb::RangeRequest {
            sort_order: 7,
            ..range("k", "")
        })
        .await
        .unwrap_err();
    assert_status(
        &err,
        Code::InvalidArgument,
        "etcdserver: invalid sort option",
    );
    let err = kv
        .range(pb::RangeRequest {
            revision: 1_000_000,
            ..range("k", "")
        })
        .await
        .unwrap_err();
    assert_status(
        &err,
        Code::OutOfRange,
        "etcdserver: mvcc: required revision is a future revision",
    );
    fx.stop().await;
}

fn put_op(key: &str, value: &str) -> pb::RequestOp {
    pb::RequestOp {
        request: Some(pb::request_op::Request::RequestPut(pb::PutRequest {
            key: key.to_owned().into(),
            value: value.to_owned().into(),
            ..Default::default()
        })),
    }
}

fn value_equals(key: &str, value: &str) -> pb::Compare {
    pb::Compare {
        result: pb::compare::CompareResult::Equal.into(),
        target: pb::compare::CompareTarget::Value.into(),
        key: key.to_owned().into(),
        target_union: Some(pb::compare::TargetUnion::Value(value.to_owned().into())),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn txn_compares_branches_and_nesting() {
    let fx = Fixture::start(ApiLimits {
        txn_ops_max: 4,
        ..ApiLimits::default()
    })
    .await;
    let mut kv = fx.kv();
    put(&mut kv, "p/a", "1").await;
    put(&mut kv, "p/b", "1").await;

    // Every key of the range has version 1: true.
    let versions = pb::Compare {
        result: pb::compare::CompareResult::Equal.into(),
        target: pb::compare::CompareTarget::Version.into(),
        key: "p/".into(),
        range_end: "p0".into(),
        target_union: Some(pb::compare::TargetUnion::Version(1)),
    };
    let nested = pb::TxnRequest {
        compare: vec![value_equals("p/a", "nope")],
        success: vec![put_op("never", "x")],
        failure: vec![pb::RequestOp {
            request: Some(pb::request_op::Request::RequestRange(range("p/a", ""))),
        }],
    };
    let txn = pb::TxnRequest {
        compare: vec![versions, value_equals("p/b", "1")],
        success: vec![
            put_op("p/c", "2"),
            pb::RequestOp {
                request: Some(pb::request_op::Request::RequestTxn(nested)),
            },
        ],
        failure: vec![put_op("failed", "x")],
    };
    let resp = kv.txn(txn).await.unwrap().into_inner();
    assert!(resp.succeeded);
    assert_eq!(resp.responses.len(), 2);
    let Some(pb::response_op::Response::ResponseTxn(inner)) = &resp.responses[1].response else {
        panic!("nested txn response expected: {resp:?}");
    };
    assert!(!inner.succeeded);
    let Some(pb::response_op::Response::ResponseRange(read)) = &inner.responses[0].response else {
        panic!("range response expected: {inner:?}");
    };
    assert_eq!(read.kvs[0].value.as_ref(), b"1");
    let never = kv.range(range("never", "")).await.unwrap().into_inner();
    assert_eq!(never.count, 0);

    fx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn txn_negative_operands_and_limits() {
    let fx = Fixture::start(ApiLimits {
        txn_ops_max: 4,
        ..ApiLimits::default()
    })
    .await;
    let mut kv = fx.kv();
    // A negative operand keeps etcd's meaning: every version is greater than -1.
    let any_version = pb::Compare {
        result: pb::compare::CompareResult::Greater.into(),
        target: pb::compare::CompareTarget::Version.into(),
        key: "absent".into(),
        target_union: Some(pb::compare::TargetUnion::Version(-1)),
        ..Default::default()
    };
    let resp = kv
        .txn(pb::TxnRequest {
            compare: vec![any_version],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(resp.succeeded);

    let too_many = pb::TxnRequest {
        success: (0..5).map(|i| put_op(&format!("t/{i}"), "x")).collect(),
        ..Default::default()
    };
    let err = kv.txn(too_many).await.unwrap_err();
    assert_status(
        &err,
        Code::InvalidArgument,
        "etcdserver: too many operations in txn request",
    );
    let duplicate = pb::TxnRequest {
        success: vec![put_op("d", "1"), put_op("d", "2")],
        ..Default::default()
    };
    let err = kv.txn(duplicate).await.unwrap_err();
    assert_status(
        &err,
        Code::InvalidArgument,
        "etcdserver: duplicate key given in txn request",
    );
    fx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_refuses_old_reads() {
    let fx = Fixture::start(ApiLimits::default()).await;
    let mut kv = fx.kv();
    let first = put(&mut kv, "c", "1").await;
    let second = put(&mut kv, "c", "2").await;
    let compacted = kv
        .compact(pb::CompactionRequest {
            revision: revision(second.header.as_ref()),
            physical: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(compacted.header.is_some());
    let err = kv
        .range(pb::RangeRequest {
            revision: revision(first.header.as_ref()),
            ..range("c", "")
        })
        .await
        .unwrap_err();
    assert_status(
        &err,
        Code::OutOfRange,
        "etcdserver: mvcc: required revision has been compacted",
    );
    let latest = kv.range(range("c", "")).await.unwrap().into_inner();
    assert_eq!(latest.kvs[0].value.as_ref(), b"2");
    fx.stop().await;
}

/// A watch stream: requests go in through a channel, responses come out.
struct WatchSession {
    requests: mpsc::Sender<pb::WatchRequest>,
    responses: Streaming<pb::WatchResponse>,
}

impl WatchSession {
    async fn open(channel: &Channel) -> WatchSession {
        let (requests, rx) = mpsc::channel(16);
        let responses = WatchClient::new(channel.clone())
            .watch(ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        WatchSession {
            requests,
            responses,
        }
    }

    async fn send(&self, request: pb::watch_request::RequestUnion) {
        self.requests
            .send(pb::WatchRequest {
                request_union: Some(request),
            })
            .await
            .unwrap();
    }

    async fn create(&self, create: pb::WatchCreateRequest) {
        self.send(pb::watch_request::RequestUnion::CreateRequest(create))
            .await;
    }

    async fn next(&mut self) -> pb::WatchResponse {
        tokio::time::timeout(STEP_DEADLINE, self.responses.next())
            .await
            .expect("a watch response in time")
            .expect("the stream is open")
            .expect("not an error")
    }
}

fn watch_key(key: &str, range_end: &str) -> pb::WatchCreateRequest {
    pb::WatchCreateRequest {
        key: key.to_owned().into(),
        range_end: range_end.to_owned().into(),
        ..Default::default()
    }
}

fn event_summary(resp: &pb::WatchResponse) -> Vec<(i32, String)> {
    resp.events
        .iter()
        .map(|e| {
            let kv = e.kv.as_ref().unwrap();
            (e.r#type, String::from_utf8(kv.key.to_vec()).unwrap())
        })
        .collect()
}

/// With watcher 0 on `w/`, 7 on deletes of `w/a` (with prev_kv) and 1 on `w/old`: events
/// reach the right watchers, progress is answered, a canceled watcher stops.
async fn events_progress_and_cancel(w: &mut WatchSession, kv: &mut KvClient<Channel>) {
    put(kv, "w/a", "1").await;
    let ev = w.next().await;
    assert_eq!(ev.watch_id, 0);
    assert_eq!(event_summary(&ev), [(0, "w/a".to_owned())]);
    let deleted = kv
        .delete_range(pb::DeleteRangeRequest {
            key: "w/a".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut seen = Vec::new();
    for _ in 0..2 {
        let r = w.next().await;
        seen.push((r.watch_id, event_summary(&r)));
        if r.watch_id == 7 {
            let prev = r.events[0].prev_kv.as_ref().unwrap();
            assert_eq!(prev.value.as_ref(), b"1");
            assert_eq!(
                revision(r.header.as_ref()),
                revision(deleted.header.as_ref())
            );
        }
    }
    seen.sort();
    assert_eq!(
        seen,
        [
            (0, vec![(1, "w/a".to_owned())]),
            (7, vec![(1, "w/a".to_owned())])
        ]
    );

    w.send(pb::watch_request::RequestUnion::ProgressRequest(
        pb::WatchProgressRequest {},
    ))
    .await;
    let progress = w.next().await;
    assert_eq!(progress.watch_id, -1);
    assert!(progress.events.is_empty());
    assert!(revision(progress.header.as_ref()) <= revision(deleted.header.as_ref()));

    w.send(pb::watch_request::RequestUnion::CancelRequest(
        pb::WatchCancelRequest { watch_id: 0 },
    ))
    .await;
    let canceled = w.next().await;
    assert!(canceled.canceled);
    assert_eq!(canceled.watch_id, 0);
    // Watcher 0 is gone: the next change reaches only watcher 1 (w/old).
    put(kv, "w/old", "2").await;
    let ev = w.next().await;
    assert_eq!(ev.watch_id, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_create_events_filters_cancel_and_progress() {
    let fx = Fixture::start(ApiLimits::default()).await;
    let mut kv = fx.kv();
    let before = put(&mut kv, "w/old", "0").await;
    let mut w = WatchSession::open(&fx.channel).await;

    w.create(watch_key("w/", "w0")).await;
    let created = w.next().await;
    assert!(created.created);
    assert_eq!(created.watch_id, 0, "etcd assigns 0 first");

    w.create(pb::WatchCreateRequest {
        watch_id: 7,
        prev_kv: true,
        filters: vec![pb::watch_create_request::FilterType::Noput.into()],
        ..watch_key("w/a", "")
    })
    .await;
    let created = w.next().await;
    assert!(created.created);
    assert_eq!(created.watch_id, 7);

    w.create(pb::WatchCreateRequest {
        watch_id: 7,
        ..watch_key("w/b", "")
    })
    .await;
    let refused = w.next().await;
    assert!(refused.created && refused.canceled);
    assert!(!refused.cancel_reason.is_empty());

    // From the past: replays the revision of w/old.
    w.create(pb::WatchCreateRequest {
        start_revision: revision(before.header.as_ref()),
        ..watch_key("w/old", "")
    })
    .await;
    let created = w.next().await;
    assert_eq!(created.watch_id, 1);
    let replay = w.next().await;
    assert_eq!(replay.watch_id, 1);
    assert_eq!(event_summary(&replay), [(0, "w/old".to_owned())]);

    // One client stream carrying three watchers, in the node's metrics.
    let text = fx.node.metrics_text().unwrap();
    assert_eq!(sample(&text, "etcd_debugging_mvcc_watch_stream_total"), 1.0);
    assert_eq!(sample(&text, "etcd_debugging_mvcc_watcher_total"), 3.0);

    events_progress_and_cancel(&mut w, &mut kv).await;
    drop(w);
    // The server notices the closed stream and drops its watchers.
    let deadline = tokio::time::Instant::now() + STEP_DEADLINE;
    loop {
        let text = fx.node.metrics_text().unwrap();
        if sample(&text, "etcd_debugging_mvcc_watch_stream_total") == 0.0
            && sample(&text, "etcd_debugging_mvcc_watcher_total") == 0.0
        {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{text}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    fx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_from_a_compacted_revision_is_canceled_with_the_compact_revision() {
    let fx = Fixture::start(ApiLimits::default()).await;
    let mut kv = fx.kv();
    let first = put(&mut kv, "x", "1").await;
    let second = put(&mut kv, "x", "2").await;
    kv.compact(pb::CompactionRequest {
        revision: revision(second.header.as_ref()),
        physical: false,
    })
    .await
    .unwrap();
    let mut w = WatchSession::open(&fx.channel).await;
    w.create(pb::WatchCreateRequest {
        start_revision: revision(first.header.as_ref()),
        ..watch_key("x", "")
    })
    .await;
    let created = w.next().await;
    assert!(created.created);
    let canceled = w.next().await;
    assert!(canceled.canceled);
    assert_eq!(canceled.watch_id, created.watch_id);
    assert_eq!(canceled.compact_revision, revision(second.header.as_ref()));
    fx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_revisions_are_fragmented_when_asked() {
    let limits = ApiLimits {
        request_bytes_max: 4096,
        ..ApiLimits::default()
    };
    let fx = Fixture::start(limits).await;
    let mut kv = fx.kv();
    let mut w = WatchSession::open(&fx.channel).await;
    w.create(pb::WatchCreateRequest {
        fragment: true,
        ..watch_key("f/", "f0")
    })
    .await;
    assert!(w.next().await.created);
    let value = "v".repeat(1000);
    let txn = pb::TxnRequest {
        success: (0..10).map(|i| put_op(&format!("f/{i}"), &value)).collect(),
        ..Default::default()
    };
    kv.txn(txn).await.unwrap();
    let mut events = 0;
    let mut parts = 0;
    loop {
        let r = w.next().await;
        assert!(prost::Message::encoded_len(&r) <= 4096);
        events += r.events.len();
        parts += 1;
        if !r.fragment {
            break;
        }
    }
    assert_eq!(events, 10);
    assert!(parts > 1);
    fx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_notify_reports_idle_watchers() {
    let limits = ApiLimits {
        watch_progress_interval: Duration::from_millis(100),
        ..ApiLimits::default()
    };
    let fx = Fixture::start(limits).await;
    let mut kv = fx.kv();
    let mut w = WatchSession::open(&fx.channel).await;
    w.create(pb::WatchCreateRequest {
        progress_notify: true,
        ..watch_key("idle", "")
    })
    .await;
    let created = w.next().await;
    let notify = w.next().await;
    assert_eq!(notify.watch_id, created.watch_id);
    assert!(notify.events.is_empty() && !notify.canceled);
    put(&mut kv, "idle", "1").await;
    // Progress notifications may interleave; the event still arrives.
    loop {
        let r = w.next().await;
        if !r.events.is_empty() {
            assert_eq!(event_summary(&r), [(0, "idle".to_owned())]);
            break;
        }
    }
    fx.stop().await;
}

/// Keep-alives on one stream: a live lease gets its full TTL back, an unknown one TTL 0.
async fn keep_alive_answers(leases: &mut LeaseClient<Channel>, live: i64) {
    let (tx, rx) = mpsc::channel(4);
    let mut answers = leases
        .lease_keep_alive(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    for id in [live, 999] {
        tx.send(pb::LeaseKeepAliveRequest { id }).await.unwrap();
        let answer = tokio::time::timeout(STEP_DEADLINE, answers.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(answer.id, id);
        assert_eq!(answer.ttl, if id == live { 60 } else { 0 });
    }
}

/// Grants with a server-chosen id and with id 4242 (twice: the second is refused).
async fn grant_chosen_and_explicit(leases: &mut LeaseClient<Channel>) -> pb::LeaseGrantResponse {
    let chosen = leases
        .lease_grant(pb::LeaseGrantRequest { ttl: 60, id: 0 })
        .await
        .unwrap()
        .into_inner();
    assert_ne!(chosen.id, 0);
    assert_eq!(chosen.ttl, 60);
    let explicit = leases
        .lease_grant(pb::LeaseGrantRequest { ttl: 30, id: 4242 })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(explicit.id, 4242);
    let err = leases
        .lease_grant(pb::LeaseGrantRequest { ttl: 30, id: 4242 })
        .await
        .unwrap_err();
    assert_status(
        &err,
        Code::FailedPrecondition,
        "etcdserver: lease already exists",
    );
    chosen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_grant_keep_alive_time_to_live_revoke() {
    let fx = Fixture::start(ApiLimits::default()).await;
    let mut leases = LeaseClient::new(fx.channel.clone());
    let mut kv = fx.kv();
    let chosen = grant_chosen_and_explicit(&mut leases).await;

    kv.put(pb::PutRequest {
        key: "owned".into(),
        value: "v".into(),
        lease: chosen.id,
        ..Default::default()
    })
    .await
    .unwrap();
    let ttl = leases
        .lease_time_to_live(pb::LeaseTimeToLiveRequest {
            id: chosen.id,
            keys: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ttl.granted_ttl, 60);
    assert!(ttl.ttl > 0 && ttl.ttl <= 60);
    assert_eq!(ttl.keys, [bytes::Bytes::from("owned")]);
    let unknown = leases
        .lease_time_to_live(pb::LeaseTimeToLiveRequest {
            id: 999,
            keys: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(unknown.ttl, -1);

    keep_alive_answers(&mut leases, chosen.id).await;

    let mut listed: Vec<i64> = leases
        .lease_leases(pb::LeaseLeasesRequest {})
        .await
        .unwrap()
        .into_inner()
        .leases
        .iter()
        .map(|l| l.id)
        .collect();
    listed.sort_unstable();
    let mut expected = vec![chosen.id, 4242];
    expected.sort_unstable();
    assert_eq!(listed, expected);

    leases
        .lease_revoke(pb::LeaseRevokeRequest { id: chosen.id })
        .await
        .unwrap();
    let gone = kv.range(range("owned", "")).await.unwrap().into_inner();
    assert!(gone.kvs.is_empty());
    let err = leases
        .lease_revoke(pb::LeaseRevokeRequest { id: chosen.id })
        .await
        .unwrap_err();
    assert_status(
        &err,
        Code::NotFound,
        "etcdserver: requested lease not found",
    );
    fx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_members_and_errors() {
    let fx = Fixture::start(ApiLimits::default()).await;
    let mut cluster = ClusterClient::new(fx.channel.clone());
    let list = cluster
        .member_list(pb::MemberListRequest { linearizable: true })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.members.len(), 1);
    assert_eq!(list.members[0].id, 1);
    assert_eq!(list.members[0].name, "one");
    assert!(!list.members[0].is_learner);

    let added = cluster
        .member_add(pb::MemberAddRequest {
            peer_ur_ls: vec!["http://127.0.0.1:1".into()],
            is_learner: true,
        })
        .await
        .unwrap()
        .into_inner();
    let learner = added.member.unwrap();
    assert!(learner.is_learner);
    assert_eq!(learner.name, "", "unnamed until it starts, as in etcd");
    assert_eq!(learner.peer_ur_ls, ["http://127.0.0.1:1"]);
    assert_eq!(added.members.len(), 2);

    let err = cluster
        .member_add(pb::MemberAddRequest {
            peer_ur_ls: vec!["http://127.0.0.1:1".into()],
            is_learner: true,
        })
        .await
        .unwrap_err();
    assert_status(
        &err,
        Code::FailedPrecondition,
        "etcdserver: Peer URLs already exists",
    );
    let updated = cluster
        .member_update(pb::MemberUpdateRequest {
            id: learner.id,
            peer_ur_ls: vec!["http://127.0.0.1:3".into()],
        })
        .await
        .unwrap()
        .into_inner();
    let moved = updated.members.iter().find(|m| m.id == learner.id).unwrap();
    assert_eq!(moved.peer_ur_ls, ["http://127.0.0.1:3"]);

    let removed = cluster
        .member_remove(pb::MemberRemoveRequest { id: learner.id })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(removed.members.len(), 1);
    fx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_membership_errors() {
    let fx = Fixture::start(ApiLimits::default()).await;
    let mut cluster = ClusterClient::new(fx.channel.clone());
    // A voter that has not started would leave one of two voters reachable: refused.
    let err = cluster
        .member_add(pb::MemberAddRequest {
            peer_ur_ls: vec!["http://127.0.0.1:2".into()],
            is_learner: false,
        })
        .await
        .unwrap_err();
    assert_status(
        &err,
        Code::FailedPrecondition,
        "etcdserver: re-configuration failed due to not enough started members",
    );
    let err = cluster
        .member_add(pb::MemberAddRequest::default())
        .await
        .unwrap_err();
    assert_status(
        &err,
        Code::InvalidArgument,
        "etcdserver: given member URLs are invalid",
    );

    let err = cluster
        .member_promote(pb::MemberPromoteRequest { id: 1 })
        .await
        .unwrap_err();
    assert_status(
        &err,
        Code::FailedPrecondition,
        "etcdserver: can only promote a learner member",
    );
    let err = cluster
        .member_remove(pb::MemberRemoveRequest { id: 77 })
        .await
        .unwrap_err();
    assert_status(&err, Code::NotFound, "etcdserver: member not found");

    fx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maintenance_status_hashes_snapshot_and_leadership() {
    let fx = Fixture::start(ApiLimits::default()).await;
    let mut kv = fx.kv();
    let written = put(&mut kv, "m", "1").await;
    let mut m = MaintenanceClient::new(fx.channel.clone());

    let status = m.status(pb::StatusRequest {}).await.unwrap().into_inner();
    assert_eq!(
        status.version,
        format!("3.5.0+keel.{}", env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(status.leader, 1);
    assert!(status.db_size > 0);
    assert!(status.raft_index >= 1 && status.raft_applied_index >= 1);
    assert!(status.raft_term >= 1);
    assert!(!status.is_learner);
    assert!(status.errors.is_empty());

    let at = revision(written.header.as_ref());
    let h1 = m
        .hash_kv(pb::HashKvRequest { revision: at })
        .await
        .unwrap()
        .into_inner();
    put(&mut kv, "m", "2").await;
    let h2 = m
        .hash_kv(pb::HashKvRequest { revision: at })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(h1.hash, h2.hash, "history at a revision does not change");
    assert_eq!(h1.hash_revision, at);
    let latest = m
        .hash_kv(pb::HashKvRequest { revision: 0 })
        .await
        .unwrap()
        .into_inner();
    assert_ne!(latest.hash, h1.hash);
    m.hash(pb::HashRequest {}).await.unwrap();

    let alarms = m
        .alarm(pb::AlarmRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(alarms.alarms.is_empty());
    m.defragment(pb::DefragmentRequest {}).await.unwrap();

    let mut chunks = m
        .snapshot(pb::SnapshotRequest {})
        .await
        .unwrap()
        .into_inner();
    let mut blobs = Vec::new();
    let mut last_remaining = u64::MAX;
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.unwrap();
        last_remaining = chunk.remaining_bytes;
        blobs.push(chunk.blob.to_vec());
    }
    assert_eq!(last_remaining, 0);
    // etcd's shape (what etcdctl checks), then keel's container and export checksums.
    let file: Vec<u8> = blobs.concat();
    assert_eq!(file.len() % 512, 32);
    let chunks = keel_server::snapshot_file::decode(&file).unwrap();
    keel_storage::snapshot::verify(chunks.into_iter().map(Ok)).unwrap();

    fx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maintenance_leadership_and_unsupported_calls() {
    let fx = Fixture::start(ApiLimits::default()).await;
    let mut m = MaintenanceClient::new(fx.channel.clone());
    m.move_leader(pb::MoveLeaderRequest { target_id: 1 })
        .await
        .unwrap();
    let err = m
        .move_leader(pb::MoveLeaderRequest { target_id: 99 })
        .await
        .unwrap_err();
    assert_status(
        &err,
        Code::FailedPrecondition,
        "etcdserver: bad leader transferee",
    );
    let err = m
        .downgrade(pb::DowngradeRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented);
    // The Auth service is served: a fresh store has auth disabled at auth revision 0.
    let status = AuthClient::new(fx.channel.clone())
        .auth_status(pb::AuthStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(!status.enabled);
    assert_eq!(status.auth_revision, 0);
    fx.stop().await;
}
