//! The `keel` binary's configuration: etcd's flags with etcd's defaults, each also read from a
//! `KEEL_*` environment variable, validated before anything touches the data directory.

use clap::Parser;
use keel_membership::{BootstrapConfig, BootstrapFlags, MemberUrl};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use crate::tls::TlsFiles;

/// The tools the binary carries besides the server.
#[derive(Clone, Debug, clap::Subcommand)]
pub enum Command {
    /// Snapshot backup and restore (etcdctl's `snapshot save`, etcdutl's `snapshot status`
    /// and `snapshot restore`).
    #[command(subcommand)]
    Snapshot(crate::snapshot_cli::SnapshotCommand),
}

/// Command-line flags (etcd's names and defaults). Every flag can also be given as the
/// environment variable `KEEL_<FLAG>` (upper case, `-` as `_`), e.g. `KEEL_NAME=infra0`.
#[derive(Clone, Debug, Parser)]
#[command(
    name = "keel",
    version = crate::VERSION,
    about = "keel: an etcd v3 compatible server built on the keel crates"
)]
pub struct Flags {
    /// A tool instead of the server (`keel snapshot save|status|restore`).
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Read the configuration from this YAML file (etcd's format; `.toml` files are read as
    /// TOML). When given, its keys replace the command line's other flags, as in etcd;
    /// `KEEL_*` variables still fill the keys the file leaves out.
    #[arg(long, env = "KEEL_CONFIG_FILE")]
    pub config_file: Option<PathBuf>,
    /// Human-readable name for this member.
    #[arg(long, env = "KEEL_NAME", default_value = "default")]
    pub name: String,
    /// Path to the data directory (default: `<name>.etcd`, as etcd).
    #[arg(long, env = "KEEL_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// URLs to listen on for client traffic (comma-separated).
    #[arg(
        long,
        env = "KEEL_LISTEN_CLIENT_URLS",
        default_value = "http://localhost:2379"
    )]
    pub listen_client_urls: String,
    /// This member's client URLs to advertise to the rest of the cluster.
    #[arg(
        long,
        env = "KEEL_ADVERTISE_CLIENT_URLS",
        default_value = "http://localhost:2379"
    )]
    pub advertise_client_urls: String,
    /// Certificate (PEM) of the client listeners; client URLs are then https://.
    #[arg(long, env = "KEEL_CERT_FILE")]
    pub cert_file: Option<PathBuf>,
    /// Private key (PEM) of `--cert-file`.
    #[arg(long, env = "KEEL_KEY_FILE")]
    pub key_file: Option<PathBuf>,
    /// CA (PEM) that signs client certificates.
    #[arg(long, env = "KEEL_TRUSTED_CA_FILE")]
    pub trusted_ca_file: Option<PathBuf>,
    /// Require every client to present a certificate signed by `--trusted-ca-file`.
    #[arg(long, env = "KEEL_CLIENT_CERT_AUTH", default_value_t = false)]
    pub client_cert_auth: bool,
    /// Certificate (PEM) of the peer listeners, also this member's identity when it dials
    /// other members; peer URLs are then https://.
    #[arg(long, env = "KEEL_PEER_CERT_FILE")]
    pub peer_cert_file: Option<PathBuf>,
    /// Private key (PEM) of `--peer-cert-file`.
    #[arg(long, env = "KEEL_PEER_KEY_FILE")]
    pub peer_key_file: Option<PathBuf>,
    /// CA (PEM) that signs the members' peer certificates.
    #[arg(long, env = "KEEL_PEER_TRUSTED_CA_FILE")]
    pub peer_trusted_ca_file: Option<PathBuf>,
    /// Require members dialing in to present a certificate signed by the peer CA.
    #[arg(long, env = "KEEL_PEER_CLIENT_CERT_AUTH", default_value_t = false)]
    pub peer_client_cert_auth: bool,
    /// Accept only members whose peer certificate has this common name (needs
    /// `--peer-client-cert-auth`).
    #[arg(long, env = "KEEL_PEER_CERT_ALLOWED_CN", default_value = "")]
    pub peer_cert_allowed_cn: String,
    /// More URLs to serve `/metrics` and the health endpoints on (comma-separated; they are
    /// always served on the client URLs too).
    #[arg(long, env = "KEEL_LISTEN_METRICS_URLS", default_value = "")]
    pub listen_metrics_urls: String,
    /// URLs to listen on for peer traffic.
    #[arg(
        long,
        env = "KEEL_LISTEN_PEER_URLS",
        default_value = "http://localhost:2380"
    )]
    pub listen_peer_urls: String,
    /// keel extension: the local IP address connections to other members leave from (on a
    /// host with several addresses; the system chooses by default).
    #[arg(long, env = "KEEL_PEER_SOURCE_ADDRESS")]
    pub peer_source_address: Option<std::net::IpAddr>,
    /// This member's peer URLs to advertise to the rest of the cluster.
    #[arg(
        long,
        env = "KEEL_INITIAL_ADVERTISE_PEER_URLS",
        default_value = "http://localhost:2380"
    )]
    pub initial_advertise_peer_urls: String,
    /// Initial cluster configuration for bootstrapping, `name=peer-url,...` (default:
    /// `<name>=<initial-advertise-peer-urls>`).
    #[arg(long, env = "KEEL_INITIAL_CLUSTER")]
    pub initial_cluster: Option<String>,
    /// Initial cluster token, which keeps the ids of separate clusters apart.
    #[arg(
        long,
        env = "KEEL_INITIAL_CLUSTER_TOKEN",
        default_value = "etcd-cluster"
    )]
    pub initial_cluster_token: String,
    /// `new` to form a new cluster, `existing` to join one (after `member add`).
    #[arg(long, env = "KEEL_INITIAL_CLUSTER_STATE", default_value = "new")]
    pub initial_cluster_state: String,
    /// Endpoints of the cluster that serves discovery (v3 discovery; comma-separated).
    #[arg(long, env = "KEEL_DISCOVERY_ENDPOINTS")]
    pub discovery_endpoints: Option<String>,
    /// Discovery token: the cluster forms from the members registered under it (also the
    /// token member ids are derived with).
    #[arg(long, env = "KEEL_DISCOVERY_TOKEN")]
    pub discovery_token: Option<String>,
    /// Time (in milliseconds) of a heartbeat interval; keep it above the worst round trip
    /// between members.
    #[arg(long, env = "KEEL_HEARTBEAT_INTERVAL", default_value_t = 100)]
    pub heartbeat_interval: u64,
    /// Time (in milliseconds) for an election to timeout.
    #[arg(long, env = "KEEL_ELECTION_TIMEOUT", default_value_t = 1000)]
    pub election_timeout: u64,
    /// Largest request a client may send, in bytes.
    #[arg(long, env = "KEEL_MAX_REQUEST_BYTES", default_value_t = 1_572_864)]
    pub max_request_bytes: usize,
    /// Most operations in one txn.
    #[arg(long, env = "KEEL_MAX_TXN_OPS", default_value_t = 128)]
    pub max_txn_ops: usize,
    /// Most concurrent gRPC streams (calls) on one client connection (HTTP/2's
    /// SETTINGS_MAX_CONCURRENT_STREAMS; etcd's flag, whose default is unbounded).
    #[arg(long, env = "KEEL_MAX_CONCURRENT_STREAMS", default_value_t = 10_000)]
    pub max_concurrent_streams: u32,
    /// Most watchers on one Watch stream (keel's own bound; etcd has none): further creates
    /// are canceled with "etcdserver: too many requests".
    #[arg(long, env = "KEEL_MAX_WATCHERS_PER_STREAM", default_value_t = 100_000)]
    pub max_watchers_per_stream: usize,
    /// Most distinct leases renewed over one LeaseKeepAlive stream (keel's own bound; etcd
    /// has none): the stream then ends with "etcdserver: too many requests".
    #[arg(
        long,
        env = "KEEL_MAX_LEASES_PER_KEEPALIVE_STREAM",
        default_value_t = 100_000
    )]
    pub max_leases_per_keepalive_stream: usize,
    /// Automatic compaction mode: `periodic` (keep a time span of history) or `revision`
    /// (keep a number of revisions).
    #[arg(long, env = "KEEL_AUTO_COMPACTION_MODE", default_value = "periodic")]
    pub auto_compaction_mode: String,
    /// Automatic compaction retention: hours or a duration (`30m`, `1h30m`) in periodic mode,
    /// a number of revisions in revision mode; 0 disables it.
    #[arg(long, env = "KEEL_AUTO_COMPACTION_RETENTION", default_value = "0")]
    pub auto_compaction_retention: String,
    /// Log level: debug, info, warn or error.
    #[arg(long, env = "KEEL_LOG_LEVEL", default_value = "info")]
    pub log_level: String,
    /// Log format: `text` (human-readable) or `json` (one JSON object per line).
    #[arg(long, env = "KEEL_LOG_FORMAT", default_value = "text")]
    pub log_format: String,
    /// etcd's logger choice. keel always logs with `tracing`; `zap` (etcd's structured
    /// logger) is accepted and means the same structured log lines.
    #[arg(long, env = "KEEL_LOGGER", default_value = "zap")]
    pub logger: String,
    /// Where logs go: `default` or `stderr` (standard error), `stdout`.
    #[arg(long, env = "KEEL_LOG_OUTPUTS", default_value = "default")]
    pub log_outputs: String,
    /// Space quota of the replicated state in bytes; over it, the NOSPACE alarm refuses writes
    /// that grow the state until compaction frees space (0: etcd's default, 2 GiB).
    #[arg(long, env = "KEEL_QUOTA_BACKEND_BYTES", default_value_t = 0)]
    pub quota_backend_bytes: u64,
    /// Log client requests that take longer than this (a Go-style duration: `100ms`, `1s`).
    #[arg(long, env = "KEEL_WARNING_APPLY_DURATION", default_value = "100ms")]
    pub warning_apply_duration: String,
    /// Auth token kind: `simple` (random tokens kept by every member) or
    /// `jwt,priv-key=<file>,pub-key=<file>,sign-method=<RS256|ES256|HS256|...>,ttl=<5m>`
    /// (signed tokens any member checks; HS* methods take the secret from `priv-key` and
    /// ignore `pub-key`). A JWT lives its own `ttl`; `--auth-token-ttl` applies to simple
    /// tokens only.
    #[arg(long, env = "KEEL_AUTH_TOKEN", default_value = "simple")]
    pub auth_token: String,
    /// Seconds an unused auth token stays valid.
    #[arg(long, env = "KEEL_AUTH_TOKEN_TTL", default_value_t = 300)]
    pub auth_token_ttl: u64,
    /// bcrypt cost of stored password hashes (4..=31).
    #[arg(long, env = "KEEL_BCRYPT_COST", default_value_t = 10)]
    pub bcrypt_cost: u32,
    /// Disaster recovery: restart this member (its data directory must have been started
    /// before) as the only member of its cluster, keeping its data, member id and cluster id.
    /// Remove the other members' data directories, then add them again with `member add`.
    /// Ignored on a data directory never started.
    #[arg(long, env = "KEEL_FORCE_NEW_CLUSTER", default_value_t = false)]
    pub force_new_cluster: bool,
    /// etcd's Go profiler endpoint. keel has no Go runtime to profile: accepted for
    /// compatibility with etcd command lines, with a warning in the log that it is ignored.
    #[arg(long, env = "KEEL_ENABLE_PPROF", default_value_t = false)]
    pub enable_pprof: bool,
}

