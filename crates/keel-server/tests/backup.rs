//! Backup and restore with real processes: `etcdctl snapshot save` and `keel snapshot save`
//! from a running cluster, `keel snapshot status`, `keel snapshot restore` into three new
//! data directories, and the new cluster serving the same keyspace (HashKV equal).
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

mod common;

use common::{ctl, initial_cluster, ok, poll_ctl, Cluster, Member};
use std::path::Path;
use std::process::{Command, Output};

fn keel(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_keel"))
        .args(args)
        .output()
        .unwrap()
}

/// (hash, revision, total keys) from `keel snapshot status -w json`.
fn status(file: &Path) -> (u64, i64, u64) {
    let out = keel(&["snapshot", "status", file.to_str().unwrap(), "-w", "json"]);
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    (
        v["hash"].as_u64().unwrap(),
        v["revision"].as_i64().unwrap(),
        v["totalKey"].as_u64().unwrap(),
    )
}

/// HashKV of the member at `endpoint` at `rev`, through etcdctl.
fn hashkv(endpoint: &str, rev: i64) -> u64 {
    let out = ok(ctl(
        endpoint,
        &[
            "endpoint",
            "hashkv",
            "--rev",
            &rev.to_string(),
            "-w",
            "json",
        ],
        None,
    ));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v[0]["HashKV"]["hash"].as_u64().unwrap()
}

#[test]
fn save_status_restore_into_a_new_three_member_cluster() {
    let source = Cluster::start(3);
    for i in 0..20 {
        ok(source.ctl(&["put", &format!("cfg/{i:02}"), &format!("v{i}")]));
    }
    ok(source.ctl(&["del", "cfg/00"]));
    ok(source.ctl(&["put", "cfg/01", "rewritten"]));
    let root = tempfile::tempdir().unwrap();
    let by_keel = root.path().join("keel.snap");
    let by_etcdctl = root.path().join("etcdctl.snap");
    let endpoint = source.members[0].endpoint();
    let out = keel(&[
        "snapshot",
        "save",
        by_keel.to_str().unwrap(),
        "--endpoints",
        &endpoint,
    ]);
    assert!(out.status.success(), "{out:?}");
    ok(ctl(
        &endpoint,
        &["snapshot", "save", by_etcdctl.to_str().unwrap()],
        None,
    ));

    let (hash, revision, keys) = status(&by_keel);
    assert_eq!(
        keys,
        19 + 1,
        "20 keys put, one deleted, and wait_writable's"
    );
    assert_eq!(hash, hashkv(&endpoint, revision));
    assert_eq!(status(&by_etcdctl), (hash, revision, keys));
    let expected = ok(source.ctl(&["get", "cfg/", "--prefix"]));
    drop(source);

    // Three new members, each restored from the same file, form a new cluster.
    let mut members: Vec<Member> = (0..3)
        .map(|i| Member::new(&format!("new{i}"), root.path()))
        .collect();
    let initial = initial_cluster(&members);
    for m in &members {
        let out = keel(&[
            "snapshot",
            "restore",
            by_keel.to_str().unwrap(),
            "--name",
            &m.name,
            "--data-dir",
            m.dir.to_str().unwrap(),
            "--initial-cluster",
            &initial,
            "--initial-cluster-token",
            "keel-test",
            "--initial-advertise-peer-urls",
            &m.peer_url(),
        ]);
        assert!(out.status.success(), "{out:?}");
    }
    for m in &mut members {
        m.start(&initial, "new");
    }
    let restored = Cluster {
        root: tempfile::tempdir().unwrap(),
        members,
    };
    restored.wait_writable();
    assert_eq!(ok(restored.ctl(&["get", "cfg/", "--prefix"])), expected);
    for m in &restored.members {
        assert_eq!(hashkv(&m.endpoint(), revision), hash, "{}", m.name);
    }
    let list = restored.ctl_until(&["member", "list"], |l| l.lines().count() == 3);
    assert!(list.contains("new0") && !list.contains("infra0"), "{list}");
}

