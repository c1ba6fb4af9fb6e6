//! The node's metrics, in one Prometheus registry the host program can extend and scrape.
//!
//! Names follow etcd's where etcd has the metric (dashboards built on etcd keep working); the
//! registry renders the OpenMetrics text format (`application/openmetrics-text`), which
//! Prometheus scrapes. Counters are rendered with the `_total` suffix, durations in seconds.
//!
//! | metric | kind | moved by |
//! |--------|------|----------|
//! | `etcd_server_has_leader` | gauge | refreshed at each render |
//! | `etcd_server_leader_changes_seen_total` | counter | every new leader this member sees |
//! | `etcd_server_proposals_committed_total`, `..._applied_total` | gauge | raft indexes, at render |
//! | `etcd_server_proposals_pending` | gauge | proposals this member waits on |
//! | `etcd_server_proposals_failed_total` | counter | proposals that ended in an error |
//! | `etcd_server_slow_apply_total` | counter | applies (an entry, or a run applied together) over 100 ms |
//! | `etcd_mvcc_db_total_size_in_bytes` | gauge | the engine's size, at render |
//! | `etcd_mvcc_db_total_size_in_use_in_bytes` | gauge | the engine's live-data estimate, at render |
//! | `etcd_disk_wal_fsync_duration_seconds` | histogram | each log fsync (group commit) |
//! | `etcd_disk_backend_commit_duration_seconds` | histogram | each engine write of applied entries (one per run of KV entries applied together) |
//! | `etcd_mvcc_{put,delete,txn,range}_total` | counter | applied puts/deletes/txns, served ranges |
//! | `etcd_debugging_mvcc_watch_stream_total` | gauge | moved by a server ([`Metrics::watch_streams`]) |
//! | `etcd_debugging_mvcc_watcher_total` | gauge | live [`crate::WatchStream`]s, at render |
//! | `etcd_debugging_lease_{granted,revoked,renewed}_total` | counter | applied lease requests |
//! | `keel_log_sync_batch_entries` | histogram | log writes completed by one fsync |
//!
//! Not counted: revocations by expiry in `lease_revoked_total` (applied as one internal
//! batch), puts and deletes inside txns in `put_total`/`delete_total` (counted as the txn).

use parking_lot::Mutex;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Metric, Registry, Unit};
use std::sync::Arc;
use std::time::Duration;

/// An apply slower than this counts as slow (etcd's apply warning threshold).
pub const SLOW_APPLY: Duration = Duration::from_millis(100);

/// A client request slower than this is logged by default (etcd's `--warning-apply-duration`).
pub const SLOW_REQUEST: Duration = Duration::from_millis(100);

/// The node's metrics and the registry that renders them.
///
/// # Examples
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use keel::NodeBuilder;
/// use keel_types::MemberId;
/// use prometheus_client::metrics::counter::Counter;
/// let node = NodeBuilder::new(MemberId::new(1)).start().await?;
/// // The host adds its own metrics to the node's registry ...
/// let requests: Counter = Counter::default();
/// node.metrics().register("my_service_requests", "Requests served", requests.clone());
/// requests.inc();
/// node.put(&b"k"[..], &b"v"[..]).await?;
/// // ... and one scrape renders both.
/// let text = node.metrics_text()?;
/// assert!(text.contains("my_service_requests_total 1"));
/// assert!(text.contains("etcd_mvcc_put_total 1"));
/// assert!(text.contains("etcd_server_has_leader 1"));
/// node.shutdown().await;
/// # Ok::<(), keel::NodeError>(())
/// # }).unwrap();
/// ```
#[derive(Debug)]
pub struct Metrics {
    registry: Mutex<Registry>,
    clock: Arc<dyn keel_types::Clock>,
    /// Requests slower than this are logged.
    slow_request: Duration,
    pub(crate) has_leader: Gauge,
    pub(crate) leader_changes: Counter,
    pub(crate) proposals_committed: Gauge,
    pub(crate) proposals_applied: Gauge,
    pub(crate) proposals_pending: Gauge,
    pub(crate) proposals_failed: Counter,
    pub(crate) slow_apply: Counter,
    pub(crate) db_total_size: Gauge,
    pub(crate) db_in_use_size: Gauge,
    pub(crate) wal_fsync: Histogram,
    pub(crate) backend_commit: Histogram,
    pub(crate) mvcc_put: Counter,
    pub(crate) mvcc_delete: Counter,
    pub(crate) mvcc_txn: Counter,
    pub(crate) mvcc_range: Counter,
    pub(crate) watchers: Gauge,
    watch_streams: Gauge,
    pub(crate) lease_granted: Counter,
    pub(crate) lease_revoked: Counter,
    pub(crate) lease_renewed: Counter,
    pub(crate) log_sync_batch: Histogram,
}