/// Where and how the binary logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogOutput {
    /// Standard error (etcd's default).
    Stderr,
    /// Standard output.
    Stdout,
}

/// A flag value keel refuses, with the reason (printed before exiting with status 2).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A bootstrap flag is invalid (etcd's message).
    #[error("{0}")]
    Bootstrap(#[from] keel_membership::MembershipError),
    /// A listen URL is invalid.
    #[error("invalid {flag} {value:?}: {reason}")]
    Listen {
        /// The flag.
        flag: &'static str,
        /// Its value.
        value: String,
        /// What is wrong.
        reason: String,
    },
    /// Another flag is invalid.
    #[error("invalid --{flag}: {reason}")]
    Invalid {
        /// The flag.
        flag: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A TLS flag is invalid (missing pair, unreadable or non-PEM file).
    #[error("invalid --{flag}: {reason}")]
    Tls {
        /// The flag.
        flag: String,
        /// What is wrong.
        reason: String,
    },
}

/// Where to discover the initial cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiscoveryConfig {
    /// The discovery cluster's endpoints.
    pub endpoints: String,
    /// The token.
    pub token: keel_membership::ClusterToken,
}

/// Validated settings the server runs with.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// The member's bootstrap configuration (name, URLs, initial cluster, token, state). With
    /// discovery, the initial cluster is this member alone until discovery replaces it.
    pub bootstrap: BootstrapConfig,
    /// The bootstrap flags `bootstrap` was built from.
    pub bootstrap_flags: BootstrapFlags,
    /// Discovery instead of `--initial-cluster`.
    pub discovery: Option<DiscoveryConfig>,
    /// The data directory.
    pub data_dir: PathBuf,
    /// Addresses to serve clients on.
    pub client_addrs: Vec<SocketAddr>,
    /// Addresses to serve peers on.
    pub peer_addrs: Vec<SocketAddr>,
    /// More addresses to serve the HTTP endpoints (metrics, health) on.
    pub metrics_addrs: Vec<SocketAddr>,
    /// TLS of the client listeners (`https://` client URLs).
    pub client_tls: Option<crate::tls::TlsFiles>,
    /// TLS of the peer listeners and of the connections to other members.
    pub peer_tls: Option<crate::tls::TlsFiles>,
    /// `--peer-cert-allowed-cn`.
    pub peer_cert_allowed_cn: Option<String>,
    /// `--peer-source-address`.
    pub peer_source_address: Option<std::net::IpAddr>,
    /// Raft heartbeat interval.
    pub heartbeat_interval: Duration,
    /// Raft election timeout.
    pub election_timeout: Duration,
    /// Largest client request.
    pub max_request_bytes: usize,
    /// Most operations in a txn.
    pub max_txn_ops: usize,
    /// `--max-concurrent-streams`.
    pub max_concurrent_streams: u32,
    /// `--max-watchers-per-stream`.
    pub max_watchers_per_stream: usize,
    /// `--max-leases-per-keepalive-stream`.
    pub max_leases_per_keepalive_stream: usize,
    /// Automatic compaction, if enabled.
    pub auto_compaction: Option<crate::compactor::Retention>,
    /// The log filter.
    pub log_level: String,
    /// JSON log lines instead of text.
    pub log_json: bool,
    /// Where logs go.
    pub log_output: LogOutput,
    /// `--force-new-cluster` was given.
    pub force_new_cluster: bool,
    /// Requests slower than this are logged (`--warning-apply-duration`).
    pub slow_request: Duration,
    /// `--quota-backend-bytes` (0: the default).
    pub quota_backend_bytes: u64,
    /// `--auth-token-ttl` and `--bcrypt-cost`.
    pub auth: keel::AuthConfig,
    /// `--enable-pprof` was given (warned about, not served).
    pub pprof_requested: bool,
}

