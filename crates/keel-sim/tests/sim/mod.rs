//! One seed of the in-process battery: the schedule, the run, and the checks.
#![allow(dead_code, reason = "shared by two test binaries, each using a part")]

pub mod cluster;
pub mod workload;

use cluster::{heal, inject, on_any_member, Cluster, Fault, Rng};
use futures::StreamExt;
use keel::{runtime, Node};
use keel_sim::{
    check, check_acknowledged, check_lease, check_watch, expiry_deadline, settle_unanswered_writes,
    Call, Input, LeaseHistory, Op, Output, Verdict, WatchEvent,
};
use keel_storage::watch::WatchSpec;
use keel_types::{KeyRange, LeaseId, Revision};
use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use workload::{events, kv_client, lease_client, read_key, watcher, ClientLog, PREFIX};

/// After the last fault is healed, a leader serves a write within this bound (the liveness
/// promise the battery checks).
const RECOVERY_BOUND: Duration = Duration::from_secs(10);
/// Slack past the TTL within which an unrenewed lease is gone once the cluster is whole:
/// the expiry tick, one election and the revoke's commit, with room for a loaded machine.
const LEASE_SLACK: Duration = Duration::from_secs(3);
const KV_CLIENTS: u32 = 3;

/// What one seed did.
pub struct Report {
    size: u64,
    faults: Vec<Fault>,
    ops: usize,
    unknown: usize,
    events: usize,
    segments: usize,
    lease_end: &'static str,
    recovery_ms: u128,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} members, faults {:?}, {} ops ({} unanswered), {} watch events in {} segments, \
             lease {}, served {} ms after heal",
            self.size,
            self.faults,
            self.ops,
            self.unknown,
            self.events,
            self.segments,
            self.lease_end,
            self.recovery_ms
        )
    }
}

/// Sums over seeds.
#[derive(Default)]
pub struct Totals {
    seeds: usize,
    ops: usize,
    unknown: usize,
    events: usize,
    faults: BTreeMap<String, usize>,
    worst_recovery_ms: u128,
}

impl Totals {
    pub fn add(&mut self, r: &Report) {
        self.seeds += 1;
        self.ops += r.ops;
        self.unknown += r.unknown;
        self.events += r.events;
        for f in &r.faults {
            *self.faults.entry(format!("{f:?}")).or_default() += 1;
        }
        self.worst_recovery_ms = self.worst_recovery_ms.max(r.recovery_ms);
    }
}

impl fmt::Display for Totals {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} seeds, {} ops checked ({} unanswered), {} watch events checked, faults {:?}, \
             slowest recovery {} ms",
            self.seeds, self.ops, self.unknown, self.events, self.faults, self.worst_recovery_ms
        )
    }
}

/// Turn each of keel's planted bugs (`keel::planted`) on in turn and run seeds 1..=`max`
/// with `run` until one fails. For each bug: its name, and the seed that caught it with the
/// first line of the failure (`None`: not caught in `max` seeds). Every switch is off again
/// when this returns.
pub fn hunt_planted_bugs(
    max: u64,
    mut run: impl FnMut(u64) -> Result<Report, String>,
) -> Vec<(&'static str, Option<(u64, String)>)> {
    let mut found = Vec::new();
    for (name, switch) in keel::planted::all() {
        switch.store(true, Ordering::Relaxed);
        let caught = (1..=max).find_map(|seed| {
            run(seed)
                .err()
                .map(|failure| (seed, failure.lines().next().unwrap_or("").to_string()))
        });
        switch.store(false, Ordering::Relaxed);
        found.push((name, caught));
    }
    found
}

