//! The runtime seam: every task the node spawns, every sleep, timeout and periodic tick, and
//! every piece of blocking work goes through openraft's `AsyncRuntime` of keel's type
//! configuration, never through tokio or `std::time` directly. Public as [`crate::runtime`]
//! for code that must run wherever the node runs (keel-sim's harness runs on both runtimes).
//!
//! Why: the same node code must run on openraft's deterministic simulation runtime
//! (single thread, virtual time, seeded randomness), where a direct `tokio::spawn` panics (no
//! tokio runtime), a tokio timer never fires and a thread finishes at a time that differs
//! between runs. With tokio (the default runtime) these functions are thin wrappers over
//! tokio's own.
//!
//! Channels and locks from `tokio::sync` (mpsc, oneshot, Mutex, Semaphore) need no tokio
//! runtime and wake waiters in FIFO order, so they stay as they are; a `watch` channel comes
//! from [`watch`], whose wake order the simulation runtime keeps deterministic.

use super::TypeConfig;
use openraft::async_runtime::Watch as _;
use openraft::{AsyncRuntime, Instant as _, RaftTypeConfig};
use std::future::Future;
use std::time::Duration;

/// The async runtime the node runs on (openraft's, from the type configuration).
pub(crate) type Rt = <TypeConfig as RaftTypeConfig>::AsyncRuntime;
/// The runtime's clock reading.
pub(crate) type Instant = <Rt as AsyncRuntime>::Instant;
/// The sending side of a runtime watch channel.
pub(crate) type WatchSender<T> = openraft::alias::WatchSenderOf<TypeConfig, T>;
/// The receiving side of a runtime watch channel.
pub(crate) type WatchReceiver<T> = openraft::alias::WatchReceiverOf<TypeConfig, T>;

/// Run `future` as a task of the runtime. Await the returned [`Task`] for its output, or
/// drop it to let the task run on by itself (every task the node spawns ends by itself: each
/// watches for shutdown).
///
/// # Examples
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_time().build()?.block_on(async {
/// let task = keel::runtime::spawn(async { 6 * 7 });
/// assert_eq!(task.await.ok(), Some(42));
/// # });
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn spawn<F>(future: F) -> Task<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    Task(Rt::spawn(future))
}

/// A task started by [`spawn`]; a future of the task's output.
pub struct Task<T: Send + 'static>(<Rt as AsyncRuntime>::JoinHandle<T>);

impl<T: Send + 'static> std::fmt::Debug for Task<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Task")
    }
}

/// A task that did not return (it panicked or the runtime dropped it).
#[derive(Debug, thiserror::Error)]
#[error("task did not finish: {detail}")]
pub struct TaskFailed {
    detail: String,
}

impl<T: Send + 'static> Future for Task<T> {
    type Output = Result<T, TaskFailed>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.0).poll(cx).map(|done| {
            done.map_err(|e| TaskFailed {
                detail: e.to_string(),
            })
        })
    }
}

/// Wait `duration` of the runtime's time.
pub async fn sleep(duration: Duration) {
    Rt::sleep(duration).await;
}

/// The runtime's current time.
pub(crate) fn now() -> Instant {
    Instant::now()
}

/// `future`'s output, or `None` when `duration` of the runtime's time passes first (the
/// future wins a tie).
pub async fn timeout<F: Future>(duration: Duration, future: F) -> Option<F::Output> {
    tokio::select! {
        biased;
        out = future => Some(out),
        () = sleep(duration) => None,
    }
}

/// A watch channel of the runtime.
pub(crate) fn watch<T: Send + Sync>(init: T) -> (WatchSender<T>, WatchReceiver<T>) {
    <Rt as AsyncRuntime>::Watch::channel(init)
}

