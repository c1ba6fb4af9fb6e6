//! Authentication and RBAC through the node API: tokens valid on every member, writes
//! decided at apply (a revoked permission denies a write queued before it), nested txns,
//! watches, lease revokes, persistence across restart, and no plaintext password on disk.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

use keel::{
    AuthConfig, AuthError, InMemoryNetwork, Node, NodeBuilder, NodeError, Permission,
    PermissionKind, Timings,
};
use keel_storage::mvcc::{
    Compare, CompareOp, CompareTarget, DeleteRequest, PutRequest, RangeRequest, RequestOp,
    TxnRequest,
};
use keel_storage::watch::WatchSpec;
use keel_types::{KeyRange, MemberId};
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(10);
const ROOT_PW: &str = "r00t-pass-phrase";
const APP_PW: &str = "app-secret-4711";

fn fast_hashes() -> AuthConfig {
    AuthConfig {
        bcrypt_cost: 4,
        ..AuthConfig::default()
    }
}

fn denied(e: NodeError) -> bool {
    e == NodeError::Auth(AuthError::PermissionDenied)
}

/// root with the root role, user `app` with readwrite on `app/` and read on `cfg/`; auth on.
async fn set_up(node: &Node) {
    node.user_add("root", Some(ROOT_PW)).await.unwrap();
    node.user_grant_role("root", "root").await.unwrap();
    node.user_add("app", Some(APP_PW)).await.unwrap();
    node.role_add("app-rw").await.unwrap();
    let grant = |kind, prefix: &'static [u8]| Permission::new(kind, KeyRange::prefix(prefix));
    node.role_grant_permission("app-rw", grant(PermissionKind::ReadWrite, b"app/"))
        .await
        .unwrap();
    node.role_grant_permission("app-rw", grant(PermissionKind::Read, b"cfg/"))
        .await
        .unwrap();
    node.user_grant_role("app", "app-rw").await.unwrap();
    node.auth_enable().await.unwrap();
}

/// One in-memory node set up by [`set_up`], and a handle acting for `app`.
async fn single_node_as_app() -> (Node, Node) {
    let node = NodeBuilder::new(MemberId::new(1))
        .auth(fast_hashes())
        .start()
        .await
        .unwrap();
    set_up(&node).await;
    let app = as_user(&node, "app", APP_PW).await;
    (node, app)
}