/// Print what [`hunt_planted_bugs`] found; the names of the bugs it missed.
pub fn report_planted(
    found: &[(&'static str, Option<(u64, String)>)],
    max: u64,
) -> Vec<&'static str> {
    let mut missed = Vec::new();
    for (name, caught) in found {
        match caught {
            Some((seed, what)) => println!("{name}: caught at seed {seed} of {max}: {what}"),
            None => {
                println!("{name}: not caught in {max} seeds");
                missed.push(*name);
            }
        }
    }
    missed
}

/// Run seed `seed` on in-memory engines and check everything; the failure says what broke
/// (with the fault timeline). The cluster is stopped either way.
pub async fn run_seed(seed: u64) -> Result<Report, String> {
    run_seed_on(seed, cluster::in_memory()).await
}

/// [`run_seed`] with the members' data on backings made by `backings`.
pub async fn run_seed_on(seed: u64, backings: cluster::Backings) -> Result<Report, String> {
    let mut rng = Rng::new(seed);
    let size = if rng.below(4) == 0 { 5 } else { 3 };
    let cluster = Cluster::start(size, backings).await?;
    let stop = Arc::new(AtomicBool::new(false));
    let outcome = run(&cluster, &mut rng, seed, size, &stop).await;
    stop.store(true, Ordering::Relaxed);
    cluster.shutdown().await;
    outcome.map_err(|e| format!("{e}\nfaults:\n{}", cluster.timeline()))
}

async fn run(
    cluster: &Arc<Cluster>,
    rng: &mut Rng,
    seed: u64,
    size: u64,
    stop: &Arc<AtomicBool>,
) -> Result<Report, String> {
    let clients: Vec<_> = (0..KV_CLIENTS)
        .map(|c| runtime::spawn(kv_client(cluster.clone(), c, seed, stop.clone())))
        .collect();
    let watch = runtime::spawn(watcher(cluster.clone(), seed, stop.clone()));
    let lease = runtime::spawn(lease_client(cluster.clone(), seed, stop.clone()));

    let mut faults = Vec::new();
    // The event log up to the last compaction (collected before compacting it away).
    let mut compacted = Compacted::default();
    for serial in 0..3 + rng.below(3) {
        let fault = Fault::pick(rng);
        faults.push(fault);
        cluster.note(format!("{fault:?} begins"));
        if fault == Fault::Compact {
            compact_under_load(cluster, rng, &mut compacted).await?;
        } else {
            inject(cluster, fault, rng, serial).await?;
        }
        runtime::sleep(Duration::from_millis(300 + rng.below(600))).await;
        heal(cluster).await?;
        cluster.note("healed".to_string());
    }
    let healed = cluster.now();
    let (_, served) = write_within(cluster, rng, RECOVERY_BOUND).await?;
    let recovery_ms = u128::from(served.saturating_sub(healed) / 1000);

    stop.store(true, Ordering::Relaxed);
    let mut logs = Vec::new();
    for c in clients {
        logs.push(c.await.map_err(|e| format!("client task: {e}"))?);
    }
    let watched = watch.await.map_err(|e| format!("watch task: {e}"))?;
    let (mut lease_history, lease_id) = lease.await.map_err(|e| format!("lease task: {e}"))?;
    let lease_end = end_lease(cluster, rng, &mut lease_history, lease_id).await?;

    let (last, _) = write_within(cluster, rng, RECOVERY_BOUND).await?;
    let mut reference = compacted.log;
    reference.extend(agreed_log(cluster, last, compacted.upto + 1).await?);
    check_histories(&logs, &watched.segments, &reference, &lease_history)?;
    check_compaction(cluster, rng, last, compacted.upto).await?;

    let ops: Vec<_> = logs.iter().flat_map(|l| l.ops.iter()).collect();
    Ok(Report {
        size,
        faults,
        ops: ops.len(),
        unknown: ops.iter().filter(|o| o.ret.is_none()).count(),
        events: watched
            .segments
            .iter()
            .flat_map(|s| s.1.iter())
            .map(Vec::len)
            .sum(),
        segments: watched.segments.len(),
        lease_end,
        recovery_ms,
    })
}

/// Put a marker key (under the watched prefix, so a watch reaches its revision) through any
/// member, retrying until `bound`: its revision and the time it was acknowledged.
async fn write_within(
    cluster: &Cluster,
    rng: &mut Rng,
    bound: Duration,
) -> Result<(Revision, u64), String> {
    let put = on_any_member(cluster, rng, bound, |node| async move {
        node.put("sim/marker", "m").await
    });
    let r = put
        .await
        .ok_or_else(|| format!("no write served within {bound:?} after the faults healed"))?;
    Ok((r.header.revision, cluster.now()))
}

/// Wait until every member has applied `revision`; check they hash the keyspace alike and
/// hold the same event log under the watched prefix; return that log.
async fn agreed_log(
    cluster: &Cluster,
    revision: Revision,
    from: u64,
) -> Result<Vec<WatchEvent>, String> {
    let nodes = cluster.live();
    let mut hashes = Vec::new();
    let mut logs: Vec<Vec<WatchEvent>> = Vec::new();
    for node in &nodes {
        applied(node, revision).await?;
        let hash = node
            .hash_kv(Some(revision))
            .await
            .map_err(|e| format!("hash_kv on {}: {e}", node.id()))?;
        hashes.push((node.id(), hash.body.hash));
        logs.push(full_log(node, from, revision).await?);
    }
    if hashes.iter().any(|h| h.1 != hashes[0].1) {
        return Err(format!(
            "replicas disagree at revision {revision}: {hashes:?}"
        ));
    }
    if let Some(i) = logs.iter().position(|l| *l != logs[0]) {
        return Err(format!(
            "members {} and {} hold different event logs",
            nodes[0].id(),
            nodes[i].id()
        ));
    }
    Ok(logs.swap_remove(0))
}

async fn applied(node: &Node, revision: Revision) -> Result<(), String> {
    let work = async {
        while node
            .current_header()
            .map_or(true, |h| h.revision < revision)
        {
            runtime::sleep(Duration::from_millis(10)).await;
        }
    };
    runtime::timeout(RECOVERY_BOUND, work)
        .await
        .ok_or_else(|| format!("member {} never applied revision {revision}", node.id()))
}

/// Every event under the prefix from revision `from` to `upto` (which must be an event's
/// revision), from `node`.
async fn full_log(node: &Node, from: u64, upto: Revision) -> Result<Vec<WatchEvent>, String> {
    let spec = WatchSpec {
        start_revision: Some(Revision::new(from)),
        ..WatchSpec::new(KeyRange::prefix(PREFIX))
    };
    let mut stream = node
        .watch(spec)
        .await
        .map_err(|e| format!("watch on {}: {e}", node.id()))?;
    let mut log = Vec::new();
    let work = async {
        while let Some(Ok(resp)) = stream.next().await {
            log.extend(events(&resp.body));
            if resp.body.revision >= upto {
                return true;
            }
        }
        false
    };
    match runtime::timeout(RECOVERY_BOUND, work).await {
        Some(true) => {
            log.retain(|e| e.revision <= upto.get());
            Ok(log)
        }
        _ => Err(format!("watch on {} did not reach {upto}", node.id())),
    }
}

/// Run the history checkers.
fn check_histories(
    logs: &[ClientLog],
    segments: &[(u64, Vec<Vec<WatchEvent>>)],
    reference: &[WatchEvent],
    lease: &LeaseHistory,
) -> Result<(), String> {
    let ops = settle_unknown_writes(logs, reference);
    match check(&ops) {
        Verdict::Linearizable => {}
        Verdict::Violation { key, .. } => {
            return Err(format!(
                "not linearizable on {}:\n{}",
                String::from_utf8_lossy(&key),
                describe(logs, &key)
            ))
        }
        Verdict::BudgetExhausted { key, ops, visited } => {
            return Err(format!(
                "linearizability undecided on {} ({ops} ops, {visited} configurations visited: \
                 too many unanswered operations for the search)",
                String::from_utf8_lossy(&key)
            ))
        }
    }
    for (start, responses) in segments {
        check_watch(responses, reference, *start)
            .map_err(|v| format!("watch from {start}: {v:?}"))?;
    }
    let acked: Vec<_> = logs.iter().flat_map(|l| l.acked.iter().cloned()).collect();
    check_acknowledged(reference, &acked).map_err(|v| format!("acknowledged write: {v:?}"))?;
    check_lease(lease).map_err(|v| format!("lease: {v:?}"))
}

/// The history to check (see [`settle_unanswered_writes`]).
fn settle_unknown_writes(logs: &[ClientLog], reference: &[WatchEvent]) -> Vec<Op> {
    let ops = logs.iter().flat_map(|l| l.ops.iter().cloned()).collect();
    let logged =
        (reference.iter()).filter_map(|e| e.value.as_deref().map(|v| (e.key.as_slice(), v)));
    settle_unanswered_writes(ops, logged)
}

/// The operations on `key`, one per line by invocation time, with who answered them.
fn describe(logs: &[ClientLog], key: &[u8]) -> String {
    let mut lines: Vec<(u64, String)> = logs
        .iter()
        .flat_map(|l| l.ops.iter().zip(&l.notes))
        .filter(|(op, _)| op.key == key)
        .map(|(op, note)| {
            let ret = op.ret.map_or("?".to_string(), |r| r.to_string());
            let text = |v: &Option<Vec<u8>>| {
                v.as_ref()
                    .map_or("-".to_string(), |v| String::from_utf8_lossy(v).into_owned())
            };
            let what = match (&op.input, &op.output) {
                (Input::Put(v), _) => format!("put {}", text(&Some(v.clone()))),
                (Input::Delete, _) => "delete".to_string(),
                (Input::Get, Output::Value(v)) => format!("get -> {}", text(v)),
                (Input::Get, _) => "get -> ?".to_string(),
                (Input::CompareAndSwap { expect, new }, out) => {
                    format!(
                        "cas {} => {} : {out:?}",
                        text(expect),
                        text(&Some(new.clone()))
                    )
                }
            };
            (
                op.call,
                format!("  c{} [{}..{ret}] {what} ({note})", op.client, op.call),
            )
        })
        .collect();
    lines.sort();
    lines
        .into_iter()
        .map(|l| l.1)
        .collect::<Vec<_>>()
        .join("\n")
}

/// End the lease after the heal, by revoke or by expiry (the seed decides), and record it.
async fn end_lease(
    cluster: &Cluster,
    rng: &mut Rng,
    history: &mut LeaseHistory,
    lease: Option<LeaseId>,
) -> Result<&'static str, String> {
    let Some(id) = lease else {
        return Ok("never attached");
    };
    if rng.below(2) == 0 {
        // Revoke, retrying: an unanswered attempt may have done it, so the revoke counts
        // from the first attempt; "not found" then means done.
        let first = cluster.now();
        on_any_member(cluster, rng, RECOVERY_BOUND, |node| async move {
            match node.lease_revoke(id).await {
                Ok(_) | Err(keel::NodeError::LeaseNotFound { .. }) => Ok(()),
                Err(e) => Err(e),
            }
        })
        .await
        .ok_or("lease revoke never answered")?;
        history.revoke = Some(Call {
            call: first,
            ret: cluster.now(),
        });
    } else {
        renew_after_checkpoint_then_move_leader(cluster, rng, history, id).await;
    }
    await_expiry(cluster, rng, history).await
}

