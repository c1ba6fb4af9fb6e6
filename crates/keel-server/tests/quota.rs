//! The space quota with a real process: fill past `--quota-backend-bytes`, the NOSPACE alarm
//! refuses writes but not reads and deletes, and deleting plus compacting clears it.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

mod common;

use common::{fails, ok, poll_ctl, Cluster};

#[test]
fn quota_fill_raises_nospace_and_compaction_clears_it() {
    let c = Cluster::solo(&["--quota-backend-bytes", "262144"]);

    // 16 KiB values: the 256 KiB quota is crossed well before 64 of them.
    let value = "x".repeat(16 * 1024);
    let mut refused = None;
    for i in 0..64 {
        let out = c.ctl(&["put", &format!("big/{i:02}"), &value]);
        if !out.status.success() {
            refused = Some(String::from_utf8_lossy(&out.stderr).into_owned());
            break;
        }
    }
    let err = refused.expect("the quota never refused a put");
    assert!(err.contains("database space exceeded"), "{err}");
    let alarms = ok(c.ctl(&["alarm", "list"]));
    assert!(alarms.contains("alarm:NOSPACE"), "{alarms}");

    // Reads and deletes still work; writes that grow the state do not.
    assert_eq!(
        ok(c.ctl(&["get", "big/00", "--print-value-only"])),
        format!("{value}\n")
    );
    let err = fails(c.ctl(&["put", "more", "x"]));
    assert!(err.contains("database space exceeded"), "{err}");
    ok(c.ctl(&["del", "big/", "--prefix"]));

    // Compacting to the current revision frees the space: the alarm clears by itself.
    let out = ok(c.ctl(&["get", "big/00", "-w", "json"]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let revision = v["header"]["revision"].as_i64().unwrap();
    ok(c.ctl(&["compact", &revision.to_string()]));
    poll_ctl(&c.endpoints(), &["put", "after", "compaction"], |_| true);
    assert_eq!(ok(c.ctl(&["alarm", "list"])), "");
}

#[test]
fn alarm_disarm_and_defrag_commands_work() {
    let c = Cluster::start(1);
    ok(c.ctl(&["put", "k", "v"]));
    assert_eq!(ok(c.ctl(&["alarm", "list"])), "");
    assert!(ok(c.ctl(&["defrag"])).contains("Finished defragmenting"));
    ok(c.ctl(&["alarm", "disarm"]));
    ok(c.ctl(&["put", "k", "v2"]));
}
