//! Test-only planted bugs (feature `planted-bugs`): switches that re-introduce a known bug
//! class so that keel-sim's battery can show it catches it. Every switch is off unless a
//! test turns it on; nothing outside tests enables the feature.

use std::sync::atomic::{AtomicBool, Ordering};

/// A watcher catching up from history drops the first event of every batch it reads
/// (etcd has had watch-skips-an-event bugs of this kind).
pub static WATCH_SKIPS_ON_CATCH_UP: AtomicBool = AtomicBool::new(false);

/// Whether `switch` is on.
pub fn on(switch: &AtomicBool) -> bool {
    switch.load(Ordering::Relaxed)
}
