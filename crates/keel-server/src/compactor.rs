//! Automatic compaction (etcd's `--auto-compaction-mode` / `--auto-compaction-retention`):
//! a sans-I/O planner that decides which revision to compact to, and the task that runs it on
//! the leader.
//!
//! - **periodic** (etcd's default mode): keep `retention` worth of history. The planner samples
//!   the store's revision every period (retention/10, or the retention itself when it is under
//!   an hour — etcd's rule) and, once a sample is `retention` old, compacts to it.
//!   Worked example, retention 10 h: samples every hour r(0h), r(1h), ...; at 10 h the planner
//!   compacts to r(0h), at 11 h to r(1h), and so on: at any time at least 10 h of history stay.
//! - **revision**: keep the last `retention` revisions: every 5 minutes compact to
//!   `current - retention`.
//!
//! A retention of 0 disables automatic compaction (etcd's default).

use keel_types::Revision;
use std::collections::VecDeque;
use std::time::Duration;

/// How often the revision mode compacts (etcd: 5 minutes).
pub const REVISION_MODE_INTERVAL: Duration = Duration::from_secs(300);
/// Samples kept by the periodic planner (one period each; retention spans 10 of them).
const SAMPLES_MAX: usize = 11;

/// What to keep.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retention {
    /// Keep this much time of history.
    Periodic(Duration),
    /// Keep this many revisions.
    Revisions(u64),
}

/// Parse etcd's two flags. Periodic retention: a bare integer counts hours (`"1"` = 1 h), or a
/// duration with units `h`, `m`, `s` (`"30m"`, `"1h30m"`). Revision retention: an integer.
/// `Ok(None)` when disabled (retention 0).
///
/// # Errors
/// A message naming what is wrong.
pub fn parse(mode: &str, retention: &str) -> Result<Option<Retention>, String> {
    let retention = retention.trim();
    match mode {
        "periodic" => {
            let d = parse_duration(retention)?;
            Ok((!d.is_zero()).then_some(Retention::Periodic(d)))
        }
        "revision" => {
            let n: u64 = retention
                .parse()
                .map_err(|_| format!("{retention:?} is not a number of revisions"))?;
            Ok((n > 0).then_some(Retention::Revisions(n)))
        }
        other => Err(format!(
            "unknown mode {other:?} (expected periodic or revision)"
        )),
    }
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    if let Ok(hours) = text.parse::<u64>() {
        return Ok(Duration::from_secs(hours.saturating_mul(3600)));
    }
    let bad = || format!("{text:?} is not a duration (e.g. 1, 30m, 1h30m, 90s)");
    let mut total = Duration::ZERO;
    let mut number = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let n: u64 = number.parse().map_err(|_| bad())?;
        number.clear();
        let unit = match c {
            'h' => 3600,
            'm' => 60,
            's' => 1,
            _ => return Err(bad()),
        };
        total += Duration::from_secs(n.saturating_mul(unit));
    }
    if !number.is_empty() || text.is_empty() {
        return Err(bad());
    }
    Ok(total)
}

/// Decides compactions from the revisions it observes (pure: the caller supplies time).
///
/// Invariants: 1. samples are in increasing time order; 2. at most [`SAMPLES_MAX`] are kept;
/// 3. a compaction revision returned is never lower than a previous one.
///
/// # Examples
/// ```
/// use keel_server::compactor::{Compactor, Retention};
/// use keel_types::Revision;
/// use std::time::Duration;
/// let hour = Duration::from_secs(3600);
/// let mut c = Compactor::new(Retention::Periodic(10 * hour));
/// assert_eq!(c.period(), hour);
/// for h in 0..10 {
///     assert_eq!(c.observe(h * hour, Revision::new(100 * (h as u64 + 1))), None);
/// }
/// // Ten hours after the first sample: compact to it.
/// assert_eq!(c.observe(10 * hour, Revision::new(1100)), Some(Revision::new(100)));
/// ```
#[derive(Clone, Debug)]
pub struct Compactor {
    retention: Retention,
    samples: VecDeque<(Duration, Revision)>,
    last: Option<Revision>,
}

impl Compactor {
    /// A planner keeping `retention`.
    pub fn new(retention: Retention) -> Self {
        Compactor {
            retention,
            samples: VecDeque::new(),
            last: None,
        }
    }

