//! Real `keel` processes on 127.0.0.1 and the real `etcdctl` (Debian's etcd-client, etcdctl
//! 3.4) against them. Polls with deadlines; never sleeps to wait for state.
#![allow(dead_code, reason = "each test file uses a subset")]
#![allow(
    clippy::disallowed_methods,
    reason = "real processes: deadlines are wall-clock, polls pause between attempts"
)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const DEADLINE: Duration = Duration::from_secs(30);

/// A free port on 127.0.0.1 (bound and released; the OS does not hand it out again at once).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `etcdctl` must be installed (CI installs Debian's etcd-client); fail loudly otherwise.
pub fn etcdctl_path() -> &'static str {
    let ok = Command::new("etcdctl")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "etcdctl not found: install Debian's etcd-client (apt-get install etcd-client)"
    );
    "etcdctl"
}

/// One member process.
pub struct Member {
    pub name: String,
    pub client_port: u16,
    pub peer_port: u16,
    /// The peer port the others dial (a [`Proxy`] in front of `peer_port`, or `peer_port`).
    pub advertised_peer_port: u16,
    pub dir: PathBuf,
    pub child: Option<Child>,
    /// `http` or `https` (client and peer URLs).
    pub client_scheme: &'static str,
    pub peer_scheme: &'static str,
    /// `--peer-source-address`: the address this member dials the others from.
    pub peer_source: Option<std::net::IpAddr>,
}

impl Member {
    pub fn new(name: &str, root: &Path) -> Self {
        let peer_port = free_port();
        Member {
            name: name.to_owned(),
            client_port: free_port(),
            peer_port,
            advertised_peer_port: peer_port,
            dir: root.join(name),
            child: None,
            client_scheme: "http",
            peer_scheme: "http",
            peer_source: None,
        }
    }

    pub fn client_url(&self) -> String {
        format!("{}://127.0.0.1:{}", self.client_scheme, self.client_port)
    }

    pub fn peer_url(&self) -> String {
        format!("{}://127.0.0.1:{}", self.peer_scheme, self.peer_port)
    }

    /// The peer URL the others dial.
    pub fn advertised_peer_url(&self) -> String {
        format!(
            "{}://127.0.0.1:{}",
            self.peer_scheme, self.advertised_peer_port
        )
    }

    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    /// Start the process with etcd's flags; `initial_cluster` as `name=url,...`.
    pub fn start(&mut self, initial_cluster: &str, state: &str) {
        self.start_with(&[
            "--initial-cluster",
            initial_cluster,
            "--initial-cluster-token",
            "keel-test",
            "--initial-cluster-state",
            state,
        ]);
    }