/// Resolve `http://host:port` listen URLs to socket addresses.
///
/// # Errors
/// [`ConfigError::Listen`] for another scheme, a path, no port, or a host that does not resolve.
pub fn listen_addrs(
    flag: &'static str,
    value: &str,
    tls: bool,
) -> Result<Vec<SocketAddr>, ConfigError> {
    let err = |reason: String| ConfigError::Listen {
        flag,
        value: value.to_owned(),
        reason,
    };
    let mut addrs = Vec::new();
    for url in value.split(',').map(str::trim).filter(|u| !u.is_empty()) {
        let (scheme, other) = if tls {
            ("https://", "http://")
        } else {
            ("http://", "https://")
        };
        let Some(rest) = url.strip_prefix(scheme) else {
            let reason = match (url.starts_with(other), tls) {
                (true, false) => "https:// needs a certificate and key (--cert-file/--key-file, or --peer-* for peer URLs)",
                (true, true) => "with a certificate configured, every URL of this side is https://",
                (false, _) => "only http:// and https:// URLs are supported",
            };
            return Err(err(format!("{url}: {reason}")));
        };
        let host_port = rest.trim_end_matches('/');
        if host_port.contains('/') {
            return Err(err(format!("{url}: a listen URL has no path")));
        }
        let resolved = host_port
            .to_socket_addrs()
            .map_err(|e| err(format!("{url}: {e}")))?;
        // One address per URL, IPv4 first: "localhost" means 127.0.0.1 as for etcd's default.
        let mut resolved: Vec<SocketAddr> = resolved.collect();
        resolved.sort_by_key(|a| !a.is_ipv4());
        match resolved.first() {
            Some(a) => addrs.push(*a),
            None => return Err(err(format!("{url}: host does not resolve"))),
        }
    }
    if addrs.is_empty() {
        return Err(err("no URL given".into()));
    }
    Ok(addrs)
}

