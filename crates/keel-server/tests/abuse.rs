//! Abuse resistance with a real `keel` process: malformed and oversized gRPC messages, deep
//! nested txns, watch storms, lease storms (100k leases), keep-alive floods, many idle
//! connections and password guessing. After each, the server is up, its resident memory
//! (VmRSS, printed) stayed under a bound, and another client was served throughout.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]
#![allow(
    clippy::disallowed_methods,
    reason = "real processes: the guessing phase is timed with the wall clock for its report"
)]

mod common;

use bytes::{Buf, BufMut};
use common::{ok, Cluster};
use etcd_client::{Client, ConnectOptions, TxnOp, WatchOptions};
use keel_server::pb::etcdserverpb::{self as pb, lease_client::LeaseClient};
use std::time::Instant;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

/// Resident memory of the member's process, in MiB.
fn rss_mib(c: &Cluster) -> u64 {
    let pid = c.members[0].child.as_ref().unwrap().id();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib / 1024
}

/// Growth allowed over the idle process for each phase (the 100k leases themselves need
/// tens of MiB).
const RSS_GROWTH_MAX_MIB: u64 = 512;

fn check_rss(c: &Cluster, phase: &str, baseline: u64) {
    let now = rss_mib(c);
    eprintln!("{phase}: VmRSS {now} MiB (idle {baseline} MiB)");
    assert!(
        now < baseline + RSS_GROWTH_MAX_MIB,
        "{phase}: {now} MiB, idle was {baseline} MiB"
    );
}

async fn client(c: &Cluster) -> Client {
    Client::connect([c.members[0].endpoint()], None)
        .await
        .unwrap()
}

/// A bystander's write and read still work.
async fn served(c: &Cluster, what: &str) {
    let mut bystander = client(c).await;
    bystander.put("bystander", what, None).await.unwrap();
    let got = bystander.get("bystander", None).await.unwrap();
    assert_eq!(got.kvs()[0].value(), what.as_bytes());
}

/// A codec that sends and receives raw bytes: messages no client library would build.
#[derive(Clone, Copy, Default)]
struct Raw;

impl Codec for Raw {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = Raw;
    type Decoder = Raw;
    fn encoder(&mut self) -> Raw {
        Raw
    }
    fn decoder(&mut self) -> Raw {
        Raw
    }
}

impl Encoder for Raw {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for Raw {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
        let out = src.chunk().to_vec();
        src.advance(out.len());
        Ok(Some(out))
    }
}

async fn raw_call(
    c: &Cluster,
    path: &'static str,
    body: Vec<u8>,
) -> Result<Vec<u8>, tonic::Status> {
    let channel = tonic::transport::Channel::from_shared(c.members[0].client_url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel).max_encoding_message_size(usize::MAX);
    grpc.ready().await.unwrap();
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(path);
    grpc.unary(tonic::Request::new(body), path, Raw)
        .await
        .map(tonic::Response::into_inner)
}