    /// Start the process with this member's name, directory and URLs plus `extra` flags.
    pub fn start_with(&mut self, extra: &[&str]) {
        std::fs::create_dir_all(&self.dir).unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.with_extension("log"))
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_keel"))
            .args(["--name", &self.name])
            .args(["--data-dir", self.dir.to_str().unwrap()])
            .args(["--listen-client-urls", &self.client_url()])
            .args(["--advertise-client-urls", &self.client_url()])
            .args(["--listen-peer-urls", &self.peer_url()])
            .args(["--initial-advertise-peer-urls", &self.advertised_peer_url()])
            .args(extra)
            .args(
                (self.peer_source.iter())
                    .flat_map(|a| ["--peer-source-address".to_owned(), a.to_string()]),
            )
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .args(["--log-level", "info"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    /// SIGKILL the process and reap it.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// Send `signal` (a `kill` signal name: STOP, CONT, ...) to the running process.
    pub fn signal(&self, signal: &str) {
        let child = self.child.as_ref().expect("not running");
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -{signal} {} failed", self.name);
    }

    /// SIGTERM the process and wait for it to exit; returns its exit status code.
    pub fn terminate(&mut self) -> Option<i32> {
        let mut c = self.child.take()?;
        Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status()
            .unwrap();
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = c.try_wait().unwrap() {
                return status.code();
            }
            assert!(
                Instant::now() < deadline,
                "{} did not stop on SIGTERM",
                self.name
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Wait for the process to exit by itself; its exit code.
    pub fn wait_exit(&mut self) -> Option<i32> {
        let mut c = self.child.take()?;
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = c.try_wait().unwrap() {
                return status.code();
            }
            assert!(Instant::now() < deadline, "{} did not exit", self.name);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.with_extension("log")).unwrap_or_default()
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A cluster of member processes.
pub struct Cluster {
    pub root: tempfile::TempDir,
    pub members: Vec<Member>,
}

impl Drop for Cluster {
    /// A failing test shows the end of every member's log (the harness prints a failing test's
    /// output), since the logs live in a temporary directory that goes with the cluster.
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        for m in &self.members {
            let log = std::fs::read_to_string(m.dir.with_extension("log")).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            eprintln!("---- last lines of {}'s log ----", m.name);
            for line in &lines[lines.len().saturating_sub(60)..] {
                eprintln!("{line}");
            }
        }
    }
}

impl Cluster {
    /// Start `n` members forming a new cluster, and wait until it serves writes.
    pub fn start(n: usize) -> Self {
        let root = tempfile::tempdir().unwrap();
        let mut members: Vec<Member> = (0..n)
            .map(|i| Member::new(&format!("infra{i}"), root.path()))
            .collect();
        let initial = initial_cluster(&members);
        for m in &mut members {
            m.start(&initial, "new");
        }
        let cluster = Cluster { root, members };
        cluster.wait_writable();
        cluster
    }

    /// As [`Cluster::start`], with a [`Proxy`] in front of each member's peer port: every
    /// connection to member `i` goes through `proxies[i]`. Member `i` dials from its own
    /// loopback address, 127.0.0.`11 + i`, so a proxy can cut the links of one member only
    /// ([`partition`]).
    pub fn start_behind_proxies(n: usize) -> (Self, Vec<Proxy>) {
        let root = tempfile::tempdir().unwrap();
        let mut members: Vec<Member> = (0..n)
            .map(|i| Member::new(&format!("infra{i}"), root.path()))
            .collect();
        let proxies: Vec<Proxy> = members.iter().map(|m| Proxy::start(m.peer_port)).collect();
        for (i, (m, p)) in members.iter_mut().zip(&proxies).enumerate() {
            m.advertised_peer_port = p.port;
            m.peer_source = Some(std::net::Ipv4Addr::new(127, 0, 0, 11 + i as u8).into());
        }
        let initial = initial_cluster(&members);
        for m in &mut members {
            m.start(&initial, "new");
        }
        let cluster = Cluster { root, members };
        cluster.wait_writable();
        (cluster, proxies)
    }

    /// One member forming its own cluster, started with `extra` flags, once it serves writes.
    pub fn solo(extra: &[&str]) -> Self {
        let root = tempfile::tempdir().unwrap();
        let mut m = Member::new("solo", root.path());
        let initial = format!("solo={}", m.peer_url());
        let mut flags = vec!["--initial-cluster", initial.as_str()];
        flags.extend_from_slice(extra);
        m.start_with(&flags);
        let cluster = Cluster {
            root,
            members: vec![m],
        };
        cluster.wait_writable();
        cluster
    }

    pub fn endpoints(&self) -> String {
        self.members
            .iter()
            .filter(|m| m.child.is_some())
            .map(Member::endpoint)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Run etcdctl against every running member.
    pub fn ctl(&self, args: &[&str]) -> Output {
        ctl(&self.endpoints(), args, None)
    }

    /// Run etcdctl until it succeeds with an output `accept` holds (members answer from
    /// their own applied state, which may lag the leader's), up to the deadline.
    pub fn ctl_until(&self, args: &[&str], accept: impl Fn(&str) -> bool) -> String {
        String::from_utf8(poll_ctl(&self.endpoints(), args, accept).stdout).unwrap()
    }

    /// Wait until a put through etcdctl succeeds.
    pub fn wait_writable(&self) {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let out = self.ctl(&["put", "keel-test/ready", "1"]);
            if out.status.success() {
                return;
            }
            if Instant::now() > deadline {
                let logs: Vec<String> = self.members.iter().map(Member::log).collect();
                panic!(
                    "cluster never writable: {}\n{}",
                    String::from_utf8_lossy(&out.stderr),
                    logs.join("\n----\n")
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The member id (hex, as etcdctl prints it) of the member serving `endpoint`, and the
    /// leader's id ("0" while it knows no leader), from `etcdctl endpoint status -w json`.
    pub fn status(&self, endpoint: &str) -> (String, String) {
        let out = ok(ctl(endpoint, &["endpoint", "status", "-w", "json"], None));
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        let s = &v[0]["Status"];
        let id = s["header"]["member_id"].as_u64().unwrap();
        // etcd's JSON omits zero fields: no "leader" while the member knows none (0 is no id).
        let leader = s["leader"].as_u64().unwrap_or(0);
        (format!("{id:x}"), format!("{leader:x}"))
    }

    /// Index of the member that leads, once every running member agrees.
    pub fn leader(&self) -> usize {
        let running: Vec<usize> = (0..self.members.len())
            .filter(|i| self.members[*i].child.is_some())
            .collect();
        self.leader_among(&running)
    }

    /// Index of the member that leads, once the members at `indices` (running ones) agree on
    /// one of them.
    pub fn leader_among(&self, indices: &[usize]) -> usize {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let mut leaders = std::collections::BTreeSet::new();
            let mut ids = Vec::new();
            for i in indices {
                let m = &self.members[*i];
                let out = ctl(&m.endpoint(), &["endpoint", "status", "-w", "json"], None);
                if !out.status.success() {
                    leaders.insert(String::new());
                    continue;
                }
                let (id, leader) = self.status(&m.endpoint());
                ids.push(id);
                leaders.insert(leader);
            }
            if leaders.len() == 1 && ids.len() == indices.len() {
                let leader = leaders.into_iter().next().unwrap();
                if let Some(i) = ids.iter().position(|id| *id == leader) {
                    return indices[i];
                }
            }
            assert!(
                Instant::now() < deadline,
                "members {indices:?} never agreed on a leader among them"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Cut every link between the members at `apart` and the others, both ways, through the
/// proxies of [`Cluster::start_behind_proxies`] (which tell members apart by the address
/// their connections leave from). [`Proxy::heal`] on every proxy ends it.
pub fn partition(c: &Cluster, proxies: &[Proxy], apart: &[usize]) {
    for i in apart {
        for j in (0..proxies.len()).filter(|j| !apart.contains(j)) {
            proxies[*i].cut_from(c.members[j].peer_source.unwrap());
            proxies[j].cut_from(c.members[*i].peer_source.unwrap());
        }
    }
}

pub fn initial_cluster(members: &[Member]) -> String {
    members
        .iter()
        .map(|m| format!("{}={}", m.name, m.advertised_peer_url()))
        .collect::<Vec<_>>()
        .join(",")
}

/// Run etcdctl (API v3) against `endpoints`, with `stdin` if given.
/// Run etcdctl against `endpoints` until it succeeds with a stdout `accept` holds (an
/// election in progress, a member whose applied state lags), up to the deadline.
pub fn poll_ctl(endpoints: &str, args: &[&str], accept: impl Fn(&str) -> bool) -> Output {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let out = ctl(endpoints, args, None);
        if out.status.success() && accept(&String::from_utf8_lossy(&out.stdout)) {
            return out;
        }
        assert!(
            Instant::now() < deadline,
            "etcdctl {args:?} never accepted: {out:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn ctl(endpoints: &str, args: &[&str], stdin: Option<&str>) -> Output {
    use std::io::Write as _;
    let mut child = Command::new(etcdctl_path())
        .env("ETCDCTL_API", "3")
        .args(["--endpoints", endpoints, "--command-timeout", "10s"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    } else {
        drop(child.stdin.take());
    }
    child.wait_with_output().unwrap()
}

/// The stdout of a successful command; panics with its stderr otherwise.
pub fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "etcdctl failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The stderr of a failed command; panics if it succeeded.
pub fn fails(out: Output) -> String {
    assert!(
        !out.status.success(),
        "etcdctl should have failed: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stderr).unwrap()
}

/// `GET path` over HTTP/1.1 to `addr` (`host:port`): the status code and the body.
pub fn http_get(addr: &str, path: &str) -> (u16, String) {
    use std::io::{Read as _, Write as _};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    assert!(
        !head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "{head}"
    );
    (status, body.to_owned())
}

/// The value of the unlabelled sample `name` in an OpenMetrics rendering.
pub fn sample(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("{name} not rendered:\n{text}"))
        .parse()
        .unwrap()
}

/// A userspace TCP proxy on 127.0.0.1 in front of `target`: it forwards every connection
/// until [`Proxy::cut`], which closes the open ones and refuses new ones until
/// [`Proxy::heal`]. In front of a member's peer port it cuts every link *into* that member
/// (the member's own calls to the others still go through their proxies).
pub struct Proxy {
    pub port: u16,
    refused: Arc<std::sync::Mutex<Refused>>,
    /// Both ends of every forwarded connection, with the address the connection came from.
    open: Arc<std::sync::Mutex<Vec<(std::net::IpAddr, std::net::TcpStream)>>>,
}

/// Which connections a [`Proxy`] refuses.
#[derive(Default)]
struct Refused {
    all: bool,
    from: std::collections::BTreeSet<std::net::IpAddr>,
}

impl Refused {
    fn refuses(&self, source: std::net::IpAddr) -> bool {
        self.all || self.from.contains(&source)
    }
}

impl Proxy {
    pub fn start(target: u16) -> Proxy {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let refused = Arc::new(std::sync::Mutex::new(Refused::default()));
        let open = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (rules, conns) = (Arc::clone(&refused), Arc::clone(&open));
        std::thread::spawn(move || {
            for inbound in listener.incoming() {
                let Ok(inbound) = inbound else { continue };
                let Ok(source) = inbound.peer_addr().map(|a| a.ip()) else {
                    continue;
                };
                if rules.lock().unwrap().refuses(source) {
                    continue; // dropped: the connection is refused
                }
                let Ok(outbound) = std::net::TcpStream::connect(("127.0.0.1", target)) else {
                    continue;
                };
                let mut list = conns.lock().unwrap();
                list.push((source, inbound.try_clone().unwrap()));
                list.push((source, outbound.try_clone().unwrap()));
                drop(list);
                pipe(inbound.try_clone().unwrap(), outbound.try_clone().unwrap());
                pipe(outbound, inbound);
            }
        });
        Proxy {
            port,
            refused,
            open,
        }
    }

    /// Close every open connection and refuse new ones.
    pub fn cut(&self) {
        self.refused.lock().unwrap().all = true;
        self.close(|_| true);
    }

    /// Close the connections that came from `source` and refuse new ones from it.
    pub fn cut_from(&self, source: std::net::IpAddr) {
        self.refused.lock().unwrap().from.insert(source);
        self.close(|s| s == source);
    }

    fn close(&self, which: impl Fn(std::net::IpAddr) -> bool) {
        self.open.lock().unwrap().retain(|(source, stream)| {
            if which(*source) {
                let _ = stream.shutdown(std::net::Shutdown::Both);
                false
            } else {
                true
            }
        });
    }

    /// Forward again, from everywhere.
    pub fn heal(&self) {
        *self.refused.lock().unwrap() = Refused::default();
    }
}

/// Copy `from` to `to` on a thread until either side closes, then close both.
fn pipe(mut from: std::net::TcpStream, mut to: std::net::TcpStream) {
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut from, &mut to);
        let _ = from.shutdown(std::net::Shutdown::Both);
        let _ = to.shutdown(std::net::Shutdown::Both);
    });
}