impl Flags {
    /// The logging flags: (JSON lines, output).
    fn logging(&self) -> Result<(bool, LogOutput), ConfigError> {
        let log_output = match self.log_outputs.as_str() {
            "default" | "stderr" => LogOutput::Stderr,
            "stdout" => LogOutput::Stdout,
            other => {
                return Err(ConfigError::Invalid {
                    flag: "log-outputs",
                    reason: format!("{other:?}: expected default, stderr or stdout"),
                })
            }
        };
        if !matches!(self.logger.as_str(), "zap" | "capnslog") {
            return Err(ConfigError::Invalid {
                flag: "logger",
                reason: format!("{:?}: expected zap or capnslog", self.logger),
            });
        }
        let log_json = match self.log_format.as_str() {
            "text" => false,
            "json" => true,
            other => {
                return Err(ConfigError::Invalid {
                    flag: "log-format",
                    reason: format!("{other:?}: expected text or json"),
                })
            }
        };
        if !matches!(self.log_level.as_str(), "debug" | "info" | "warn" | "error") {
            return Err(ConfigError::Invalid {
                flag: "log-level",
                reason: format!("{:?}: expected debug, info, warn or error", self.log_level),
            });
        }
        Ok((log_json, log_output))
    }

    /// The bootstrap flags (`--initial-cluster` defaults to this member at its peer URLs).
    fn bootstrap_flags(&self) -> Result<BootstrapFlags, ConfigError> {
        let initial_cluster = match &self.initial_cluster {
            Some(c) => c.clone(),
            None => MemberUrl::parse_list(&self.initial_advertise_peer_urls)?
                .iter()
                .map(|u| format!("{}={u}", self.name))
                .collect::<Vec<_>>()
                .join(","),
        };
        Ok(BootstrapFlags {
            name: self.name.clone(),
            initial_cluster,
            initial_cluster_token: self.initial_cluster_token.clone(),
            initial_cluster_state: self.initial_cluster_state.clone(),
            initial_advertise_peer_urls: self.initial_advertise_peer_urls.clone(),
            advertise_client_urls: self.advertise_client_urls.clone(),
        })
    }