#[test]
fn corrupt_or_truncated_snapshots_are_refused_and_nothing_is_written() {
    let source = Cluster::start(1);
    ok(source.ctl(&["put", "k", "v"]));
    let root = tempfile::tempdir().unwrap();
    let file = root.path().join("good.snap");
    ok(source.ctl(&["snapshot", "save", file.to_str().unwrap()]));
    let good = std::fs::read(&file).unwrap();

    let mut flipped = good.clone();
    flipped[20] ^= 0x40;
    let truncated = good[..good.len() - 100].to_vec();
    for (name, bytes, reason) in [
        ("flipped.snap", flipped, "checksum mismatch"),
        ("truncated.snap", truncated, "checksum not found"),
    ] {
        let bad = root.path().join(name);
        std::fs::write(&bad, bytes).unwrap();
        let data = root.path().join(format!("{name}.etcd"));
        let out = keel(&[
            "snapshot",
            "restore",
            bad.to_str().unwrap(),
            "--data-dir",
            data.to_str().unwrap(),
        ]);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(reason), "{name}: {err}");
        assert!(!data.exists(), "{name}: restore wrote {}", data.display());
        let out = keel(&["snapshot", "status", bad.to_str().unwrap()]);
        assert!(!out.status.success());
    }

    // A data directory that holds data is never overwritten.
    let used = root.path().join("used.etcd");
    std::fs::create_dir_all(used.join("member")).unwrap();
    std::fs::write(used.join("member").join("CURRENT"), "x").unwrap();
    let out = keel(&[
        "snapshot",
        "restore",
        file.to_str().unwrap(),
        "--data-dir",
        used.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not empty"), "{err}");
    assert_eq!(
        std::fs::read(used.join("member").join("CURRENT")).unwrap(),
        b"x"
    );
    // Malformed cluster flags: refused with the flag's error.
    let out = keel(&[
        "snapshot",
        "restore",
        file.to_str().unwrap(),
        "--name",
        "a",
        "--initial-cluster",
        "b=http://127.0.0.1:1",
    ]);
    assert!(!out.status.success());
}

/// The cluster id the member at `endpoint` reports.
fn cluster_id(endpoint: &str) -> u64 {
    let out = ok(ctl(endpoint, &["endpoint", "status", "-w", "json"], None));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v[0]["Status"]["header"]["cluster_id"].as_u64().unwrap()
}

#[test]
fn force_new_cluster_recovers_a_lone_survivor_with_its_data() {
    let mut c = Cluster::start(3);
    for i in 0..10 {
        ok(c.ctl(&["put", &format!("dr/{i}"), &format!("v{i}")]));
    }
    let survivor = c.members[0].endpoint();
    // Linearizable: the survivor has applied every acknowledged write.
    let expected = ok(ctl(&survivor, &["get", "dr/", "--prefix"], None));
    let id_before = cluster_id(&survivor);
    let initial = initial_cluster(&c.members);

    // Quorum lost for good: two members gone with their disks; the survivor restarts forced.
    c.members[1].kill9();
    c.members[2].kill9();
    c.members[0].kill9();
    let flags = |force: bool| {
        let mut f = vec![
            "--initial-cluster".to_owned(),
            initial.clone(),
            "--initial-cluster-token".to_owned(),
            "keel-test".to_owned(),
        ];
        if force {
            f.push("--force-new-cluster".to_owned());
        }
        f
    };
    let args = flags(true);
    c.members[0].start_with(&args.iter().map(String::as_str).collect::<Vec<_>>());
    poll_ctl(&survivor, &["put", "after", "recovery"], |_| true);
    assert_eq!(
        ok(ctl(&survivor, &["get", "dr/", "--prefix"], None)),
        expected
    );
    assert_eq!(cluster_id(&survivor), id_before);
    let list = ok(ctl(&survivor, &["member", "list"], None));
    assert_eq!(list.lines().count(), 1, "{list}");
    assert!(list.contains("infra0"), "{list}");

    // Restarted without the flag, it stays a one-member cluster with its data ...
    c.members[0].terminate();
    let args = flags(false);
    c.members[0].start_with(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let got = poll_ctl(&survivor, &["get", "after", "--print-value-only"], |_| true);
    assert_eq!(String::from_utf8(got.stdout).unwrap(), "recovery\n");

    // ... and grows again.
    let new = grow(&survivor, &c.members[0], c.root.path(), &expected);
    c.members.push(new);
}

/// Add a member to the one-member cluster at `survivor` the way keel takes it: a learner
/// first (keel refuses an unstarted second voter, see keel-membership's rules), promoted once
/// caught up; it must then serve `expected` for `dr/`.
fn grow(survivor: &str, first: &Member, root: &Path, expected: &str) -> Member {
    let mut new = Member::new("infra3", root);
    let added = ok(ctl(
        survivor,
        &[
            "member",
            "add",
            "infra3",
            "--peer-urls",
            &new.peer_url(),
            "--learner",
        ],
        None,
    ));
    let new_id = added.split_whitespace().nth(1).unwrap().to_owned();
    new.start(
        &format!("infra0={},infra3={}", first.peer_url(), new.peer_url()),
        "existing",
    );
    poll_ctl(survivor, &["member", "promote", &new_id], |_| true);
    let endpoints = format!("{survivor},{}", new.endpoint());
    poll_ctl(&endpoints, &["put", "grown", "yes"], |_| true);
    let got = poll_ctl(
        &new.endpoint(),
        &["get", "dr/", "--prefix", "--consistency", "s"],
        |out| out == expected,
    );
    assert!(got.status.success());
    new
}
