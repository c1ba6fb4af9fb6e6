//! TLS with real processes and the real etcdctl: client TLS with and without client
//! certificates, peer TLS between three members, and TLS flags refused with etcd's exit
//! status. Certificates are made by the `openssl` command line for each run.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]
#![allow(
    clippy::disallowed_methods,
    reason = "real processes: deadlines are wall-clock, polls pause between attempts"
)]

mod common;

use common::{ctl, initial_cluster, ok, poll_ctl, Cluster, Member};
use std::path::{Path, PathBuf};
use std::process::Command;

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("the openssl command line (apt: openssl)");
    assert!(out.status.success(), "openssl {args:?}: {out:?}");
}

/// A CA, a member certificate (server and client use, for 127.0.0.1) and a client
/// certificate, in `dir`.
fn certificates(dir: &Path) -> PathBuf {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509", "-days", "1", "-subj", "/CN=keel-test-ca"];
    ca.extend(ec);
    ca.extend(["-keyout", "ca.key", "-out", "ca.pem"]);
    openssl(dir, &ca);
    std::fs::write(
        dir.join("member.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n",
    )
    .unwrap();
    std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n").unwrap();
    for (name, cn) in [("member", "keel-member"), ("client", "root")] {
        let subj = format!("/CN={cn}");
        let (key, csr) = (format!("{name}.key"), format!("{name}.csr"));
        let mut req = vec!["req", "-subj", subj.as_str()];
        req.extend(ec);
        req.extend(["-keyout", key.as_str(), "-out", csr.as_str()]);
        openssl(dir, &req);
        let (pem, ext) = (format!("{name}.pem"), format!("{name}.ext"));
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-days",
                "1",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &pem,
                "-extfile",
                &ext,
            ],
        );
    }
    dir.to_path_buf()
}

fn path(dir: &Path, file: &str) -> String {
    dir.join(file).to_str().unwrap().to_owned()
}

/// With auth enabled, the certificate's common name (root) is the user of requests that
/// carry no token, as in etcd.
fn auth_by_certificate_common_name(endpoint: &str, tls: &[&str]) {
    fn with_tls<'a>(tls: &[&'a str], args: &[&'a str]) -> Vec<&'a str> {
        [tls, args].concat()
    }
    ok(ctl(
        endpoint,
        &with_tls(tls, &["user", "add", "root", "--no-password"]),
        None,
    ));
    ok(ctl(
        endpoint,
        &with_tls(tls, &["user", "add", "other:pw"]),
        None,
    ));
    ok(ctl(endpoint, &with_tls(tls, &["auth", "enable"]), None));
    ok(ctl(
        endpoint,
        &with_tls(tls, &["put", "as-root", "by certificate"]),
        None,
    ));
    let users = ok(ctl(endpoint, &with_tls(tls, &["user", "list"]), None));
    assert_eq!(users, "other\nroot\n");
    // A token names its own user: `other` has no role.
    let err = String::from_utf8(
        ctl(
            endpoint,
            &with_tls(tls, &["--user", "other:pw", "get", "secret"]),
            None,
        )
        .stderr,
    )
    .unwrap();
    assert!(err.contains("permission denied"), "{err}");
}

#[test]
fn client_tls_with_client_certificates() {
    let root = tempfile::tempdir().unwrap();
    let certs = certificates(root.path());
    let mut m = Member::new("secure", root.path());
    m.client_scheme = "https";
    let initial = format!("secure={}", m.peer_url());
    m.start_with(&[
        "--initial-cluster",
        &initial,
        "--cert-file",
        &path(&certs, "member.pem"),
        "--key-file",
        &path(&certs, "member.key"),
        "--trusted-ca-file",
        &path(&certs, "ca.pem"),
        "--client-cert-auth",
    ]);
    let endpoint = m.client_url();
    let (ca, cert, key) = (
        path(&certs, "ca.pem"),
        path(&certs, "client.pem"),
        path(&certs, "client.key"),
    );
    let tls = [
        "--cacert",
        ca.as_str(),
        "--cert",
        cert.as_str(),
        "--key",
        key.as_str(),
    ];
    fn with_tls<'a>(tls: &[&'a str], args: &[&'a str]) -> Vec<&'a str> {
        [tls, args].concat()
    }
    poll_ctl(&endpoint, &with_tls(&tls, &["put", "secret", "v"]), |_| {
        true
    });
    let got = ok(ctl(
        &endpoint,
        &with_tls(&tls, &["get", "secret", "--print-value-only"]),
        None,
    ));
    assert_eq!(got, "v\n");

    // Without a client certificate, or without TLS at all, nothing is served.
    let out = ctl(
        &endpoint,
        &["--cacert", &ca, "get", "secret", "--dial-timeout", "2s"],
        None,
    );
    assert!(!out.status.success(), "served without a client certificate");
    let plain = endpoint.replace("https://", "http://");
    let out = ctl(&plain, &["get", "secret", "--dial-timeout", "2s"], None);
    assert!(!out.status.success(), "served in plaintext");
    // Last, as it enables auth (after which every request above would fail anyway).
    auth_by_certificate_common_name(&endpoint, &tls);
    let _cluster = Cluster {
        root,
        members: vec![m],
    };
}

