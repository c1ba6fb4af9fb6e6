//! The reference the [`wheel`](crate::wheel) is checked against: a naive sorted deadline
//! queue, and [`compare_with_naive`], which runs one operation sequence on both and reports
//! the first difference. Used by the property tests and by the `expiry_wheel` fuzz target.
//!
//! # Examples
//! ```
//! use keel_lease::wheel_reference::{compare_with_naive, WheelOp};
//! let ops = [
//!     WheelOp::Insert { delay: 10 },
//!     WheelOp::Insert { delay: 5_000 },
//!     WheelOp::Reschedule { which: 0, delay: 70 },
//!     WheelOp::Advance { by: 69, max: 8 },
//!     WheelOp::Advance { by: 10_000, max: 1 },
//! ];
//! assert_eq!(compare_with_naive(&ops), Ok(()));
//! ```

use crate::wheel::{Handle, Wheel};
use std::collections::{BTreeMap, BTreeSet};

/// One step of a sequence. `which` picks a live entry modulo their number (ignored when
/// there is none); delays are relative to the current time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WheelOp {
    /// Insert a new entry due `delay` ticks from now.
    Insert {
        /// Ticks from now.
        delay: u64,
    },
    /// Move a live entry's deadline to `delay` ticks from now.
    Reschedule {
        /// Which live entry.
        which: usize,
        /// Ticks from now.
        delay: u64,
    },
    /// Unschedule a live entry (it stays allocated).
    Cancel {
        /// Which live entry.
        which: usize,
    },
    /// Remove a live entry.
    Remove {
        /// Which live entry.
        which: usize,
    },
    /// Advance time by `by` ticks and pop what is due, `max` per batch.
    Advance {
        /// Ticks to advance.
        by: u64,
        /// Batch bound.
        max: usize,
    },
}

/// The naive queue: a sorted set of (deadline, key).
#[derive(Debug, Default)]
struct Naive {
    queue: BTreeSet<(u64, u32)>,
    deadline: BTreeMap<u32, u64>,
}

impl Naive {
    fn schedule(&mut self, key: u32, at: u64) {
        self.cancel(key);
        self.queue.insert((at, key));
        self.deadline.insert(key, at);
    }
    fn cancel(&mut self, key: u32) {
        if let Some(at) = self.deadline.remove(&key) {
            self.queue.remove(&(at, key));
        }
    }
    fn due(&self, now: u64) -> BTreeSet<u32> {
        (self.queue.range(..=(now, u32::MAX)))
            .map(|(_, key)| *key)
            .collect()
    }
}

/// Fail with `what` unless `ok`.
fn ensure(ok: bool, what: impl FnOnce() -> String) -> Result<(), String> {
    if ok {
        Ok(())
    } else {
        Err(what())
    }
}

/// The two sides and the live entries.
#[derive(Default)]
struct Pair {
    wheel: Wheel<u32>,
    naive: Naive,
    live: Vec<(u32, Handle)>,
    now: u64,
    next_key: u32,
}

impl Pair {
    fn pick(&self, which: usize) -> Option<usize> {
        (!self.live.is_empty()).then(|| which % self.live.len())
    }

    fn step(&mut self, op: WheelOp) -> Result<(), String> {
        match op {
            WheelOp::Insert { delay } => {
                let key = self.next_key;
                let handle = (self.wheel.insert(key)).ok_or("the wheel refused an insert")?;
                let at = self.now.saturating_add(delay);
                self.wheel.schedule(handle, at);
                self.naive.schedule(key, at);
                self.live.push((key, handle));
                self.next_key += 1;
            }
            WheelOp::Reschedule { which, delay } => {
                if let Some(i) = self.pick(which) {
                    let (key, handle) = self.live[i];
                    let at = self.now.saturating_add(delay);
                    ensure(self.wheel.schedule(handle, at), || {
                        format!("reschedule {key}")
                    })?;
                    self.naive.schedule(key, at);
                }
            }
            WheelOp::Cancel { which } => {
                if let Some(i) = self.pick(which) {
                    let (key, handle) = self.live[i];
                    ensure(self.wheel.unschedule(handle), || format!("cancel {key}"))?;
                    self.naive.cancel(key);
                }
            }
            WheelOp::Remove { which } => {
                if let Some(i) = self.pick(which) {
                    let (key, handle) = self.live.swap_remove(i);
                    let removed = self.wheel.remove(handle);
                    ensure(removed == Some(key), || {
                        format!("remove {key}: {removed:?}")
                    })?;
                    self.naive.cancel(key);
                }
            }
            WheelOp::Advance { by, max } => {
                self.now = self.now.saturating_add(by);
                self.advance(max.max(1))?;
            }
        }
        self.wheel.check_invariants();
        ensure(self.wheel.scheduled_len() == self.naive.queue.len(), || {
            format!(
                "{} scheduled, naive {}",
                self.wheel.scheduled_len(),
                self.naive.queue.len()
            )
        })?;
        ensure(self.wheel.len() == self.live.len(), || "live count".into())
    }

    /// Pop everything due at `now` in batches of `max`: exactly the naive queue's due set,
    /// none early, each once, every batch bounded.
    fn advance(&mut self, max: usize) -> Result<(), String> {
        let now = self.now;
        let expected = self.naive.due(now);
        let mut got = BTreeSet::new();
        loop {
            let mut out = Vec::new();
            let n = self.wheel.advance(now, max, &mut out);
            ensure(n == out.len() && n <= max, || {
                format!("batch of {n} (max {max})")
            })?;
            for handle in &out {
                let key = *self.wheel.get(*handle).ok_or("a popped entry was freed")?;
                let deadline = self.naive.deadline.get(&key).copied();
                ensure(deadline.is_some_and(|d| d <= now), || {
                    format!("{key} popped at {now}, due {deadline:?}")
                })?;
                ensure(self.wheel.deadline(*handle).is_none(), || {
                    "popped = unscheduled".into()
                })?;
                ensure(got.insert(key), || format!("{key} reported twice"))?;
                self.naive.cancel(key);
            }
            if n < max {
                break;
            }
        }
        ensure(got == expected, || {
            format!("at {now}: popped {got:?}, due {expected:?}")
        })
    }
}

/// Run `ops` on a wheel and on the naive queue; `Err` describes the first difference (an
/// entry popped early, late, twice or not at all, an unbounded batch, a count mismatch).
/// At the end, both are drained at the end of time and must agree on what is left.
///
/// # Errors
/// The description of the first difference.
///
/// # Panics
/// When the wheel's internal structure is broken ([`Wheel::check_invariants`] runs after
/// every step).
pub fn compare_with_naive(ops: &[WheelOp]) -> Result<(), String> {
    let mut pair = Pair::default();
    for op in ops {
        pair.step(*op)?;
    }
    pair.now = u64::MAX;
    pair.advance(usize::MAX)
}
