//! Test-only planted bugs (feature `planted-bugs`): switches that re-introduce a known bug
//! class so that keel-sim's battery can show it catches it. Every switch is off unless a
//! test turns it on; nothing outside tests enables the feature.

use std::sync::atomic::{AtomicBool, Ordering};

/// A renew leaves the persisted remaining TTL at its last checkpoint instead of the full
/// TTL, so the next primary expires the lease early (etcd issue 13491's class).
pub static RENEW_KEEPS_CHECKPOINTED_REMAINING: AtomicBool = AtomicBool::new(false);

/// Whether `switch` is on.
pub fn on(switch: &AtomicBool) -> bool {
    switch.load(Ordering::Relaxed)
}
