//! Test-only planted bugs (feature `planted-bugs`): switches that re-introduce known bug
//! classes so that keel-sim's battery can show it catches them, and how soon. Every switch
//! is off unless a test turns it on; nothing outside tests enables the feature. The switches
//! are process-wide: every node in the process has the bug while one is on.

use std::sync::atomic::{AtomicBool, Ordering};

pub use keel_lease::planted::RENEW_KEEPS_CHECKPOINTED_REMAINING;
pub use keel_storage::planted::WATCH_SKIPS_ON_CATCH_UP;

/// The log store reports an append flushed before the fsync, so a member counts toward
/// commit entries its disk may lose.
pub static ACK_BEFORE_FSYNC: AtomicBool = AtomicBool::new(false);

/// The applied-state marker commits (synced) in its own batch before the entry's changes,
/// so a crash between the two leaves an entry marked applied whose changes are lost.
pub static APPLIED_BEFORE_CHANGES: AtomicBool = AtomicBool::new(false);

/// Every switch, by name (for reports).
pub fn all() -> [(&'static str, &'static AtomicBool); 4] {
    [
        ("ack before fsync", &ACK_BEFORE_FSYNC),
        ("applied index outside the batch", &APPLIED_BEFORE_CHANGES),
        (
            "renew keeps the checkpointed remaining TTL",
            &RENEW_KEEPS_CHECKPOINTED_REMAINING,
        ),
        ("watch skips an event on catch-up", &WATCH_SKIPS_ON_CATCH_UP),
    ]
}

pub(crate) fn on(switch: &AtomicBool) -> bool {
    switch.load(Ordering::Relaxed)
}
