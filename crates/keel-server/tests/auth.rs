//! Auth and RBAC with the real client: etcdctl's `user`, `role` and `auth` commands against a
//! 3-member keel cluster, then a matrix of each role x each operation x inside/outside its
//! range (nested txns through the Rust etcd client, which etcdctl cannot express).
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

mod common;

use common::{ctl, fails, ok, Cluster};

const ROOT: &str = "root:r00tpw";

/// Users: `rw` (readwrite on /app/, read on /cfg/), `ro` (read on /app/), `wo` (write on
/// /app/). Roles are granted with etcdctl's prefix and single-key forms.
fn set_up(c: &Cluster) {
    ok(c.ctl(&["user", "add", ROOT]));
    for (user, role) in [("rw", "app-rw"), ("ro", "app-ro"), ("wo", "app-wo")] {
        ok(c.ctl(&["user", "add", &format!("{user}:{user}pw")]));
        ok(c.ctl(&["role", "add", role]));
        ok(c.ctl(&["user", "grant-role", user, role]));
    }
    ok(c.ctl(&[
        "role",
        "grant-permission",
        "app-rw",
        "readwrite",
        "/app/",
        "--prefix",
    ]));
    ok(c.ctl(&[
        "role",
        "grant-permission",
        "app-rw",
        "read",
        "/cfg/",
        "--prefix",
    ]));
    ok(c.ctl(&[
        "role",
        "grant-permission",
        "app-ro",
        "read",
        "/app/",
        "--prefix",
    ]));
    ok(c.ctl(&[
        "role",
        "grant-permission",
        "app-wo",
        "write",
        "/app/",
        "--prefix",
    ]));
    // etcdctl's `auth enable` creates the root role and grants it to root when the server
    // answers "root user does not have root role".
    let out = ok(c.ctl(&["auth", "enable"]));
    assert!(out.contains("Authentication Enabled"), "{out}");
}

fn as_user(c: &Cluster, user: &str, args: &[&str]) -> std::process::Output {
    let mut all = vec!["--user", user];
    all.extend_from_slice(args);
    c.ctl(&all)
}

