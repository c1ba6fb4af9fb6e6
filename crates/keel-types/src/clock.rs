//! Injected time. This is the one module allowed to read the system clock; everything else
//! in keel takes a [`Clock`] so tests and simulation drive time by hand.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A monotonic clock: `now()` is the time elapsed since an arbitrary, fixed origin and never
/// goes backwards.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Time since the clock's origin.
    fn now(&self) -> Duration;
}

/// The real monotonic clock (`std::time::Instant`), origin at construction.
///
/// # Examples
/// ```
/// use keel_types::{Clock, SystemClock};
/// let c = SystemClock::new();
/// let a = c.now();
/// assert!(c.now() >= a);
/// ```
#[derive(Debug, Clone)]
pub struct SystemClock {
    origin: std::time::Instant,
}

impl SystemClock {
    /// A clock whose origin is now.
    #[allow(clippy::disallowed_methods, reason = "the one clock module")]
    pub fn new() -> Self {
        SystemClock {
            origin: std::time::Instant::now(),
        }
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for SystemClock {
    fn now(&self) -> Duration {
        self.origin.elapsed()
    }
}

/// A clock that moves only when told to; clones share the same time.
///
/// # Examples
/// ```
/// use keel_types::{Clock, ManualClock};
/// use std::time::Duration;
/// let c = ManualClock::new();
/// c.advance(Duration::from_millis(1500));
/// assert_eq!(c.now(), Duration::from_millis(1500));
/// ```
#[derive(Debug, Clone, Default)]
pub struct ManualClock {
    nanos: Arc<AtomicU64>,
}

impl ManualClock {
    /// A clock at time zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// Move the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let by = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        let _ = self
            .nanos
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                Some(n.saturating_add(by))
            });
    }

    /// Set the clock to `to` if that is not earlier than now (time never goes backwards).
    pub fn set(&self, to: Duration) {
        let to = u64::try_from(to.as_nanos()).unwrap_or(u64::MAX);
        self.nanos.fetch_max(to, Ordering::AcqRel);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Duration {
        Duration::from_nanos(self.nanos.load(Ordering::Acquire))
    }
}