/// The case lease checkpointing got wrong in etcd: the primary checkpoints a low remaining
/// TTL, the client then renews, and leadership moves before the next renew. The new
/// primary must count the renew's full TTL, not the checkpoint's remainder (which
/// [`await_expiry`]'s reads and the safety checker then tell).
async fn renew_after_checkpoint_then_move_leader(
    cluster: &Cluster,
    rng: &mut Rng,
    history: &mut LeaseHistory,
    id: LeaseId,
) {
    // No renew for 1.2 s (the last one is at most 0.3 s old, the TTL is 2 s): checkpoints
    // every 0.5 s persist a remaining TTL well below the TTL.
    runtime::sleep(Duration::from_millis(1200)).await;
    let Some(node) = cluster.pick(rng) else {
        return;
    };
    let call = cluster.now();
    if node.lease_keep_alive(id).await.is_err() {
        return;
    }
    history.renews.push(Call {
        call,
        ret: cluster.now(),
    });
    let Some(leader) = cluster.leader().await else {
        return;
    };
    let live = cluster.live();
    let (Some(from), Some(to)) = (
        live.iter().find(|n| n.id() == leader),
        live.iter().find(|n| n.id() != leader),
    ) else {
        return;
    };
    cluster.note(format!("move leader n{leader} -> n{}", to.id()));
    // Refused or slow transfers leave the check as it was: it still runs.
    let _ = runtime::timeout(RECOVERY_BOUND, from.move_leader(to.id())).await;
}