    /// How often to call [`Compactor::observe`].
    pub fn period(&self) -> Duration {
        match self.retention {
            Retention::Periodic(r) if r >= Duration::from_secs(3600) => r / 10,
            Retention::Periodic(r) => r,
            Retention::Revisions(_) => REVISION_MODE_INTERVAL,
        }
    }

    /// Record the store's `current` revision at `now`; the revision to compact to, if any.
    pub fn observe(&mut self, now: Duration, current: Revision) -> Option<Revision> {
        let target = match self.retention {
            Retention::Revisions(n) => {
                let target = current.get().checked_sub(n)?;
                (target > 0).then(|| Revision::new(target))
            }
            Retention::Periodic(r) => {
                self.samples.push_back((now, current));
                while self.samples.len() > SAMPLES_MAX {
                    self.samples.pop_front();
                }
                // The newest sample at least `r` old.
                self.samples
                    .iter()
                    .rev()
                    .find(|(at, _)| now.saturating_sub(*at) >= r)
                    .map(|(_, rev)| *rev)
            }
        }?;
        if self.last.is_some_and(|l| target <= l) {
            return None;
        }
        self.last = Some(target);
        Some(target)
    }
}

/// Run `compactor` on `node` until it stops: every period, if this member leads, observe the
/// revision and compact when the planner says so. Errors are logged (a compaction that races
/// with a manual one is refused harmlessly).
pub fn spawn(node: keel::Node, retention: Retention, clock: std::sync::Arc<dyn keel_types::Clock>) {
    tokio::spawn(async move {
        let mut compactor = Compactor::new(retention);
        let period = compactor.period();
        tracing::info!(?retention, ?period, "automatic compaction enabled");
        loop {
            tokio::time::sleep(period).await;
            let status = match node.status().await {
                Ok(s) => s,
                Err(keel::NodeError::Stopped) => return,
                Err(e) => {
                    tracing::debug!(error = %e, "auto-compaction: status");
                    continue;
                }
            };
            if status.leader != Some(node.id()) {
                continue;
            }
            let Some(target) = compactor.observe(clock.now(), status.header.revision) else {
                continue;
            };
            match node.compact(target).await {
                Ok(_) => tracing::info!(revision = %target, "auto-compaction: compacted"),
                Err(keel::NodeError::Stopped) => return,
                Err(e) => tracing::warn!(revision = %target, error = %e, "auto-compaction failed"),
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_parse_like_etcd() {
        let h = Duration::from_secs(3600);
        assert_eq!(parse("periodic", "0"), Ok(None));
        assert_eq!(parse("periodic", "1"), Ok(Some(Retention::Periodic(h))));
        assert_eq!(
            parse("periodic", "1h30m"),
            Ok(Some(Retention::Periodic(h + h / 2)))
        );
        assert_eq!(
            parse("periodic", "90s"),
            Ok(Some(Retention::Periodic(Duration::from_secs(90))))
        );
        assert_eq!(
            parse("revision", "1000"),
            Ok(Some(Retention::Revisions(1000)))
        );
        assert!(parse("revision", "1h").is_err());
        assert!(parse("periodic", "1x").is_err());
        assert!(parse("periodic", "5h3").is_err());
        assert!(parse("weekly", "1").is_err());
    }

    #[test]
    fn revision_mode_keeps_the_last_n_revisions_and_never_goes_back() {
        let mut c = Compactor::new(Retention::Revisions(100));
        assert_eq!(c.period(), REVISION_MODE_INTERVAL);
        assert_eq!(c.observe(Duration::ZERO, Revision::new(50)), None);
        assert_eq!(
            c.observe(Duration::ZERO, Revision::new(150)),
            Some(Revision::new(50))
        );
        assert_eq!(c.observe(Duration::ZERO, Revision::new(150)), None);
        assert_eq!(
            c.observe(Duration::ZERO, Revision::new(400)),
            Some(Revision::new(300))
        );
    }

    #[test]
    fn periodic_mode_under_an_hour_samples_every_retention() {
        let r = Duration::from_secs(300);
        let mut c = Compactor::new(Retention::Periodic(r));
        assert_eq!(c.period(), r);
        assert_eq!(c.observe(Duration::ZERO, Revision::new(10)), None);
        assert_eq!(c.observe(r, Revision::new(20)), Some(Revision::new(10)));
        assert_eq!(c.observe(2 * r, Revision::new(20)), Some(Revision::new(20)));
        // Nothing written since: no new compaction.
        assert_eq!(c.observe(3 * r, Revision::new(20)), None);
    }
}