fn varint(mut v: usize, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A TxnRequest nested `depth` times through `success` (field 2) -> RequestOp.request_txn
/// (field 4), encoded by hand.
fn nested_txn(depth: usize) -> Vec<u8> {
    let mut txn = Vec::new();
    for _ in 0..depth {
        let mut op = vec![0x22];
        varint(txn.len(), &mut op);
        op.extend_from_slice(&txn);
        txn = vec![0x12];
        varint(op.len(), &mut txn);
        txn.extend_from_slice(&op);
    }
    txn
}

#[test]
fn malformed_oversized_and_deeply_nested_requests() {
    let c = Cluster::solo(&[]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let idle = rss_mib(&c);
    runtime.block_on(async {
        // Bytes that are no protobuf at all.
        let status = raw_call(&c, "/etcdserverpb.KV/Put", vec![0xff; 64])
            .await
            .unwrap_err();
        assert!(
            matches!(
                status.code(),
                tonic::Code::Internal | tonic::Code::InvalidArgument
            ),
            "{status:?}"
        );
        // A field whose length runs past the end of the message.
        let status = raw_call(&c, "/etcdserverpb.KV/Range", vec![0x0a, 0x7f, b'k'])
            .await
            .unwrap_err();
        assert!(status.message().contains("decode"), "{status:?}");
        // A message over --max-request-bytes plus gRPC's overhead: refused by tonic's decoder
        // before it is read (tonic answers OutOfRange where grpc-go answers
        // ResourceExhausted; both say the message is too large).
        let status = raw_call(&c, "/etcdserverpb.KV/Put", vec![0; 3 << 20])
            .await
            .unwrap_err();
        assert!(status.message().contains("too large"), "{status:?}");
        // A put whose value is over the limit but whose message fits: etcd's text.
        let mut kv = client(&c).await;
        let err = kv.put("big", vec![0u8; 1_600_000], None).await.unwrap_err();
        assert!(err.to_string().contains("request is too large"), "{err}");
        // A txn nested 10 deep is served; 10,000 deep is refused by the decoder's recursion
        // limit (100) before anything recurses on it.
        raw_call(&c, "/etcdserverpb.KV/Txn", nested_txn(10))
            .await
            .unwrap();
        let status = raw_call(&c, "/etcdserverpb.KV/Txn", nested_txn(10_000))
            .await
            .unwrap_err();
        eprintln!(
            "txn nested 10,000 deep: {:?} {}",
            status.code(),
            status.message()
        );
        let deep = (0..20).fold(etcd_client::Txn::new(), |inner, _| {
            etcd_client::Txn::new().and_then([TxnOp::txn(inner)])
        });
        kv.txn(deep).await.unwrap();
        served(&c, "after malformed requests").await;
    });
    check_rss(&c, "malformed requests", idle);
}

#[test]
fn watch_storm_and_watchers_per_stream_limit() {
    let c = Cluster::solo(&["--max-watchers-per-stream", "1000"]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let idle = rss_mib(&c);
    runtime.block_on(async {
        // 10 streams of 1,000 watchers each on distinct keys, then 2,000 writes.
        let mut streams = Vec::new();
        for s in 0..10 {
            let mut cl = client(&c).await;
            let mut stream = cl.watch(format!("w/{s}/0"), None).await.unwrap();
            for k in 1..1000 {
                stream.watch(format!("w/{s}/{k}"), None).await.unwrap();
            }
            streams.push((cl, stream));
        }
        // The 1,001st watcher of a stream is canceled with etcd's text.
        let (_, stream) = &mut streams[0];
        stream
            .watch("w/0/extra", Some(WatchOptions::new()))
            .await
            .unwrap();
        let reason = loop {
            let resp = stream.message().await.unwrap().unwrap();
            if resp.canceled() {
                break resp.cancel_reason().to_owned();
            }
        };
        assert!(reason.contains("too many requests"), "{reason}");
        let mut writer = client(&c).await;
        for i in 0..2000 {
            writer
                .put(format!("w/{}/{}", i % 10, i % 1000), "x", None)
                .await
                .unwrap();
        }
        served(&c, "with 10,000 watchers open").await;
    });
    check_rss(&c, "10,000 watchers, 2,000 writes", idle);
}

#[test]
fn lease_storm_and_keep_alive_flood() {
    let c = Cluster::solo(&["--max-leases-per-keepalive-stream", "100"]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let idle = rss_mib(&c);
    runtime.block_on(async {
        // 100,000 leases from 64 concurrent clients.
        const LEASES: usize = 100_000;
        const CLIENTS: usize = 64;
        let mut tasks = Vec::new();
        for t in 0..CLIENTS {
            let mut cl = client(&c).await;
            tasks.push(tokio::spawn(async move {
                let mut ids = Vec::new();
                for _ in (t..LEASES).step_by(CLIENTS) {
                    ids.push(cl.lease_grant(600, None).await.unwrap().id());
                }
                ids
            }));
        }
        let mut ids = Vec::new();
        for t in tasks {
            ids.extend(t.await.unwrap());
        }
        assert_eq!(ids.len(), LEASES);
        let mut cl = client(&c).await;
        assert_eq!(cl.leases().await.unwrap().leases().len(), LEASES);
        served(&c, "after the lease storm").await;

        // A keep-alive flood: 20,000 renewals of 100 leases on one stream, answered in order.
        let channel = tonic::transport::Channel::from_shared(c.members[0].client_url())
            .unwrap()
            .connect()
            .await
            .unwrap();
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let mut answers = LeaseClient::new(channel)
            .lease_keep_alive(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        let flood = ids[..100].to_vec();
        let sender = tokio::spawn(async move {
            for i in 0..20_000 {
                let id = flood[i % 100];
                tx.send(pb::LeaseKeepAliveRequest { id }).await.unwrap();
            }
            tx
        });
        for i in 0..20_000 {
            let resp = answers.message().await.unwrap().unwrap();
            assert_eq!(resp.id, ids[i % 100]);
            assert!(resp.ttl > 0);
        }
        let tx = sender.await.unwrap();
        served(&c, "after the keep-alive flood").await;
        // The 101st distinct lease on the stream ends it with etcd's text.
        tx.send(pb::LeaseKeepAliveRequest { id: ids[100] })
            .await
            .unwrap();
        let err = answers.message().await.unwrap_err();
        assert!(err.message().contains("too many requests"), "{err}");
    });
    check_rss(&c, "100,000 leases and 20,000 keep-alives", idle);
}

#[test]
fn idle_connections_and_password_guessing() {
    let c = Cluster::solo(&[]);
    let idle = rss_mib(&c);
    // 700 connections that never speak, and 200 that send HTTP/2's preface and stop (900 in
    // all: under a 1,024 open-file limit, for this process and the server).
    let addr = c.members[0].endpoint();
    let mut held = Vec::new();
    for i in 0..900 {
        use std::io::Write as _;
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        if i >= 700 {
            s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").unwrap();
        }
        held.push(s);
    }
    ok(c.ctl(&["put", "k", "served with 900 idle connections"]));
    check_rss(&c, "900 idle connections", idle);
    drop(held);

    ok(c.ctl(&["user", "add", "root:r00tpw"]));
    ok(c.ctl(&["auth", "enable"]));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let endpoint = c.members[0].endpoint();
        let options = ConnectOptions::new().with_user("root", "r00tpw");
        let mut legit = Client::connect([endpoint.clone()], Some(options))
            .await
            .unwrap();
        // 8 guessers, 12 wrong passwords each, at the same time as the legitimate client.
        let started = Instant::now();
        let mut guessers = Vec::new();
        for g in 0..8 {
            let endpoint = endpoint.clone();
            guessers.push(tokio::spawn(async move {
                for n in 0..12 {
                    let options = ConnectOptions::new().with_user("root", format!("guess-{g}-{n}"));
                    let err = Client::connect([endpoint.clone()], Some(options))
                        .await
                        .map(|_| ())
                        .unwrap_err();
                    assert!(err.to_string().contains("authentication failed"), "{err}");
                }
            }));
        }
        for i in 0..50 {
            legit.put("legit", format!("{i}"), None).await.unwrap();
        }
        // The writes did not wait for the guessing to end: guessers are still at it (96
        // bcrypt checks, one at a time, take seconds; 50 writes take far less).
        let still_guessing = guessers.iter().filter(|g| !g.is_finished()).count();
        assert!(
            still_guessing > 0,
            "the writes were served only after the guessing"
        );
        for g in guessers {
            g.await.unwrap();
        }
        let elapsed = started.elapsed();
        eprintln!(
            "96 wrong passwords in {elapsed:?} ({:.1} guesses/s) while 50 writes were served",
            96.0 / elapsed.as_secs_f64()
        );
        let got = legit.get("legit", None).await.unwrap();
        assert_eq!(got.kvs()[0].value(), b"49");
    });
    check_rss(&c, "password guessing", idle);
}

/// The value of setting `id` in the first HTTP/2 SETTINGS frame the server at `addr` sends.
fn http2_setting(addr: &str, id: u16) -> Option<u32> {
    use std::io::{Read, Write};
    let mut socket = std::net::TcpStream::connect(addr).unwrap();
    socket
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    // The client connection preface, then an empty SETTINGS frame.
    socket
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .unwrap();
    socket.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).unwrap();
    loop {
        let mut header = [0u8; 9];
        socket.read_exact(&mut header).unwrap();
        let len =
            usize::from(header[0]) << 16 | usize::from(header[1]) << 8 | usize::from(header[2]);
        let mut payload = vec![0u8; len];
        socket.read_exact(&mut payload).unwrap();
        let (kind, flags) = (header[3], header[4]);
        if kind == 4 && flags & 1 == 0 {
            return payload.chunks_exact(6).find_map(|e| {
                (u16::from_be_bytes([e[0], e[1]]) == id)
                    .then(|| u32::from_be_bytes([e[2], e[3], e[4], e[5]]))
            });
        }
    }
}

#[test]
fn max_concurrent_streams_is_announced_to_clients() {
    const SETTINGS_MAX_CONCURRENT_STREAMS: u16 = 3;
    let c = Cluster::solo(&["--max-concurrent-streams", "7"]);
    let url = c.members[0].client_url();
    let addr = url.trim_start_matches("http://");
    assert_eq!(
        http2_setting(addr, SETTINGS_MAX_CONCURRENT_STREAMS),
        Some(7),
        "--max-concurrent-streams 7 is the limit the client port announces"
    );
    // Still serving.
    ok(c.ctl(&["put", "after", "x"]));
}