/// etcd's disk duration buckets: 1 ms doubling to about 8 s.
fn disk_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 14))
}

impl Metrics {
    /// Fresh metrics; durations are measured with `clock`.
    pub(crate) fn new(clock: Arc<dyn keel_types::Clock>, slow_request: Duration) -> Self {
        let m = Metrics {
            registry: Mutex::new(Registry::default()),
            clock,
            slow_request,
            has_leader: Gauge::default(),
            leader_changes: Counter::default(),
            proposals_committed: Gauge::default(),
            proposals_applied: Gauge::default(),
            proposals_pending: Gauge::default(),
            proposals_failed: Counter::default(),
            slow_apply: Counter::default(),
            db_total_size: Gauge::default(),
            db_in_use_size: Gauge::default(),
            wal_fsync: disk_buckets(),
            backend_commit: disk_buckets(),
            mvcc_put: Counter::default(),
            mvcc_delete: Counter::default(),
            mvcc_txn: Counter::default(),
            mvcc_range: Counter::default(),
            watchers: Gauge::default(),
            watch_streams: Gauge::default(),
            lease_granted: Counter::default(),
            lease_revoked: Counter::default(),
            lease_renewed: Counter::default(),
            log_sync_batch: Histogram::new(exponential_buckets(1.0, 2.0, 12)),
        };
        m.register_own();
        m
    }

    fn register_own(&self) {
        let mut r = self.registry.lock();
        for (name, help, g) in self.gauges() {
            r.register(name, help, g.clone());
        }
        for (name, help, c) in self.counters() {
            r.register(name, help, c.clone());
        }
        let durations = [
            (
                "etcd_disk_wal_fsync_duration",
                "Log fsync latency.",
                &self.wal_fsync,
            ),
            (
                "etcd_disk_backend_commit_duration",
                "Applied-entry batch commit latency.",
                &self.backend_commit,
            ),
        ];
        for (name, help, h) in durations {
            r.register_with_unit(name, help, Unit::Seconds, h.clone());
        }
        r.register(
            "keel_log_sync_batch_entries",
            "Log writes completed by one fsync (group commit).",
            self.log_sync_batch.clone(),
        );
    }

    fn gauges(&self) -> [(&'static str, &'static str, &Gauge); 8] {
        [
            (
                "etcd_server_has_leader",
                "Whether a leader exists (1) or not (0).",
                &self.has_leader,
            ),
            (
                "etcd_server_proposals_committed_total",
                "The committed raft index.",
                &self.proposals_committed,
            ),
            (
                "etcd_server_proposals_applied_total",
                "The applied raft index.",
                &self.proposals_applied,
            ),
            (
                "etcd_server_proposals_pending",
                "Proposals this member waits on.",
                &self.proposals_pending,
            ),
            (
                "etcd_mvcc_db_total_size_in_bytes",
                "Bytes the storage engine uses.",
                &self.db_total_size,
            ),
            (
                "etcd_debugging_mvcc_watcher_total",
                "Live watch streams on the node.",
                &self.watchers,
            ),
            (
                "etcd_mvcc_db_total_size_in_use_in_bytes",
                "Bytes of live data (the size after a full compaction).",
                &self.db_in_use_size,
            ),
            (
                "etcd_debugging_mvcc_watch_stream_total",
                "Client watch streams a server serves.",
                &self.watch_streams,
            ),
        ]
    }