    /// The client and peer TLS files, read and checked.
    fn tls(&self) -> Result<(Option<TlsFiles>, Option<TlsFiles>), ConfigError> {
        let side = |flags: crate::tls::TlsFlags<'_>| {
            flags
                .load()
                .map_err(|(flag, reason)| ConfigError::Tls { flag, reason })
        };
        let client = side(crate::tls::TlsFlags {
            cert_file: self.cert_file.as_deref(),
            key_file: self.key_file.as_deref(),
            trusted_ca_file: self.trusted_ca_file.as_deref(),
            client_cert_auth: self.client_cert_auth,
            prefix: "",
        })?;
        let peer = side(crate::tls::TlsFlags {
            cert_file: self.peer_cert_file.as_deref(),
            key_file: self.peer_key_file.as_deref(),
            trusted_ca_file: self.peer_trusted_ca_file.as_deref(),
            client_cert_auth: self.peer_client_cert_auth,
            prefix: "peer-",
        })?;
        if !self.peer_cert_allowed_cn.is_empty() && !self.peer_client_cert_auth {
            return Err(ConfigError::Tls {
                flag: "peer-cert-allowed-cn".into(),
                reason: "needs --peer-client-cert-auth (members must present certificates)".into(),
            });
        }
        Ok((client, peer))
    }

    /// The numeric limits and timings.
    fn check_limits(&self) -> Result<(), ConfigError> {
        if self.heartbeat_interval == 0 {
            return Err(ConfigError::Invalid {
                flag: "heartbeat-interval",
                reason: "must be positive".into(),
            });
        }
        if self.election_timeout < 5 * self.heartbeat_interval {
            // etcd: "--election-timeout[...] should be 5 times greater than --heartbeat-interval"
            return Err(ConfigError::Invalid {
                flag: "election-timeout",
                reason: format!(
                    "{} ms should be at least 5 times --heartbeat-interval ({} ms)",
                    self.election_timeout, self.heartbeat_interval
                ),
            });
        }
        for (flag, value) in [
            ("max-txn-ops", self.max_txn_ops),
            (
                "max-concurrent-streams",
                self.max_concurrent_streams as usize,
            ),
            ("max-watchers-per-stream", self.max_watchers_per_stream),
            (
                "max-leases-per-keepalive-stream",
                self.max_leases_per_keepalive_stream,
            ),
        ] {
            if value == 0 {
                return Err(ConfigError::Invalid {
                    flag,
                    reason: "must be positive".into(),
                });
            }
        }
        if self.max_request_bytes == 0 || self.max_request_bytes > keel::limits::REQUEST_BYTES_MAX {
            return Err(ConfigError::Invalid {
                flag: "max-request-bytes",
                reason: format!(
                    "must be between 1 and {} (keel's replicated request limit)",
                    keel::limits::REQUEST_BYTES_MAX
                ),
            });
        }
        Ok(())
    }

    /// The discovery settings, checked against the bootstrap flags (etcd refuses both).
    fn discovery(&self) -> Result<Option<DiscoveryConfig>, ConfigError> {
        match (&self.discovery_endpoints, &self.discovery_token) {
            (None, None) => Ok(None),
            (Some(_), None) | (None, Some(_)) => Err(ConfigError::Invalid {
                flag: "discovery-token",
                reason: "--discovery-endpoints and --discovery-token go together".into(),
            }),
            (Some(_), Some(_)) if self.initial_cluster.is_some() => Err(ConfigError::Invalid {
                flag: "initial-cluster",
                reason: "multiple discovery or bootstrap flags are set: choose one of \
                         --initial-cluster or --discovery-endpoints"
                    .into(),
            }),
            (Some(_), Some(_)) if self.initial_cluster_state != "new" => {
                Err(ConfigError::Invalid {
                    flag: "initial-cluster-state",
                    reason: "discovery bootstraps a new cluster only".into(),
                })
            }
            (Some(endpoints), Some(token)) => Ok(Some(DiscoveryConfig {
                endpoints: endpoints.clone(),
                token: keel_membership::ClusterToken::new(token.trim())?,
            })),
        }
    }

    /// Validate the flags into a [`ServerConfig`] without touching the disk.
    ///
    /// # Errors
    /// [`ConfigError`] naming the flag and what is wrong.
    pub fn validate(&self) -> Result<ServerConfig, ConfigError> {
        let discovery = self.discovery()?;
        let bootstrap_flags = self.bootstrap_flags()?;
        let bootstrap = BootstrapConfig::from_flags(&bootstrap_flags)?;
        self.check_limits()?;
        let (log_json, log_output) = self.logging()?;
        let (client_tls, peer_tls) = self.tls()?;
        let data_dir = self
            .data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(format!("{}.etcd", self.name)));
        Ok(ServerConfig {
            bootstrap,
            bootstrap_flags,
            discovery,
            data_dir,
            client_addrs: listen_addrs(
                "--listen-client-urls",
                &self.listen_client_urls,
                client_tls.is_some(),
            )?,
            peer_addrs: listen_addrs(
                "--listen-peer-urls",
                &self.listen_peer_urls,
                peer_tls.is_some(),
            )?,
            client_tls,
            peer_tls,
            peer_cert_allowed_cn: Some(self.peer_cert_allowed_cn.clone())
                .filter(|cn| !cn.is_empty()),
            metrics_addrs: match self.listen_metrics_urls.trim() {
                "" => Vec::new(),
                urls => listen_addrs("--listen-metrics-urls", urls, false)?,
            },
            heartbeat_interval: Duration::from_millis(self.heartbeat_interval),
            election_timeout: Duration::from_millis(self.election_timeout),
            max_request_bytes: self.max_request_bytes,
            max_txn_ops: self.max_txn_ops,
            max_concurrent_streams: self.max_concurrent_streams,
            max_watchers_per_stream: self.max_watchers_per_stream,
            max_leases_per_keepalive_stream: self.max_leases_per_keepalive_stream,
            auto_compaction: crate::compactor::parse(
                &self.auto_compaction_mode,
                &self.auto_compaction_retention,
            )
            .map_err(|reason| ConfigError::Invalid {
                flag: "auto-compaction-retention",
                reason,
            })?,
            log_level: self.log_level.clone(),
            log_json,
            log_output,
            pprof_requested: self.enable_pprof,
            peer_source_address: self.peer_source_address,
            force_new_cluster: self.force_new_cluster,
            quota_backend_bytes: self.quota_backend_bytes,
            auth: self.auth_config()?,
            slow_request: go_duration(&self.warning_apply_duration).map_err(|reason| {
                ConfigError::Invalid {
                    flag: "warning-apply-duration",
                    reason,
                }
            })?,
        })
    }
}

