//! The HTTP endpoints of real `keel` processes: `/metrics`, `/health`, `/livez`, `/readyz` on
//! the client URL (beside gRPC) and on `--listen-metrics-urls`.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]
#![allow(
    clippy::disallowed_methods,
    reason = "real processes: deadlines are wall-clock, polls pause between attempts"
)]

mod common;

use common::{free_port, http_get, ok, sample, Cluster, DEADLINE};
use std::time::{Duration, Instant};

/// Poll `GET path` until `accept` holds for (status, body).
fn get_until(addr: &str, path: &str, accept: impl Fn(u16, &str) -> bool) -> (u16, String) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let (status, body) = http_get(addr, path);
        if accept(status, &body) {
            return (status, body);
        }
        assert!(Instant::now() < deadline, "GET {path}: {status} {body}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn metrics_and_probes_on_the_client_and_metrics_urls() {
    let metrics_addr = format!("127.0.0.1:{}", free_port());
    let metrics_url = format!("http://{metrics_addr}");
    let c = Cluster::solo(&[
        "--listen-metrics-urls",
        &metrics_url,
        "--warning-apply-duration",
        "1us",
    ]);
    for i in 0..5 {
        ok(c.ctl(&["put", &format!("k{i}"), "v"]));
    }
    ok(c.ctl(&["get", "k", "--prefix"]));
    let client = c.members[0].endpoint();

    // The same registry on both URLs; the puts (wait_writable's included) were counted.
    for addr in [client.as_str(), metrics_addr.as_str()] {
        let (status, text) = http_get(addr, "/metrics");
        assert_eq!(status, 200);
        assert!(sample(&text, "etcd_mvcc_put_total") >= 6.0, "{text}");
        assert!(sample(&text, "etcd_mvcc_range_total") >= 1.0);
        assert_eq!(sample(&text, "etcd_server_has_leader"), 1.0);
        assert!(sample(&text, "etcd_disk_wal_fsync_duration_seconds_count") >= 1.0);
        assert!(text.ends_with("# EOF\n"));
    }
    // etcdctl still speaks gRPC on the port that now also serves HTTP/1.1.
    assert_eq!(ok(c.ctl(&["get", "k1", "--print-value-only"])), "v\n");

    let (status, body) = http_get(&client, "/health");
    assert_eq!(
        (status, body.as_str()),
        (200, r#"{"health":"true","reason":""}"#)
    );
    assert_eq!(http_get(&metrics_addr, "/livez"), (200, "ok\n".into()));
    assert_eq!(http_get(&client, "/readyz"), (200, "ok\n".into()));
    let (status, body) = http_get(&client, "/readyz?verbose&exclude=leader");
    assert_eq!(status, 200);
    assert_eq!(
        body,
        "[+]leader excluded: ok\n[+]serializable_read ok\n[+]linearizable_read ok\nok\n"
    );
    let (status, body) = http_get(&client, "/readyz?exclude=bogus");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("unknown check \"bogus\""), "{body}");
    assert_eq!(http_get(&client, "/nowhere").0, 404);
    // One log line per leader change, and per request slower than the (1 µs) threshold.
    let log = c.members[0].log();
    assert!(log.contains("leader changed"), "{log}");
    assert!(log.contains("request took too long"), "{log}");
    // A gRPC service keel does not serve (etcd's v3election) still answers gRPC's
    // Unimplemented, not HTTP's 404.
    let endpoint = c.members[0].endpoint();
    let err = tokio::runtime::Runtime::new().unwrap().block_on(async {
        let mut client = etcd_client::Client::connect([endpoint], None)
            .await
            .unwrap();
        client.campaign("election", "me", 0).await.unwrap_err()
    });
    match err {
        etcd_client::Error::GRpcStatus(status) => {
            assert_eq!(status.code(), tonic::Code::Unimplemented, "{status:?}");
        }
        other => panic!("expected a gRPC status, got {other:?}"),
    }
}

#[test]
fn a_member_without_quorum_is_live_but_neither_healthy_nor_ready() {
    let mut c = Cluster::start(3);
    let survivor = c.members[0].endpoint();
    get_until(&survivor, "/health", |s, _| s == 200);
    c.members[1].kill9();
    c.members[2].kill9();

    // Once the survivor notices (its leader lease lapses), the quorum checks fail.
    let (_, body) = get_until(&survivor, "/health", |s, _| s == 503);
    assert!(body.contains(r#""health":"false""#), "{body}");
    let (_, body) = get_until(&survivor, "/readyz", |s, _| s == 503);
    assert!(body.contains("[+]serializable_read ok"), "{body}");
    assert!(body.ends_with("readyz check failed\n"), "{body}");
    assert_eq!(http_get(&survivor, "/livez"), (200, "ok\n".into()));
    let (status, body) = http_get(&survivor, "/health?serializable=true");
    assert_eq!(
        (status, body.as_str()),
        (200, r#"{"health":"true","reason":""}"#)
    );
    let (_, text) = http_get(&survivor, "/metrics");
    assert!(sample(&text, "etcd_server_leader_changes_seen_total") >= 1.0);
    // Raft traffic with both peers, counted per member in both directions.
    for (name, label) in [
        ("etcd_network_peer_sent_bytes_total", "To"),
        ("etcd_network_peer_received_bytes_total", "From"),
    ] {
        let series: Vec<f64> = (text.lines())
            .filter_map(|l| l.strip_prefix(name)?.strip_prefix(&format!("{{{label}=\"")))
            .map(|rest| rest.rsplit(' ').next().unwrap().parse().unwrap())
            .collect();
        assert_eq!(series.len(), 2, "{name}: {text}");
        assert!(series.iter().all(|v| *v > 0.0), "{name}: {series:?}");
    }
}
