//! etcd compatibility, process tier: three `keel` processes on 127.0.0.1 started with etcd's
//! flags, driven by the real etcdctl 3.4 exactly as the seed's runbook drives etcd.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]
#![allow(
    clippy::disallowed_methods,
    reason = "real processes: deadlines are wall-clock, polls pause between attempts"
)]

mod common;

use common::{ctl, fails, initial_cluster, ok, poll_ctl, Cluster, Member, DEADLINE};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn kv_commands_on_a_three_member_cluster() {
    let c = Cluster::start(3);
    assert_eq!(ok(c.ctl(&["put", "foo", "bar"])).trim(), "OK");
    ok(c.ctl(&["put", "foo2", "baz"]));
    ok(c.ctl(&["put", "zoo", "z"]));
    assert_eq!(ok(c.ctl(&["get", "foo"])), "foo\nbar\n");
    // A missing key is an empty answer, not an error.
    assert_eq!(ok(c.ctl(&["get", "nope"])), "");
    assert_eq!(
        ok(c.ctl(&["get", "foo", "--prefix", "--keys-only"])),
        "foo\n\nfoo2\n\n"
    );
    assert_eq!(
        ok(c.ctl(&["get", "foo", "--prefix", "--limit", "1"])),
        "foo\nbar\n"
    );
    assert_eq!(
        ok(c.ctl(&[
            "get",
            "foo",
            "--prefix",
            "--sort-by",
            "KEY",
            "--order",
            "DESCEND"
        ])),
        "foo2\nbaz\nfoo\nbar\n"
    );
    // Every member serves linearizable and serializable reads.
    for m in &c.members {
        assert_eq!(ok(ctl(&m.endpoint(), &["get", "zoo"], None)), "zoo\nz\n");
        let out = ok(ctl(
            &m.endpoint(),
            &["get", "zoo", "--consistency", "s"],
            None,
        ));
        assert_eq!(out, "zoo\nz\n");
    }
    // --rev reads the past.
    let v: serde_json::Value =
        serde_json::from_str(&ok(c.ctl(&["get", "foo", "-w", "json"]))).unwrap();
    let rev = v["kvs"][0]["mod_revision"].as_u64().unwrap();
    ok(c.ctl(&["put", "foo", "bar2"]));
    assert_eq!(
        ok(c.ctl(&["get", "foo", "--rev", &rev.to_string()])),
        "foo\nbar\n"
    );
    // del with --prev-kv and --prefix.
    assert_eq!(ok(c.ctl(&["del", "foo2", "--prev-kv"])), "1\nfoo2\nbaz\n");
    assert_eq!(ok(c.ctl(&["del", "foo", "--prefix"])), "1\n");
    // txn: compare / success / failure, from stdin as etcdctl reads it.
    ok(c.ctl(&["put", "k", "v1"]));
    let txn = "value(\"k\") = \"v1\"\n\nput k v2\nput t yes\n\nput t no\n\n";
    let out = ok(ctl(&c.endpoints(), &["txn"], Some(txn)));
    assert!(out.starts_with("SUCCESS"), "{out}");
    assert_eq!(ok(c.ctl(&["get", "t", "--print-value-only"])), "yes\n");
    let out = ok(ctl(&c.endpoints(), &["txn"], Some(txn)));
    assert!(out.starts_with("FAILURE"), "{out}");
    assert_eq!(ok(c.ctl(&["get", "t", "--print-value-only"])), "no\n");
    // Compaction: older revisions are gone, with etcd's error.
    let out = ok(c.ctl(&["compaction", &rev.to_string()]));
    assert_eq!(out.trim(), format!("compacted revision {rev}"));
    let err = fails(c.ctl(&["get", "foo", "--rev", &(rev - 1).to_string()]));
    assert!(
        err.contains("required revision has been compacted"),
        "{err}"
    );
}