/// Read the lease's key until it is gone; fail if that takes longer than promised.
async fn await_expiry(
    cluster: &Cluster,
    rng: &mut Rng,
    history: &mut LeaseHistory,
) -> Result<&'static str, String> {
    let slack = u64::try_from(LEASE_SLACK.as_micros()).unwrap_or(u64::MAX);
    let deadline = expiry_deadline(history, slack).unwrap_or(0);
    loop {
        if let Some(node) = cluster.pick(rng) {
            if let Some(read) = read_key(cluster, &node).await {
                history.reads.push(read);
                if !read.present {
                    return Ok(if history.revoke.is_some() {
                        "revoked"
                    } else {
                        "expired"
                    });
                }
            }
        }
        // Revoked leases have no TTL left to wait out: the revoke itself is the deadline.
        let limit = history.revoke.map_or(deadline, |r| r.ret + slack);
        if cluster.now() > limit {
            return Err(format!(
                "the lease's key is still readable at {} µs (deadline {limit} µs)",
                cluster.now()
            ));
        }
        runtime::sleep(Duration::from_millis(50)).await;
    }
}

/// The event log below a compaction, kept by the battery (the members no longer have it).
#[derive(Default)]
struct Compacted {
    /// The compaction revision (0: none yet).
    upto: u64,
    /// Every event under the prefix up to `upto`.
    log: Vec<WatchEvent>,
}

