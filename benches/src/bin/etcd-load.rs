//! `etcd-load`: a load tool for any etcd v3 endpoint (keel or etcd), built on the Rust
//! `etcd-client` crate. Runs one workload with N concurrent clients for a fixed number of
//! operations and prints one line of figures (ops/s, p50/p99/max latency) as
//! `key=value` pairs, so that `benches/load/compare.sh` can put keel and etcd side by side.
//!
//! Workloads: `put`, `range-l` (linearizable get), `range-s` (serializable get), `txn`
//! (compare-and-swap), `watch` (events delivered to W watchers per put), `keepalive`
//! (lease renewals).

use clap::Parser;
use etcd_client::{Client, Compare, CompareOp, GetOptions, Txn, TxnOp};
use keel_types::{Clock, SystemClock};
use std::sync::Arc;
use std::time::Duration;

#[derive(Parser, Debug, Clone)]
#[command(about = "load an etcd v3 endpoint")]
struct Args {
    /// Comma-separated endpoints (host:port).
    #[arg(long, default_value = "127.0.0.1:2379")]
    endpoints: String,
    /// put, range-l, range-s, txn, watch, keepalive.
    #[arg(long)]
    workload: String,
    /// Concurrent clients (each its own connection).
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// Operations in total (across clients).
    #[arg(long, default_value_t = 20_000)]
    total: usize,
    /// Distinct keys.
    #[arg(long, default_value_t = 1000)]
    keys: usize,
    /// Value size in bytes.
    #[arg(long, default_value_t = 256)]
    value_bytes: usize,
    /// Watchers (watch workload).
    #[arg(long, default_value_t = 100)]
    watchers: usize,
    /// Label printed with the figures.
    #[arg(long, default_value = "target")]
    label: String,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn key(i: usize) -> String {
    format!("load/{i:08}")
}

async fn connect(args: &Args) -> Result<Client, BoxError> {
    let eps: Vec<&str> = args.endpoints.split(',').collect();
    Ok(Client::connect(eps, None).await?)
}

/// One client's share of operations; returns the latency of each.
async fn run_client(
    args: Arc<Args>,
    clock: Arc<SystemClock>,
    index: usize,
    ops: usize,
) -> Result<Vec<Duration>, BoxError> {
    let mut client = connect(&args).await?;
    let value = vec![b'v'; args.value_bytes];
    let lease = if args.workload == "keepalive" {
        Some(client.lease_grant(600, None).await?.id())
    } else {
        None
    };
    let mut keeper = match lease {
        Some(id) => Some(client.lease_keep_alive(id).await?),
        None => None,
    };
    let mut latencies = Vec::with_capacity(ops);
    for n in 0..ops {
        let k = key((index * 7919 + n) % args.keys);
        let start = clock.now();
        match args.workload.as_str() {
            "put" | "watch" => {
                client.put(k, value.clone(), None).await?;
            }
            "range-l" => {
                client.get(k, None).await?;
            }
            "range-s" => {
                client
                    .get(k, Some(GetOptions::new().with_serializable()))
                    .await?;
            }
            "txn" => {
                let txn = Txn::new()
                    .when([Compare::version(k.clone(), CompareOp::Greater, 0)])
                    .and_then([TxnOp::put(k.clone(), value.clone(), None)])
                    .or_else([TxnOp::put(k, value.clone(), None)]);
                client.txn(txn).await?;
            }
            "keepalive" => {
                if let Some((keeper, stream)) = keeper.as_mut() {
                    keeper.keep_alive().await?;
                    stream.message().await?;
                }
            }
            other => return Err(format!("unknown workload {other}").into()),
        }
        latencies.push(clock.now().saturating_sub(start));
    }
    Ok(latencies)
}

/// Watchers on the load prefix, each counting events until it has seen `expected` (or the
/// stream goes quiet for 10 s); each task returns its count.
async fn start_watchers(
    args: &Args,
    expected: u64,
) -> Result<Vec<tokio::task::JoinHandle<u64>>, BoxError> {
    let mut client = connect(args).await?;
    let mut tasks = Vec::new();
    for _ in 0..args.watchers {
        let mut stream = client
            .watch(
                "load/",
                Some(etcd_client::WatchOptions::new().with_prefix()),
            )
            .await?;
        tasks.push(tokio::spawn(async move {
            let mut events = 0u64;
            while events < expected {
                match tokio::time::timeout(Duration::from_secs(10), stream.message()).await {
                    Ok(Ok(Some(resp))) => events += resp.events().len() as u64,
                    _ => break,
                }
            }
            events
        }));
    }
    Ok(tasks)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let args = Arc::new(Args::parse());
    let clock = Arc::new(SystemClock::new());
    // Preload the keys so reads and txns find them.
    if args.workload != "put" && args.workload != "watch" {
        let mut c = connect(&args).await?;
        for i in 0..args.keys {
            c.put(key(i), vec![b'v'; args.value_bytes], None).await?;
        }
    }
    let per_client = args.total / args.clients.max(1);
    let watch = if args.workload == "watch" {
        Some(start_watchers(&args, (per_client * args.clients) as u64).await?)
    } else {
        None
    };
    let start = clock.now();
    let mut tasks = Vec::new();
    for i in 0..args.clients {
        tasks.push(tokio::spawn(run_client(
            Arc::clone(&args),
            Arc::clone(&clock),
            i,
            per_client,
        )));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    let elapsed = clock.now().saturating_sub(start);
    all.sort();
    let ops = all.len();
    let mut extra = String::new();
    if let Some(tasks) = watch {
        let mut events = 0;
        for t in tasks {
            events += t.await?;
        }
        let total = clock.now().saturating_sub(start);
        extra = format!(
            " watch_events={events} events_per_s={:.0}",
            events as f64 / total.as_secs_f64()
        );
    }
    println!(
        "label={} workload={} clients={} ops={ops} secs={:.3} ops_per_s={:.0} p50_ms={:.3} p99_ms={:.3} max_ms={:.3}{extra}",
        args.label,
        args.workload,
        args.clients,
        elapsed.as_secs_f64(),
        ops as f64 / elapsed.as_secs_f64(),
        percentile(&all, 0.50).as_secs_f64() * 1e3,
        percentile(&all, 0.99).as_secs_f64() * 1e3,
        all.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
    );
    Ok(())
}