/// Run CPU-bound or blocking `work` off the async workers (tokio's blocking pool). On the
/// simulation runtime it runs inline: the simulation has one thread and no blocking pool,
/// and the work done here (password hashing, a storage compaction) completes without
/// waiting on other tasks.
///
/// # Errors
/// The blocking pool could not run `work` (the runtime is shutting down).
pub(crate) async fn blocking<F, T>(work: F) -> std::io::Result<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    #[cfg(feature = "sim")]
    {
        Ok(work())
    }
    #[cfg(not(feature = "sim"))]
    {
        Rt::spawn_blocking(work).await
    }
}

/// The clock of the async runtime the node runs on, origin at construction: tokio's
/// monotonic clock by default (paused and advanced by tokio's test utilities), the virtual
/// clock of openraft's simulation runtime with the `sim` feature. Give it to
/// [`NodeBuilder::clock`](crate::NodeBuilder::clock) to measure lease deadlines in the same
/// time the node's timers run on, which is what a simulation needs.
///
/// # Examples
/// ```
/// use keel::{Clock, RuntimeClock};
/// # tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build()?.block_on(async {
/// let clock = RuntimeClock::new();
/// tokio::time::sleep(std::time::Duration::from_secs(5)).await;
/// assert_eq!(clock.now(), std::time::Duration::from_secs(5));
/// # });
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone, Copy, Debug)]
pub struct RuntimeClock {
    origin: Instant,
}

impl RuntimeClock {
    /// A clock whose origin is now.
    pub fn new() -> Self {
        RuntimeClock { origin: now() }
    }
}

impl Default for RuntimeClock {
    fn default() -> Self {
        Self::new()
    }
}

impl keel_types::Clock for RuntimeClock {
    fn now(&self) -> Duration {
        now() - self.origin
    }
}

/// A periodic tick on the runtime's clock. A tick that comes late (a busy runtime, a long
/// pause) is not caught up in a burst: the next one is a full period after it (tokio's
/// `MissedTickBehavior::Delay`). The first tick is immediate.
#[derive(Debug)]
pub(crate) struct Ticker {
    period: Duration,
    next: Option<Instant>,
}

impl Ticker {
    /// Ticks every `period` (a zero period is raised to 1 ms, so a loop on it cannot spin).
    pub(crate) fn new(period: Duration) -> Self {
        Ticker {
            period: period.max(Duration::from_millis(1)),
            next: None,
        }
    }

    /// Wait for the next tick.
    pub(crate) async fn tick(&mut self) {
        if let Some(next) = self.next {
            if next > now() {
                Rt::sleep_until(next).await;
            }
        }
        self.next = Some(now() + self.period);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn ticker_is_periodic_and_delays_after_a_late_tick() {
        let start = now();
        let mut ticker = Ticker::new(Duration::from_millis(100));
        ticker.tick().await;
        assert_eq!(now() - start, Duration::ZERO, "the first tick is immediate");
        ticker.tick().await;
        assert_eq!(now() - start, Duration::from_millis(100));
        // a late caller: 250 ms pass before it asks for the next tick
        sleep(Duration::from_millis(250)).await;
        ticker.tick().await;
        assert_eq!(
            now() - start,
            Duration::from_millis(350),
            "late tick at once"
        );
        ticker.tick().await;
        assert_eq!(
            now() - start,
            Duration::from_millis(450),
            "then a full period after the late tick, no burst"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn timeout_and_blocking_work() {
        assert_eq!(
            timeout(Duration::from_millis(5), async { 7 }).await,
            Some(7)
        );
        let never = std::future::pending::<()>();
        assert_eq!(timeout(Duration::from_millis(5), never).await, None);
        assert_eq!(blocking(|| 2 + 2).await.ok(), Some(4));
        let (tx, mut rx) = watch(0u8);
        spawn(async move {
            sleep(Duration::from_millis(10)).await;
            let _ = tx.send(1);
        });
        use openraft::async_runtime::{WatchReceiver as _, WatchSender as _};
        assert!(rx.changed().await.is_ok());
        assert_eq!(*rx.borrow_watched(), 1);
    }
}