/// Compact while the clients work: write a marker, wait until the watcher has passed it (so
/// it is never compacted out from under), keep the log up to it, then compact at it.
async fn compact_under_load(
    cluster: &Cluster,
    rng: &mut Rng,
    compacted: &mut Compacted,
) -> Result<(), String> {
    let (at, _) = write_within(cluster, rng, RECOVERY_BOUND).await?;
    let seen = async {
        while cluster.watch_progress.load(Ordering::Relaxed) < at.get() {
            runtime::sleep(Duration::from_millis(10)).await;
        }
    };
    runtime::timeout(RECOVERY_BOUND, seen)
        .await
        .ok_or_else(|| format!("the watcher never reached revision {at}"))?;
    let node = cluster.pick(rng).ok_or("no member running")?;
    let below = full_log(&node, compacted.upto + 1, at).await?;
    compact_at(cluster, rng, at).await?;
    cluster.note(format!("compacted at {at}"));
    compacted.log.extend(below);
    compacted.upto = at.get();
    Ok(())
}

/// Compact at `at` through any member.
async fn compact_at(cluster: &Cluster, rng: &mut Rng, at: Revision) -> Result<(), String> {
    on_any_member(cluster, rng, RECOVERY_BOUND, |node| async move {
        node.compact(at).await
    })
    .await
    .map(|_| ())
    .ok_or_else(|| format!("compaction at {at} never answered"))
}

/// Compact half the history away (at least past `compacted`); the members still agree, and
/// a watch from before the compaction is refused everywhere.
async fn check_compaction(
    cluster: &Cluster,
    rng: &mut Rng,
    last: Revision,
    compacted: u64,
) -> Result<(), String> {
    let at = Revision::new((last.get() / 2).max(compacted + 1).max(2).min(last.get()));
    compact_at(cluster, rng, at).await?;
    let (after, _) = write_within(cluster, rng, RECOVERY_BOUND).await?;
    let mut hashes = Vec::new();
    for node in cluster.live() {
        applied(&node, after).await?;
        let h = node.hash_kv(Some(after)).await.map_err(|e| e.to_string())?;
        hashes.push((node.id(), h.body.hash, h.body.compact_revision));
        let spec = WatchSpec {
            start_revision: Some(Revision::new(1)),
            ..WatchSpec::new(KeyRange::prefix(PREFIX))
        };
        if node.watch(spec).await.is_ok() {
            return Err(format!(
                "member {} watches from a compacted revision",
                node.id()
            ));
        }
    }
    if hashes
        .iter()
        .any(|h| (h.1, h.2) != (hashes[0].1, hashes[0].2))
    {
        return Err(format!(
            "replicas disagree after compacting at {at}: {hashes:?}"
        ));
    }
    Ok(())
}