/// One peer message over TLS that trusts the CA, presenting the client certificate (CN=root)
/// if `identity`: the status the call ends with, or the connection's error.
fn peer_call(certs: &Path, peer_url: String, identity: bool) -> Result<tonic::Status, String> {
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let read = |f: &str| std::fs::read(certs.join(f)).unwrap();
        let mut tls = tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(read("ca.pem")));
        if identity {
            tls = tls.identity(tonic::transport::Identity::from_pem(
                read("client.pem"),
                read("client.key"),
            ));
        }
        let channel = tonic::transport::Channel::from_shared(peer_url)
            .unwrap()
            .tls_config(tls)
            .unwrap()
            .connect()
            .await
            .map_err(|e| format!("{e:?}"))?;
        Ok(
            keel_server::pb::keelpeer::peer_client::PeerClient::new(channel)
                .send(keel_server::pb::keelpeer::Frame::default())
                .await
                .unwrap_err(),
        )
    })
}

#[test]
fn peer_tls_between_three_members() {
    let root = tempfile::tempdir().unwrap();
    let certs = certificates(root.path());
    let mut members: Vec<Member> = (0..3)
        .map(|i| {
            let mut m = Member::new(&format!("p{i}"), root.path());
            m.peer_scheme = "https";
            m
        })
        .collect();
    let initial = initial_cluster(&members);
    let (cert, key, ca) = (
        path(&certs, "member.pem"),
        path(&certs, "member.key"),
        path(&certs, "ca.pem"),
    );
    for m in &mut members {
        m.start_with(&[
            "--initial-cluster",
            &initial,
            "--peer-cert-file",
            &cert,
            "--peer-key-file",
            &key,
            "--peer-trusted-ca-file",
            &ca,
            "--peer-client-cert-auth",
            "--peer-cert-allowed-cn",
            "keel-member",
        ]);
    }
    let c = Cluster { root, members };
    c.wait_writable();
    ok(c.ctl(&["put", "over-tls", "yes"]));
    for m in &c.members {
        let got = poll_ctl(
            &m.endpoint(),
            &[
                "get",
                "over-tls",
                "--print-value-only",
                "--consistency",
                "s",
            ],
            |out| out == "yes\n",
        );
        assert!(got.status.success());
    }
    let list = ok(c.ctl(&["member", "list"]));
    assert!(list.contains("https://127.0.0.1"), "{list}");

    // A certificate from the same CA with another common name (the client's, CN=root) is
    // refused by the peer service: --peer-cert-allowed-cn.
    let status = peer_call(&certs, c.members[0].peer_url(), true).unwrap();
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    assert!(status.message().contains("common name"), "{status:?}");
    // Without a client certificate the peer port refuses the TLS handshake
    // (--peer-client-cert-auth): the message never reaches the peer service.
    // (A status the server sent has no error source; a transport failure has one.)
    match peer_call(&certs, c.members[0].peer_url(), false) {
        Err(_connect) => {}
        Ok(status) => assert!(
            std::error::Error::source(&status).is_some(),
            "the peer service answered a caller without a certificate: {status:?}"
        ),
    }
}

#[test]
fn tls_flags_are_checked_before_anything_starts() {
    let root = tempfile::tempdir().unwrap();
    let certs = certificates(root.path());
    let data = root.path().join("never");
    let cases: [(Vec<String>, &str); 5] = [
        (
            vec!["--peer-cert-allowed-cn".into(), "keel-member".into()],
            "needs --peer-client-cert-auth",
        ),
        (
            vec!["--cert-file".into(), path(&certs, "member.pem")],
            "key-file",
        ),
        (
            vec!["--listen-client-urls".into(), "https://127.0.0.1:1".into()],
            "https:// needs a certificate",
        ),
        (
            vec![
                "--cert-file".into(),
                path(&certs, "member.pem"),
                "--key-file".into(),
                path(&certs, "member.key"),
                "--client-cert-auth".into(),
            ],
            "trusted-ca-file",
        ),
        (
            vec![
                "--peer-cert-file".into(),
                path(&certs, "member.ext"),
                "--peer-key-file".into(),
                path(&certs, "member.key"),
            ],
            "not a PEM",
        ),
    ];
    for (args, expected) in cases {
        let out = Command::new(env!("CARGO_BIN_EXE_keel"))
            .args(["--data-dir", data.to_str().unwrap()])
            .args(&args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(expected), "{args:?}: {err}");
        assert!(!data.exists());
    }
}