#[test]
fn watch_sees_puts_and_deletes_with_prev_kv() {
    let c = Cluster::start(3);
    let first = ok(c.ctl(&["put", "w/a", "1"]));
    assert_eq!(first.trim(), "OK");
    let v: serde_json::Value =
        serde_json::from_str(&ok(c.ctl(&["get", "w/a", "-w", "json"]))).unwrap();
    let rev = v["kvs"][0]["mod_revision"].as_u64().unwrap();
    ok(c.ctl(&["put", "w/a", "2"]));
    ok(c.ctl(&["del", "w/a"]));
    let mut watch = Command::new(common::etcdctl_path())
        .env("ETCDCTL_API", "3")
        .args(["--endpoints", &c.members[1].endpoint()])
        .args([
            "watch",
            "w/",
            "--prefix",
            "--prev-kv",
            "--rev",
            &rev.to_string(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = watch.stdout.take().unwrap();
    // History from --rev, then a live event.
    let reader = std::thread::spawn(move || {
        let mut lines = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let line = line.unwrap();
            let done = line == "live";
            lines.push(line);
            if done {
                break;
            }
        }
        lines
    });
    let deadline = Instant::now() + DEADLINE;
    while !reader.is_finished() {
        // Puts until the watcher reports the live one (it may start after the first).
        ok(c.ctl(&["put", "w/b", "live"]));
        assert!(Instant::now() < deadline, "watch never saw the live event");
        std::thread::sleep(Duration::from_millis(100));
    }
    watch.kill().unwrap();
    watch.wait().unwrap();
    let lines = reader.join().unwrap();
    assert_eq!(
        lines[..9],
        ["PUT", "w/a", "1", "PUT", "w/a", "1", "w/a", "2", "DELETE"],
        "{lines:?}"
    );
    assert_eq!(lines[9..12], ["w/a", "2", "w/a"], "{lines:?}");
    assert_eq!(lines.last().unwrap(), "live");
}

#[test]
fn lease_commands_and_attached_keys() {
    let c = Cluster::start(3);
    let out = ok(c.ctl(&["lease", "grant", "120"]));
    // "lease 694d5765fc71500b granted with TTL(120s)"
    let id = out.split_whitespace().nth(1).unwrap().to_owned();
    assert!(out.contains("granted with TTL(120s)"), "{out}");
    ok(c.ctl(&["put", "sample", "value", "--lease", &id]));
    ok(c.ctl(&["put", "sample2", "value", "--lease", &id]));
    let list = ok(c.ctl(&["lease", "list"]));
    assert!(
        list.contains("found 1 leases") && list.contains(&id),
        "{list}"
    );
    let ka = ok(c.ctl(&["lease", "keep-alive", "--once", &id]));
    assert!(
        ka.contains(&format!("lease {id} keepalived with TTL(120)")),
        "{ka}"
    );
    let ttl = ok(c.ctl(&["lease", "timetolive", &id, "--keys"]));
    assert!(ttl.contains("granted with TTL(120s)"), "{ttl}");
    assert!(ttl.contains("attached keys([sample sample2])"), "{ttl}");
    // An unknown lease: put refused with etcd's text.
    let err = fails(c.ctl(&["put", "x", "y", "--lease", "1234abcd"]));
    assert!(err.contains("requested lease not found"), "{err}");
    let out = ok(c.ctl(&["lease", "revoke", &id]));
    assert!(out.contains(&format!("lease {id} revoked")), "{out}");
    assert_eq!(ok(c.ctl(&["get", "sample", "--prefix"])), "");
    let ttl = ok(c.ctl(&["lease", "timetolive", &id]));
    assert!(ttl.contains("already expired"), "{ttl}");
}

#[test]
fn maintenance_commands() {
    let c = Cluster::start(3);
    ok(c.ctl(&["put", "m", "1"]));
    let status = ok(c.ctl(&["endpoint", "status"]));
    assert_eq!(status.lines().count(), 3, "{status}");
    // etcdctl 3.4 prints the health lines on stderr.
    let out = c.ctl(&["endpoint", "health"]);
    assert!(out.status.success());
    let health = String::from_utf8(out.stderr).unwrap();
    assert_eq!(health.matches("is healthy").count(), 3, "{health}");
    // Every member has applied the put: same hash everywhere.
    let deadline = Instant::now() + DEADLINE;
    loop {
        let out = ok(c.ctl(&["endpoint", "hashkv", "-w", "json"]));
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        let hashes: std::collections::BTreeSet<u64> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["HashKV"]["hash"].as_u64().unwrap_or(0))
            .collect();
        if hashes.len() == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "hashes never agreed: {out}");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(ok(c.ctl(&["alarm", "list"])), "");
    let snap = c.root.path().join("backup.db");
    let out = ok(ctl(
        &c.members[0].endpoint(),
        &["snapshot", "save", snap.to_str().unwrap()],
        None,
    ));
    assert!(out.contains("Snapshot saved"), "{out}");
    assert!(std::fs::metadata(&snap).unwrap().len() > 0);
    // move-leader, asked of the leader, to another member.
    let leader = c.leader();
    let target = (leader + 1) % 3;
    let (target_id, _) = c.status(&c.members[target].endpoint());
    let out = ok(ctl(
        &c.members[leader].endpoint(),
        &["move-leader", &target_id],
        None,
    ));
    assert!(out.contains("Leadership transferred"), "{out}");
    assert_eq!(c.leader(), target);
}

#[test]
fn member_add_then_start_with_state_existing_then_promote_update_remove() {
    let mut c = Cluster::start(3);
    let mut new = Member::new("infra3", c.root.path());
    let out = ok(c.ctl(&[
        "member",
        "add",
        "infra3",
        "--peer-urls",
        &new.peer_url(),
        "--learner",
    ]));
    assert!(
        out.contains("ETCD_INITIAL_CLUSTER_STATE=\"existing\""),
        "{out}"
    );
    let mut all: Vec<&Member> = c.members.iter().collect();
    all.push(&new);
    let initial = all
        .iter()
        .map(|m| format!("{}={}", m.name, m.peer_url()))
        .collect::<Vec<_>>()
        .join(",");
    new.start(&initial, "existing");
    // The learner catches up and is promoted (retried until in sync). Found by its peer URL:
    // its name appears once it has started and published it. The member etcdctl asks may not
    // have applied the addition yet (MemberList answers from the member's own view, as
    // etcd 3.4's does): polled.
    let id = poll_member_id(&c, &new.peer_url());
    learner_serves_serializable_reads_only(&new);
    let deadline = Instant::now() + DEADLINE;
    loop {
        let out = c.ctl(&["member", "promote", &id]);
        if out.status.success() {
            break;
        }
        assert!(Instant::now() < deadline, "never promoted: {:?}", out);
        std::thread::sleep(Duration::from_millis(100));
    }
    c.members.push(new);
    ok(c.ctl(&["put", "after-add", "4"]));
    assert_eq!(
        ok(ctl(
            &c.members[3].endpoint(),
            &["get", "after-add", "--print-value-only"],
            None
        )),
        "4\n"
    );
    let started = format!("started, infra3, {}", c.members[3].peer_url());
    let list = c.ctl_until(&["member", "list"], |l| l.contains(&started));
    assert_eq!(list.lines().count(), 4, "{list}");
    // Update then remove the new member.
    let url = format!("http://127.0.0.1:{}", common::free_port());
    let out = ok(c.ctl(&["member", "update", &id, "--peer-urls", &url]));
    assert!(out.contains("updated"), "{out}");
    c.members[3].kill9();
    let out = ok(c.ctl(&["member", "remove", &id]));
    assert!(out.contains("removed"), "{out}");
    c.ctl_until(&["member", "list"], |l| l.lines().count() == 3);
}

/// The hex id of the member with `peer_url`, once the member etcdctl asks lists it.
fn poll_member_id(c: &Cluster, peer_url: &str) -> String {
    let find = |list: &str| {
        let v: serde_json::Value = serde_json::from_str(list).unwrap();
        v["members"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["peerURLs"][0] == peer_url)
            .map(|m| format!("{:x}", m["ID"].as_u64().unwrap()))
    };
    let list = c.ctl_until(&["member", "list", "-w", "json"], |l| find(l).is_some());
    find(&list).unwrap()
}

/// Until promoted, a learner serves serializable reads only, with etcd's refusal (once it has
/// caught up: the configuration that makes it a learner comes with the log).
fn learner_serves_serializable_reads_only(learner: &Member) {
    let deadline = Instant::now() + DEADLINE;
    let ready = [
        "get",
        "keel-test/ready",
        "--consistency",
        "s",
        "--print-value-only",
    ];
    while ctl(&learner.endpoint(), &ready, None).stdout != b"1\n" {
        assert!(Instant::now() < deadline, "learner never served");
        std::thread::sleep(Duration::from_millis(50));
    }
    let err = fails(ctl(&learner.endpoint(), &["put", "x", "y"], None));
    assert!(err.contains("rpc not supported for learner"), "{err}");
}

#[test]
fn sigkill_of_the_leader_under_writes_loses_no_acknowledged_write() {
    let mut c = Cluster::start(3);
    let leader = c.leader();
    let others: Vec<String> = (0..3)
        .filter(|i| *i != leader)
        .map(|i| c.members[i].endpoint())
        .collect();
    let endpoints = others.join(",");
    // A write is acknowledged when etcdctl says OK; a failed one may or may not apply. Writes
    // go on across the kill (and the election it causes) until 20 more are acknowledged.
    let mut acked = Vec::new();
    let deadline = Instant::now() + DEADLINE;
    for i in 0.. {
        if i == 20 {
            c.members[leader].kill9();
        }
        if acked.len() >= 40 {
            break;
        }
        assert!(Instant::now() < deadline, "only {} acked", acked.len());
        let key = format!("d/{i:03}");
        let out = ctl(&endpoints, &["put", &key, "v"], None);
        if out.status.success() {
            acked.push(key);
        }
    }
    // The survivors elected a new leader and have every acknowledged write.
    let got = String::from_utf8(
        poll_ctl(
            &endpoints,
            &["get", "d/", "--prefix", "--keys-only"],
            |_| true,
        )
        .stdout,
    )
    .unwrap();
    for key in &acked {
        assert!(got.contains(key.as_str()), "lost {key}");
    }
    // The killed member restarts from its data directory and catches up.
    let initial = initial_cluster(&c.members);
    c.members[leader].start(&initial, "new");
    let endpoint = c.members[leader].endpoint();
    poll_ctl(
        &endpoint,
        &["get", "d/", "--prefix", "--keys-only"],
        |got| acked.iter().all(|k| got.contains(k.as_str())),
    );
    assert!(c.members[leader]
        .log()
        .contains("restarting from the data directory"));
}

#[test]
fn version_names_keel_and_the_etcd_api() {
    let out = Command::new(env!("CARGO_BIN_EXE_keel"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        format!("keel {} (etcd API 3.5.0)\n", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn bad_flags_exit_with_status_2_before_touching_the_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("never-created");
    let cases: [&[&str]; 4] = [
        &["--initial-cluster-state", "bogus"],
        &["--peer-source-address", "127.0.0"],
        &["--name", "a", "--initial-cluster", "b=http://127.0.0.1:1"],
        &["--listen-client-urls", "ftp://x"],
    ];
    for args in cases {
        let out = Command::new(env!("CARGO_BIN_EXE_keel"))
            .args(["--data-dir", data.to_str().unwrap()])
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("error"), "{err}");
        assert!(!data.exists());
    }
    // The same settings from KEEL_* environment variables and from a config file.
    let out = Command::new(env!("CARGO_BIN_EXE_keel"))
        .args(["--data-dir", data.to_str().unwrap()])
        .env("KEEL_INITIAL_CLUSTER_STATE", "sideways")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("sideways"));
    let file = dir.path().join("keel.yaml");
    std::fs::write(
        &file,
        "name: x
election-timeout: 10
",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_keel"))
        .args(["--config-file", file.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--election-timeout"));
    assert!(!data.exists());
}

#[test]
fn sigterm_stops_gracefully() {
    let root = tempfile::tempdir().unwrap();
    let mut m = Member::new("solo", root.path());
    let initial = initial_cluster(std::slice::from_ref(&m));
    m.start(&initial, "new");
    let c = Cluster {
        root,
        members: vec![m],
    };
    c.wait_writable();
    let mut c = c;
    assert_eq!(c.members[0].terminate(), Some(0));
    assert!(c.members[0]
        .log()
        .contains("ready to serve client requests"));
}

#[test]
fn discovery_bootstraps_a_new_cluster_from_a_token() {
    // The discovery service: any keel cluster (here, one member).
    let registry = Cluster::start(1);
    let token = "17fad13-6ee2-4d2a-8de7-1305d4c6d3e2";
    ok(registry.ctl(&["put", &format!("/_etcd/registry/{token}/_config/size"), "3"]));
    let mut members: Vec<Member> = (0..3)
        .map(|i| Member::new(&format!("d{i}"), registry.root.path()))
        .collect();
    for m in &mut members {
        m.start_with(&[
            "--discovery-endpoints",
            &registry.endpoints(),
            "--discovery-token",
            token,
        ]);
    }
    let cluster = Cluster {
        root: tempfile::tempdir().unwrap(),
        members,
    };
    cluster.wait_writable();
    // Every member publishes its name after start: polled until the asked member applied all.
    let started: Vec<String> = (cluster.members.iter())
        .map(|m| format!("started, {}, {}", m.name, m.peer_url()))
        .collect();
    let list = cluster.ctl_until(&["member", "list"], |l| {
        started.iter().all(|s| l.contains(s.as_str()))
    });
    assert_eq!(list.lines().count(), 3, "{list}");
    // The registrations live in the registry's keyspace.
    let regs = ok(registry.ctl(&[
        "get",
        &format!("/_etcd/registry/{token}/members/"),
        "--prefix",
        "--keys-only",
    ]));
    assert_eq!(regs.lines().filter(|l| !l.is_empty()).count(), 3, "{regs}");
    // A fourth member under the same token finds the cluster full.
    let mut late = Member::new("d3", registry.root.path());
    late.start_with(&[
        "--discovery-endpoints",
        &registry.endpoints(),
        "--discovery-token",
        token,
    ]);
    let status = late.wait_exit();
    assert_ne!(status, Some(0));
    assert!(
        late.log().contains("discovery: cluster is full"),
        "{}",
        late.log()
    );
}

#[test]
fn periodic_auto_compaction_drops_old_revisions() {
    let c = Cluster::solo(&[
        "--auto-compaction-mode",
        "periodic",
        "--auto-compaction-retention",
        "1s",
    ]);
    ok(c.ctl(&["put", "ac", "1"]));
    let v: serde_json::Value =
        serde_json::from_str(&ok(c.ctl(&["get", "ac", "-w", "json"]))).unwrap();
    let first = v["kvs"][0]["mod_revision"].as_u64().unwrap().to_string();
    // Keep writing; within a few periods the first revision is compacted away.
    let deadline = Instant::now() + DEADLINE;
    loop {
        ok(c.ctl(&["put", "ac", "again"]));
        let out = c.ctl(&["get", "ac", "--rev", &first]);
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(
                err.contains("required revision has been compacted"),
                "{err}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "never auto-compacted");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(c.members[0].log().contains("auto-compaction: compacted"));
}