impl Flags {
    /// `--auth-token`, `--auth-token-ttl`, `--bcrypt-cost`.
    fn auth_config(&self) -> Result<keel::AuthConfig, ConfigError> {
        let mut parts = self.auth_token.split(',');
        let jwt = match parts.next().unwrap_or_default() {
            "simple" => None,
            "jwt" => Some(jwt_config(parts).map_err(|reason| ConfigError::Invalid {
                flag: "auth-token",
                reason,
            })?),
            other => {
                return Err(ConfigError::Invalid {
                    flag: "auth-token",
                    reason: format!("{other:?} is neither simple nor jwt"),
                })
            }
        };
        if !(4..=31).contains(&self.bcrypt_cost) {
            return Err(ConfigError::Invalid {
                flag: "bcrypt-cost",
                reason: format!("{} is outside 4..=31", self.bcrypt_cost),
            });
        }
        if self.auth_token_ttl == 0 {
            return Err(ConfigError::Invalid {
                flag: "auth-token-ttl",
                reason: "must be at least 1 second".into(),
            });
        }
        Ok(keel::AuthConfig {
            token_ttl: Duration::from_secs(self.auth_token_ttl),
            bcrypt_cost: self.bcrypt_cost,
            jwt,
        })
    }
}

/// etcd's JWT options: `priv-key=`, `pub-key=`, `sign-method=`, `ttl=` (default 5m).
fn jwt_config<'a>(options: impl Iterator<Item = &'a str>) -> Result<keel::JwtConfig, String> {
    let (mut private, mut public, mut method, mut ttl) = (None, None, None, "5m");
    for option in options {
        let (key, value) = option
            .split_once('=')
            .ok_or_else(|| format!("jwt option {option:?} is not key=value"))?;
        match key {
            "priv-key" => private = Some(value),
            "pub-key" => public = Some(value),
            "sign-method" => method = Some(value),
            "ttl" => ttl = value,
            other => return Err(format!("unknown jwt option {other:?}")),
        }
    }
    let read = |path: &str| std::fs::read(path).map_err(|e| format!("{path}: {e}"));
    let private = read(private.ok_or("jwt needs priv-key=<file>")?)?;
    let public = public.map(read).transpose()?;
    let method = method.ok_or("jwt needs sign-method=<RS256|ES256|HS256|...>")?;
    let ttl = go_duration(ttl)?;
    keel::JwtConfig::new(method, private, public, ttl).map_err(|e| e.to_string())
}