async fn as_user(node: &Node, user: &str, password: &str) -> Node {
    let token = node.authenticate(user, password).await.unwrap().body;
    node.with_token(Some(&token)).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_node_rbac_rules() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeBuilder::new(MemberId::new(1))
        .data_dir(dir.path())
        .auth(fast_hashes())
        .start()
        .await
        .unwrap();
    // Before auth is enabled nothing is checked, and authenticate is refused.
    assert_eq!(
        node.authenticate("root", ROOT_PW).await.unwrap_err(),
        NodeError::Auth(AuthError::AuthNotEnabled)
    );
    node.with_token(None)
        .await
        .unwrap()
        .put(&b"x"[..], &b"1"[..])
        .await
        .unwrap();
    assert_eq!(
        node.auth_enable().await.unwrap_err(),
        NodeError::Auth(AuthError::RootUserNotExist)
    );
    set_up(&node).await;
    assert_eq!(
        node.authenticate("app", "wrong").await.unwrap_err(),
        NodeError::Auth(AuthError::AuthFailed)
    );
    assert_eq!(
        node.authenticate("ghost", APP_PW).await.unwrap_err(),
        NodeError::Auth(AuthError::AuthFailed)
    );
    assert_eq!(
        node.with_token(Some("forged")).await.unwrap_err(),
        NodeError::Auth(AuthError::InvalidAuthToken)
    );
    let anonymous = node.with_token(None).await.unwrap();
    assert_eq!(
        anonymous.put(&b"app/1"[..], &b"v"[..]).await.unwrap_err(),
        NodeError::Auth(AuthError::UserEmpty)
    );
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_reads_writes_and_watches_inside_its_ranges_only() {
    let (node, app) = single_node_as_app().await;
    assert_eq!(app.user(), Some("app"));
    app.put(&b"app/1"[..], &b"v"[..]).await.unwrap();
    assert!(denied(app.put(&b"cfg/1"[..], &b"v"[..]).await.unwrap_err()));
    assert!(denied(app.put(&b"other"[..], &b"v"[..]).await.unwrap_err()));
    app.range(
        &RangeRequest::new(KeyRange::prefix(&b"cfg/"[..])),
        keel::ReadConsistency::Linearizable,
    )
    .await
    .unwrap();
    assert!(denied(
        app.range(
            &RangeRequest::new(KeyRange::all()),
            keel::ReadConsistency::Linearizable
        )
        .await
        .unwrap_err()
    ));
    // Delete with prev_kv on cfg/ needs write there too; on app/ it is fine.
    app.delete_range(DeleteRequest {
        range: KeyRange::prefix(&b"app/"[..]),
        prev_kv: true,
    })
    .await
    .unwrap();
    assert!(denied(
        app.delete_range(DeleteRequest {
            range: KeyRange::prefix(&b"cfg/"[..]),
            prev_kv: false
        })
        .await
        .unwrap_err()
    ));
    // Watches: inside the readable ranges only.
    app.watch(WatchSpec::new(KeyRange::prefix(&b"cfg/"[..])))
        .await
        .unwrap();
    assert!(denied(
        app.watch(WatchSpec::new(KeyRange::prefix(&b"c"[..])))
            .await
            .unwrap_err()
    ));
    // Admin calls need root.
    assert!(denied(app.user_add("eve", Some("x")).await.unwrap_err()));
    assert!(denied(app.user_list().await.unwrap_err()));
    assert!(denied(
        app.compact(keel_types::Revision::new(2)).await.unwrap_err()
    ));
    assert!(denied(app.snapshot().unwrap_err()));
    assert!(denied(app.hash_kv(None).await.unwrap_err()));
    // A user reads its own record and its roles, not others'.
    assert_eq!(app.user_get("app").await.unwrap().body.roles.len(), 1);
    assert!(app
        .user_get("app")
        .await
        .unwrap()
        .body
        .password_hash
        .is_none());
    app.role_get("app-rw").await.unwrap();
    assert!(denied(app.user_get("root").await.unwrap_err()));
    let root = as_user(&node, "root", ROOT_PW).await;
    root.put(&b"anything"[..], &b"v"[..]).await.unwrap();
    assert_eq!(root.user_list().await.unwrap().body, vec!["app", "root"]);
    node.shutdown().await;
}

/// Three members over an in-memory network, each with its auth settings, once each sees a
/// leader.
async fn three_members(auth: impl Fn(MemberId) -> AuthConfig) -> (InMemoryNetwork, Vec<Node>) {
    let net = InMemoryNetwork::new();
    let ids: Vec<MemberId> = (1..=3).map(MemberId::new).collect();
    let mut nodes = Vec::new();
    for id in &ids {
        let node = NodeBuilder::new(*id)
            .name(format!("n{id}"))
            .initial_members(ids.iter().map(|i| (*i, format!("n{i}"))))
            .network(net.endpoint(*id))
            .timings(Timings {
                heartbeat_interval: Duration::from_millis(50),
                election_timeout: Duration::from_millis(300),
                request_timeout: Duration::from_secs(2),
            })
            .auth(auth(*id))
            .start()
            .await
            .unwrap();
        net.register(*id, node.peer_handler());
        nodes.push(node);
    }
    for n in &nodes {
        n.wait_for_leader(DEADLINE).await.unwrap();
    }
    (net, nodes)
}

fn txn(compare_key: &'static [u8], success: Vec<RequestOp>, failure: Vec<RequestOp>) -> TxnRequest {
    TxnRequest {
        compare: vec![Compare {
            range: KeyRange::key(compare_key),
            op: CompareOp::Equal,
            target: CompareTarget::Version(0),
        }],
        success,
        failure,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn txn_checks_every_branch_and_nested_txn() {
    let (node, app) = single_node_as_app().await;
    let put = |k: &'static [u8]| RequestOp::Put(PutRequest::new(k, &b"v"[..]));
    app.txn(txn(b"app/c", vec![put(b"app/a")], vec![put(b"app/b")]))
        .await
        .unwrap();
    // The compare reads cfg/ (readable): fine.
    app.txn(txn(b"cfg/c", vec![put(b"app/a")], vec![]))
        .await
        .unwrap();
    // A compare outside the readable ranges.
    assert!(denied(
        app.txn(txn(b"zzz", vec![put(b"app/a")], vec![]))
            .await
            .unwrap_err()
    ));
    // The failure branch (which would not run) writes outside: still denied, as in etcd.
    assert!(denied(
        app.txn(txn(b"app/c", vec![put(b"app/a")], vec![put(b"cfg/x")]))
            .await
            .unwrap_err()
    ));
    // Nested two deep, the innermost writes outside.
    let inner = txn(b"app/c", vec![put(b"app/ok")], vec![put(b"secret")]);
    let middle = txn(b"app/c", vec![RequestOp::Txn(inner)], vec![]);
    let outer = txn(b"app/c", vec![RequestOp::Txn(middle)], vec![]);
    assert!(denied(app.txn(outer).await.unwrap_err()));
    // Nothing of the denied txns was applied.
    let resp = node
        .range(
            &RangeRequest::new(KeyRange::all()),
            keel::ReadConsistency::Linearizable,
        )
        .await
        .unwrap();
    let keys: Vec<_> = resp.body.kvs.iter().map(|kv| kv.key.clone()).collect();
    // (The compares held, so only success branches ran.)
    assert_eq!(keys, vec![bytes::Bytes::from_static(b"app/a")]);
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_revisions_lease_revoke_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let start = || {
        NodeBuilder::new(MemberId::new(1))
            .data_dir(dir.path())
            .auth(fast_hashes())
            .start()
    };
    let node = start().await.unwrap();
    set_up(&node).await;
    let app = as_user(&node, "app", APP_PW).await;
    // A lease holding a key outside app's write range cannot be revoked by app.
    let lease = node.lease_grant(60, None).await.unwrap().body.id;
    let mut leased = PutRequest::new(&b"secret/leased"[..], &b"v"[..]);
    leased.lease = Some(lease);
    node.put_request(leased).await.unwrap();
    assert!(denied(app.lease_revoke(lease).await.unwrap_err()));
    // Nor can app put another key under that lease (etcd checks the lease's keys).
    let mut join = PutRequest::new(&b"app/j"[..], &b"v"[..]);
    join.lease = Some(lease);
    assert!(denied(app.put_request(join).await.unwrap_err()));
    assert!(denied(
        app.lease_time_to_live(lease, true).await.unwrap_err()
    ));
    // Any change to the auth store makes older tokens stale: re-authenticate.
    node.role_add("other").await.unwrap();
    assert_eq!(
        app.put(&b"app/1"[..], &b"v"[..]).await.unwrap_err(),
        NodeError::Auth(AuthError::AuthOldRevision)
    );
    let app = as_user(&node, "app", APP_PW).await;
    app.put(&b"app/1"[..], &b"v"[..]).await.unwrap();
    // A password change ends the user's tokens at once.
    let token = node.authenticate("app", APP_PW).await.unwrap().body;
    node.user_change_password("app", Some("new-pass"))
        .await
        .unwrap();
    assert_eq!(
        node.with_token(Some(&token)).await.unwrap_err(),
        NodeError::Auth(AuthError::InvalidAuthToken)
    );
    node.shutdown().await;
    // Users, roles and the enabled flag survive a restart; tokens do not (as in etcd).
    let node = start().await.unwrap();
    assert_eq!(
        node.with_token(Some(&token)).await.unwrap_err(),
        NodeError::Auth(AuthError::InvalidAuthToken)
    );
    assert!(node.auth_status().await.unwrap().body.enabled);
    let app = as_user(&node, "app", "new-pass").await;
    app.put(&b"app/2"[..], &b"v"[..]).await.unwrap();
    assert!(denied(app.put(&b"cfg/2"[..], &b"v"[..]).await.unwrap_err()));
    node.shutdown().await;
    // No file of the data directory holds a password in plain text.
    for entry in walk(dir.path()) {
        let bytes = std::fs::read(&entry).unwrap();
        for pw in [ROOT_PW, APP_PW, "new-pass"] {
            assert!(
                !bytes.windows(pw.len()).any(|w| w == pw.as_bytes()),
                "{pw} found in {}",
                entry.display()
            );
        }
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_tokens_work_everywhere_and_revokes_apply_in_log_order() {
    let (_net, nodes) = three_members(|_| fast_hashes()).await;
    set_up(&nodes[0]).await;
    // A token issued through member 1 works on members 2 and 3.
    let token = nodes[0].authenticate("app", APP_PW).await.unwrap().body;
    for n in &nodes[1..] {
        let app = n.with_token(Some(&token)).await.unwrap();
        app.range(
            &RangeRequest::new(KeyRange::key(&b"app/k"[..])),
            keel::ReadConsistency::Linearizable,
        )
        .await
        .unwrap();
    }
    // Revoke app's write permission; a write with a token from before is denied when
    // applied (stale revision), and a fresh token is denied by the permission itself.
    nodes[1]
        .role_revoke_permission("app-rw", KeyRange::prefix(&b"app/"[..]))
        .await
        .unwrap();
    let stale = nodes[2].with_token(Some(&token)).await.unwrap();
    assert_eq!(
        stale.put(&b"app/k"[..], &b"v"[..]).await.unwrap_err(),
        NodeError::Auth(AuthError::AuthOldRevision)
    );
    let fresh = as_user(&nodes[2], "app", APP_PW).await;
    assert!(denied(
        fresh.put(&b"app/k"[..], &b"v"[..]).await.unwrap_err()
    ));
    // Every member holds the same auth state.
    for n in &nodes {
        let role = n.role_get("app-rw").await.unwrap().body;
        assert_eq!(role.permissions.len(), 1, "member {}", n.id());
    }
    for n in &nodes {
        n.shutdown().await;
    }
}

/// ES256 keys made by the openssl command line: (private PKCS#8 PEM, public PEM).
fn es256_keys(dir: &std::path::Path) -> (Vec<u8>, Vec<u8>) {
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .current_dir(dir)
            .args(args)
            .output()
            .expect("the openssl command line (apt: openssl)");
        assert!(out.status.success(), "openssl {args:?}: {out:?}");
    };
    run(&[
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-out",
        "jwt.key",
    ]);
    run(&["pkey", "-in", "jwt.key", "-pubout", "-out", "jwt.pub"]);
    (
        std::fs::read(dir.join("jwt.key")).unwrap(),
        std::fs::read(dir.join("jwt.pub")).unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(
    clippy::disallowed_methods,
    reason = "JWT expiry is wall-clock Unix time"
)]
async fn jwt_tokens_are_checked_by_signature_on_every_member() {
    let keys = tempfile::tempdir().unwrap();
    let (private, public) = es256_keys(keys.path());
    let jwt = |ttl| keel::JwtConfig::new("ES256", private.clone(), Some(public.clone()), ttl);
    let (_net, nodes) = three_members(|id| {
        let ttl = Duration::from_secs(if id.get() == 3 { 1 } else { 300 });
        AuthConfig {
            jwt: Some(jwt(ttl).unwrap()),
            ..fast_hashes()
        }
    })
    .await;
    set_up(&nodes[0]).await;
    // Signed by member 1, accepted by member 2 (nothing was replicated for it).
    let token = nodes[0].authenticate("app", APP_PW).await.unwrap().body;
    assert_eq!(token.split('.').count(), 3, "{token}");
    let app = nodes[1].with_token(Some(&token)).await.unwrap();
    app.put(&b"app/jwt"[..], &b"v"[..]).await.unwrap();
    assert!(denied(
        app.put(&b"cfg/jwt"[..], &b"v"[..]).await.unwrap_err()
    ));
    // Keys that do not pair are refused at start; a tampered token is refused.
    let other_keys = tempfile::tempdir().unwrap();
    let (_, other_public) = es256_keys(other_keys.path());
    let ttl = Duration::from_secs(60);
    let unpaired = keel::JwtConfig::new("ES256", private.clone(), Some(other_public), ttl);
    assert!(
        matches!(unpaired, Err(keel_auth::AuthError::TokenKey { .. })),
        "{unpaired:?}"
    );
    let mut tampered = token.clone();
    tampered.insert(token.find('.').unwrap() + 2, 'x');
    for bad in [tampered.as_str(), "a.b.c"] {
        assert_eq!(
            nodes[2].with_token(Some(bad)).await.unwrap_err(),
            NodeError::Auth(AuthError::InvalidAuthToken)
        );
    }
    // Member 3 signs with a 1 s lifetime: its token stops working once expired.
    let short = nodes[2].authenticate("app", APP_PW).await.unwrap().body;
    nodes[0].with_token(Some(&short)).await.unwrap();
    let deadline = std::time::Instant::now() + DEADLINE;
    while nodes[0].with_token(Some(&short)).await.is_ok() {
        assert!(
            std::time::Instant::now() < deadline,
            "the token never expired"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for n in &nodes {
        n.shutdown().await;
    }
}