fn allowed(c: &Cluster, user: &str, args: &[&str]) {
    let out = as_user(c, user, args);
    assert!(
        out.status.success(),
        "{user} {args:?} was refused: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn denied(c: &Cluster, user: &str, args: &[&str]) {
    let err = fails(as_user(c, user, args));
    assert!(err.contains("permission denied"), "{user} {args:?}: {err}");
}

#[test]
fn etcdctl_rbac_matrix_on_three_members() {
    let c = Cluster::start(3);
    c.wait_writable();
    set_up(&c);
    let err = fails(c.ctl(&["get", "/app/k"]));
    assert!(err.contains("user name is empty"), "{err}");
    let err = fails(as_user(&c, "rw:wrong", &["get", "/app/k"]));
    assert!(err.contains("authentication failed"), "{err}");
    allowed(&c, ROOT, &["put", "/cfg/k", "v"]);

    // op x (inside /app/, outside) for each user: read, write, delete, txn.
    let txn_inside = "value(\"/app/k\") = \"v\"\n\nput /app/t v\n\nput /app/f v\n\n";
    let txn_outside_branch = "value(\"/app/k\") = \"v\"\n\nput /app/t v\n\nput /zzz v\n\n";
    let cases: [(&str, [bool; 4]); 3] = [
        // user, [get inside, put inside, del inside, txn inside]
        ("rw:rwpw", [true, true, true, true]),
        ("ro:ropw", [true, false, false, false]),
        ("wo:wopw", [false, true, true, false]),
    ];
    for (user, [get, put, del, txn]) in cases {
        let expect = |ok: bool, args: &[&str]| {
            if ok {
                allowed(&c, user, args)
            } else {
                denied(&c, user, args)
            }
        };
        expect(put, &["put", "/app/k", "v"]);
        expect(get, &["get", "/app/k"]);
        expect(get, &["get", "/app/", "--prefix"]);
        expect(del, &["del", "/app/gone"]);
        // Outside every role's range: always denied.
        denied(&c, user, &["get", "/zzz"]);
        denied(&c, user, &["put", "/zzz", "v"]);
        denied(&c, user, &["del", "/zzz"]);
        denied(&c, user, &["get", "/", "--prefix"]);
        // A txn needs read for its compares and write for every put of both branches.
        let args = ["--user", user, "txn"];
        let out = ctl(&c.endpoints(), &args, Some(txn_inside));
        assert_eq!(out.status.success(), txn, "{user} txn: {out:?}");
        let err = fails(ctl(&c.endpoints(), &args, Some(txn_outside_branch)));
        assert!(err.contains("permission denied"), "{user}: {err}");
    }
    // rw reads /cfg/ but cannot write it; prev-kv on a put needs read too.
    allowed(&c, "rw:rwpw", &["get", "/cfg/k"]);
    denied(&c, "rw:rwpw", &["put", "/cfg/k", "x"]);
    allowed(&c, "rw:rwpw", &["put", "/app/k", "v", "--prev-kv"]);
    denied(&c, "wo:wopw", &["put", "/app/k", "v", "--prev-kv"]);
    // Admin commands: root only; a user may read its own record.
    denied(&c, "rw:rwpw", &["user", "list"]);
    denied(&c, "rw:rwpw", &["role", "add", "x"]);
    denied(&c, "rw:rwpw", &["compaction", "1"]);
    let own = ok(as_user(&c, "rw:rwpw", &["user", "get", "rw"]));
    assert!(own.contains("app-rw"), "{own}");
    let users = ok(as_user(&c, ROOT, &["user", "list"]));
    assert_eq!(users, "ro\nroot\nrw\nwo\n");
    let role = ok(as_user(&c, ROOT, &["role", "get", "app-rw"]));
    assert!(role.contains("[/app/, /app0) (prefix /app/)"), "{role}");
}

#[test]
fn passwords_revokes_and_disable_through_etcdctl() {
    let c = Cluster::solo(&["--bcrypt-cost", "4"]);
    set_up(&c);
    allowed(&c, "rw:rwpw", &["put", "/app/k", "v"]);
    // Revoking the permission takes effect at once.
    ok(as_user(
        &c,
        ROOT,
        &["role", "revoke-permission", "app-rw", "/app/", "--prefix"],
    ));
    denied(&c, "rw:rwpw", &["put", "/app/k", "v"]);
    // A changed password: the old one fails, the new one works.
    let passwd = [
        "--user",
        ROOT,
        "user",
        "passwd",
        "ro",
        "--interactive=false",
    ];
    ok(ctl(&c.endpoints(), &passwd, Some("ro-new-pw\n")));
    let err = fails(as_user(&c, "ro:ropw", &["get", "/app/k"]));
    assert!(err.contains("authentication failed"), "{err}");
    allowed(&c, "ro:ro-new-pw", &["get", "/app/k"]);
    // Refusals keep etcd's texts.
    let err = fails(as_user(&c, ROOT, &["user", "add", "rw:x"]));
    assert!(err.contains("user name already exists"), "{err}");
    let err = fails(as_user(&c, ROOT, &["user", "delete", "root"]));
    assert!(err.contains("invalid auth management"), "{err}");
    let err = fails(as_user(
        &c,
        ROOT,
        &["role", "revoke-permission", "app-ro", "/nope"],
    ));
    assert!(
        err.contains("permission is not granted to the role"),
        "{err}"
    );
    ok(as_user(&c, ROOT, &["auth", "disable"]));
    ok(c.ctl(&["put", "/zzz", "anyone"]));
}

/// Nested txns and watches through the Rust etcd client (etcdctl cannot nest txns): every
/// op of every branch at every depth is checked, and a watch must lie inside a readable range.
#[test]
fn nested_txns_and_watches_with_the_rust_client() {
    use etcd_client::{Client, Compare, CompareOp, ConnectOptions, Txn, TxnOp, WatchOptions};
    let c = Cluster::solo(&["--bcrypt-cost", "4"]);
    set_up(&c);
    let endpoints = vec![c.members[0].endpoint()];
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let options = ConnectOptions::new().with_user("rw", "rwpw");
        let mut client = Client::connect(endpoints, Some(options)).await.unwrap();
        let nested = |outside: &str| {
            let inner = Txn::new()
                .and_then([TxnOp::put("/app/inner", "v", None)])
                .or_else([TxnOp::put(outside, "v", None)]);
            let middle = Txn::new().and_then([TxnOp::txn(inner)]);
            Txn::new()
                .when([Compare::version("/app/k", CompareOp::Equal, 0)])
                .and_then([TxnOp::txn(middle)])
        };
        client.txn(nested("/app/other")).await.unwrap();
        let err = client.txn(nested("/zzz")).await.unwrap_err().to_string();
        assert!(err.contains("permission denied"), "{err}");
        assert!(client.get("/zzz", None).await.is_err());

        let mut inside = client
            .watch("/app/", Some(WatchOptions::new().with_prefix()))
            .await
            .unwrap();
        // The watcher exists once its created response arrives; write only then.
        let created = inside.message().await.unwrap().unwrap();
        assert!(created.created() && !created.canceled(), "{created:?}");
        client.put("/app/w", "1", None).await.unwrap();
        let mut seen = Vec::new();
        while seen.is_empty() {
            let resp = inside.message().await.unwrap().unwrap();
            assert!(!resp.canceled(), "{:?}", resp.cancel_reason());
            seen.extend(resp.events().iter().map(|e| e.kv().unwrap().key().to_vec()));
        }
        assert_eq!(seen, vec![b"/app/w".to_vec()]);
        let mut outside = client
            .watch("/", Some(WatchOptions::new().with_prefix()))
            .await
            .unwrap();
        let resp = outside.message().await.unwrap().unwrap();
        assert!(resp.canceled(), "{resp:?}");
        assert!(
            resp.cancel_reason().contains("permission denied"),
            "{resp:?}"
        );
    });
}

/// `--auth-token jwt,...` with RS256 keys made by openssl: etcdctl authenticates and is
/// served with the signed token.
#[test]
fn jwt_tokens_with_etcdctl() {
    let keys = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .current_dir(keys.path())
            .args(args)
            .output()
            .expect("the openssl command line (apt: openssl)");
        assert!(out.status.success(), "openssl {args:?}: {out:?}");
    };
    run(&[
        "genpkey",
        "-algorithm",
        "RSA",
        "-pkeyopt",
        "rsa_keygen_bits:2048",
        "-out",
        "jwt.key",
    ]);
    run(&["pkey", "-in", "jwt.key", "-pubout", "-out", "jwt.pub"]);
    let flag = format!(
        "jwt,pub-key={},priv-key={},sign-method=RS256,ttl=10m",
        keys.path().join("jwt.pub").display(),
        keys.path().join("jwt.key").display()
    );
    let c = Cluster::solo(&["--auth-token", &flag, "--bcrypt-cost", "4"]);
    set_up(&c);
    allowed(&c, "rw:rwpw", &["put", "/app/k", "v"]);
    denied(&c, "rw:rwpw", &["get", "/zzz"]);
    let out = ok(as_user(&c, ROOT, &["get", "/app/k", "--print-value-only"]));
    assert_eq!(out, "v\n");
}