/// A Go-style duration: one or more `<integer><unit>` with units `h`, `m`, `s`, `ms`, `us`,
/// `ns` (`1s500ms`), or `0`.
///
/// # Errors
/// What is wrong with `text`.
pub fn go_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("{text:?} is not a duration (e.g. 100ms, 1s, 1m30s)");
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        let after = &rest[digits..];
        let unit_len = after
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(after.len());
        let part = match &after[..unit_len] {
            "h" => Duration::from_secs(n.saturating_mul(3600)),
            "m" => Duration::from_secs(n.saturating_mul(60)),
            "s" => Duration::from_secs(n),
            "ms" => Duration::from_millis(n),
            "us" | "µs" => Duration::from_micros(n),
            "ns" => Duration::from_nanos(n),
            _ => return Err(bad()),
        };
        total = total.saturating_add(part);
        rest = &after[unit_len..];
    }
    if text.is_empty() {
        return Err(bad());
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_parse_and_bad_ones_are_refused() {
        assert_eq!(go_duration("100ms"), Ok(Duration::from_millis(100)));
        assert_eq!(go_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(go_duration("1s500ms"), Ok(Duration::from_millis(1500)));
        assert_eq!(go_duration("0"), Ok(Duration::ZERO));
        for bad in ["", "100", "ms", "1x", "1.5s", "-1s"] {
            assert!(go_duration(bad).is_err(), "{bad:?}");
        }
        let err = flags(&["--warning-apply-duration", "soon"])
            .validate()
            .unwrap_err();
        assert!(err.to_string().contains("warning-apply-duration"), "{err}");
        for (flag, value) in [
            ("--auth-token", "jwt,pub-key=a"),
            (
                "--auth-token",
                "jwt,priv-key=/nonexistent,sign-method=HS256",
            ),
            ("--auth-token", "jwt,sign-method=XX1,priv-key=/dev/null"),
            ("--auth-token", "oauth"),
            ("--bcrypt-cost", "3"),
            ("--auth-token-ttl", "0"),
        ] {
            let err = flags(&[flag, value]).validate().unwrap_err();
            assert!(err.to_string().contains(&flag[2..]), "{err}");
        }
    }

    fn flags(args: &[&str]) -> Flags {
        let mut all = vec!["keel"];
        all.extend_from_slice(args);
        Flags::try_parse_from(all).unwrap()
    }

    #[test]
    fn etcd_defaults_form_a_single_member_cluster() {
        let config = flags(&[]).validate().unwrap();
        assert_eq!(config.bootstrap.name().as_str(), "default");
        assert_eq!(config.data_dir, PathBuf::from("default.etcd"));
        assert_eq!(config.client_addrs[0].port(), 2379);
        assert!(config.client_addrs[0].ip().is_loopback());
        assert_eq!(config.peer_addrs[0].port(), 2380);
        assert_eq!(config.heartbeat_interval, Duration::from_millis(100));
        assert_eq!(config.election_timeout, Duration::from_millis(1000));
    }

    #[test]
    fn bad_flags_are_refused_with_the_flag_named() {
        let err = flags(&["--initial-cluster-state", "maybe"])
            .validate()
            .unwrap_err();
        assert!(err.to_string().contains("maybe"), "{err}");
        let err = flags(&[
            "--name",
            "infra9",
            "--initial-cluster",
            "infra0=http://127.0.0.1:2380",
        ])
        .validate()
        .unwrap_err();
        assert!(err.to_string().contains("infra9"), "{err}");
        let err = flags(&["--listen-client-urls", "https://127.0.0.1:2379"])
            .validate()
            .unwrap_err();
        assert!(err.to_string().contains("--listen-client-urls"), "{err}");
        let err = flags(&["--election-timeout", "200"])
            .validate()
            .unwrap_err();
        assert!(err.to_string().contains("--election-timeout"), "{err}");
        assert!(Flags::try_parse_from(["keel", "--heartbeat-interval", "x"]).is_err());
        let err = flags(&[
            "--auto-compaction-mode",
            "revision",
            "--auto-compaction-retention",
            "1h",
        ])
        .validate()
        .unwrap_err();
        assert!(
            err.to_string().contains("--auto-compaction-retention"),
            "{err}"
        );
        let err = flags(&["--log-outputs", "syslog"]).validate().unwrap_err();
        assert!(err.to_string().contains("--log-outputs"), "{err}");
    }

    #[test]
    fn the_seeds_etcd_command_line_is_accepted() {
        let config = flags(&[
            "--name",
            "etcd1",
            "--listen-client-urls",
            "http://0.0.0.0:2379",
            "--advertise-client-urls",
            "http://0.0.0.0:2379",
            "--listen-peer-urls",
            "http://0.0.0.0:2380",
            "--initial-advertise-peer-urls",
            "http://0.0.0.0:2380",
            "--initial-cluster-token",
            "etcd-cluster-1",
            "--initial-cluster-state",
            "new",
            "--enable-pprof",
            "--logger=zap",
            "--log-outputs=stderr",
        ])
        .validate()
        .unwrap();
        // etcd: without --initial-cluster, the cluster is this member at its peer URLs.
        assert_eq!(
            config.bootstrap.initial_cluster().to_string(),
            "etcd1=http://0.0.0.0:2380"
        );
        assert!(config.pprof_requested);
        assert_eq!(config.log_output, LogOutput::Stderr);
    }
}