    fn counters(&self) -> [(&'static str, &'static str, &Counter); 10] {
        [
            (
                "etcd_server_leader_changes_seen",
                "Leader changes this member has seen.",
                &self.leader_changes,
            ),
            (
                "etcd_server_proposals_failed",
                "Proposals that ended in an error.",
                &self.proposals_failed,
            ),
            (
                "etcd_server_slow_apply",
                "Entries whose apply took over 100 ms.",
                &self.slow_apply,
            ),
            ("etcd_mvcc_put", "Puts applied.", &self.mvcc_put),
            (
                "etcd_mvcc_delete",
                "Delete ranges applied.",
                &self.mvcc_delete,
            ),
            ("etcd_mvcc_txn", "Transactions applied.", &self.mvcc_txn),
            ("etcd_mvcc_range", "Ranges served.", &self.mvcc_range),
            (
                "etcd_debugging_lease_granted",
                "Leases granted.",
                &self.lease_granted,
            ),
            (
                "etcd_debugging_lease_revoked",
                "Leases revoked by request.",
                &self.lease_revoked,
            ),
            (
                "etcd_debugging_lease_renewed",
                "Lease renewals applied.",
                &self.lease_renewed,
            ),
        ]
    }

    /// Add a metric of the host program (or of a server built on the node) to the registry:
    /// it is rendered with the node's own. Counters get the `_total` suffix when rendered.
    pub fn register(&self, name: &str, help: &str, metric: impl Metric) {
        self.registry.lock().register(name, help, metric);
    }

    /// The registry rendered in the OpenMetrics text format (as it stands; see
    /// [`crate::Node::metrics_text`] for a render with the scrape-time gauges refreshed).
    ///
    /// # Errors
    /// A metric failed to render (a host metric's encoder).
    pub fn render(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        encode(&mut out, &self.registry.lock())?;
        Ok(out)
    }

    /// The gauge of client watch streams (etcd's `etcd_debugging_mvcc_watch_stream_total`):
    /// a server built on the node moves it, one per client stream carrying any number of
    /// watchers (the node's own [`crate::WatchStream`]s are the watchers).
    pub fn watch_streams(&self) -> Gauge {
        self.watch_streams.clone()
    }

    /// The injected clock's reading, for durations.
    pub(crate) fn now(&self) -> Duration {
        self.clock.now()
    }

    /// Log a request that took longer than the slow-request threshold since `start` (a
    /// [`Metrics::now`] reading).
    pub(crate) fn log_if_slow(&self, what: &'static str, start: Duration) {
        let took = self.now().saturating_sub(start);
        if took > self.slow_request {
            tracing::warn!(
                request = what,
                took_ms = took.as_millis() as u64,
                threshold_ms = self.slow_request.as_millis() as u64,
                "request took too long"
            );
        }
    }

    /// Record one duration since `start` (a [`Metrics::now`] reading) into `histogram`.
    pub(crate) fn observe_since(&self, histogram: &Histogram, start: Duration) {
        histogram.observe(self.now().saturating_sub(start).as_secs_f64());
    }
}

/// Counts one pending proposal for as long as it lives.
pub(crate) struct PendingProposal<'a>(&'a Metrics);

impl<'a> PendingProposal<'a> {
    pub(crate) fn new(metrics: &'a Metrics) -> Self {
        metrics.proposals_pending.inc();
        PendingProposal(metrics)
    }
}

impl Drop for PendingProposal<'_> {
    fn drop(&mut self) {
        self.0.proposals_pending.dec();
    }
}

/// Saturating conversion for gauges.
pub(crate) fn gauge_value(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}
