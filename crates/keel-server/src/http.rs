//! The HTTP endpoints etcd serves next to its gRPC API, on the client URLs (HTTP/1.1 and
//! HTTP/2 share the port) and on `--listen-metrics-urls`:
//!
//! - `GET /metrics`: the node's registry ([`keel::Metrics`]) in the OpenMetrics text format.
//! - `GET /health`: `{"health":"true","reason":""}` (200) when the member has a leader and a
//!   linearizable read succeeds; `{"health":"false","reason":...}` (503) otherwise.
//!   `?serializable=true` reads locally instead (etcd 3.5's flag: healthy without quorum).
//! - `GET /livez`: `ok` (200) while the member serves local reads (check `serializable_read`).
//! - `GET /readyz`: `ok` (200) when the checks `leader`, `serializable_read` and
//!   `linearizable_read` pass. Both take `?verbose` (one `[+]name ok` line per check) and
//!   `?exclude=<check>` (repeatable); an unknown check name is a 400.
//!
//! Failures answer 503 with one `[-]name failed: reason` line per failed check.

use axum::extract::{RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use keel::{Node, ReadConsistency};
use keel_storage::mvcc::RangeRequest;
use keel_types::KeyRange;
use std::sync::Arc;

/// The key the read checks read (as etcd's health check, it need not exist).
const HEALTH_KEY: &[u8] = b"health";

/// The content type of [`keel::Metrics`]' rendering.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The HTTP endpoints on `node`, as an axum router (merge it with the gRPC routes, or serve it
/// alone on the metrics URLs).
///
/// # Examples
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use std::sync::Arc;
/// let node = Arc::new(keel::NodeBuilder::new(keel_types::MemberId::new(1)).start().await?);
/// let grpc = keel_server::api::routes(Arc::clone(&node), Default::default());
/// let both = keel_server::http::with_grpc(grpc, node);
/// tonic::transport::Server::builder()
///     .accept_http1(true)
///     .add_routes(tonic::service::Routes::from(both))
///     .serve("127.0.0.1:2379".parse()?)
///     .await?;
/// # Ok(())
/// # }
/// ```
pub fn router(node: Arc<Node>) -> axum::Router {
    axum::Router::new()
        .route("/metrics", get(metrics))
        .route("/health", get(health))
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .with_state(node)
}

/// The gRPC `routes` and the HTTP endpoints on one router (the client port). Unknown paths
/// answer gRPC's `Unimplemented` to gRPC requests and 404 to plain HTTP ones.
pub fn with_grpc(routes: tonic::service::Routes, node: Arc<Node>) -> axum::Router {
    routes
        .into_axum_router()
        .merge(router(node))
        .fallback(unknown_path)
}

async fn unknown_path(headers: axum::http::HeaderMap) -> Response {
    let grpc = (headers.get(header::CONTENT_TYPE))
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"));
    if grpc {
        tonic::Status::unimplemented("")
            .into_http::<axum::body::Body>()
            .into_response()
    } else {
        (StatusCode::NOT_FOUND, "404 page not found\n").into_response()
    }
}

async fn metrics(State(node): State<Arc<Node>>) -> Response {
    match node.metrics_text() {
        Ok(text) => ([(header::CONTENT_TYPE, OPENMETRICS_CONTENT_TYPE)], text).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// One named check of `/livez` and `/readyz`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Check {
    Leader,
    SerializableRead,
    LinearizableRead,
}

impl Check {
    const ALL: [Check; 3] = [
        Check::Leader,
        Check::SerializableRead,
        Check::LinearizableRead,
    ];

    fn name(self) -> &'static str {
        match self {
            Check::Leader => "leader",
            Check::SerializableRead => "serializable_read",
            Check::LinearizableRead => "linearizable_read",
        }
    }

    /// `Ok(())` when the check passes, the reason otherwise.
    async fn run(self, node: &Node) -> Result<(), String> {
        match self {
            Check::Leader => match node.status().await {
                Ok(s) if s.leader.is_some() => Ok(()),
                Ok(_) => Err("RAFT NO LEADER".into()),
                Err(e) => Err(e.to_string()),
            },
            Check::SerializableRead => read(node, ReadConsistency::Serializable).await,
            Check::LinearizableRead => read(node, ReadConsistency::Linearizable).await,
        }
    }
}

async fn read(node: &Node, consistency: ReadConsistency) -> Result<(), String> {
    let request = RangeRequest::new(KeyRange::key(HEALTH_KEY));
    node.range(&request, consistency)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

async fn health(State(node): State<Arc<Node>>, RawQuery(query): RawQuery) -> Response {
    let serializable =
        query_pairs(query.as_deref()).any(|(k, v)| k == "serializable" && v == "true");
    let checks: &[Check] = if serializable {
        &[Check::SerializableRead]
    } else {
        &[Check::Leader, Check::LinearizableRead]
    };
    let mut reason = None;
    for check in checks {
        if let Err(r) = check.run(&node).await {
            reason = Some(r);
            break;
        }
    }
    let body = serde_json::json!({
        "health": if reason.is_none() { "true" } else { "false" },
        "reason": reason.as_deref().unwrap_or(""),
    });
    let status = if reason.is_none() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

async fn livez(State(node): State<Arc<Node>>, RawQuery(query): RawQuery) -> Response {
    probe(&node, "livez", &[Check::SerializableRead], query.as_deref()).await
}

async fn readyz(State(node): State<Arc<Node>>, RawQuery(query): RawQuery) -> Response {
    probe(&node, "readyz", &Check::ALL, query.as_deref()).await
}

/// Run `checks` minus the excluded ones and answer as etcd's (and Kubernetes') probes do.
async fn probe(node: &Node, probe: &str, checks: &[Check], query: Option<&str>) -> Response {
    let mut verbose = false;
    let mut excluded = Vec::new();
    for (key, value) in query_pairs(query) {
        match key {
            "verbose" => verbose = true,
            "exclude" => match checks.iter().find(|c| c.name() == value) {
                Some(c) => excluded.push(*c),
                None => {
                    let msg = format!("{probe}: unknown check {value:?} in exclude\n");
                    return (StatusCode::BAD_REQUEST, msg).into_response();
                }
            },
            _ => {}
        }
    }
    let mut lines = Vec::new();
    let mut failed = false;
    for check in checks {
        if excluded.contains(check) {
            lines.push(format!("[+]{} excluded: ok", check.name()));
            continue;
        }
        match check.run(node).await {
            Ok(()) => lines.push(format!("[+]{} ok", check.name())),
            Err(reason) => {
                failed = true;
                lines.push(format!("[-]{} failed: {reason}", check.name()));
            }
        }
    }
    if failed {
        lines.push(format!("{probe} check failed"));
        return (StatusCode::SERVICE_UNAVAILABLE, lines.join("\n") + "\n").into_response();
    }
    if verbose {
        lines.push("ok".into());
        return (StatusCode::OK, lines.join("\n") + "\n").into_response();
    }
    (StatusCode::OK, "ok\n").into_response()
}

/// `key=value` pairs of a query string (a bare `key` has an empty value); no decoding is
/// needed for the names these endpoints take.
fn query_pairs(query: Option<&str>) -> impl Iterator<Item = (&str, &str)> {
    query
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| p.split_once('=').unwrap_or((p, "")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_pairs_split_keys_and_values() {
        let pairs: Vec<_> = query_pairs(Some("verbose&exclude=leader&exclude=x=y")).collect();
        assert_eq!(
            pairs,
            [("verbose", ""), ("exclude", "leader"), ("exclude", "x=y")]
        );
        assert_eq!(query_pairs(None).count(), 0);
    }
}
