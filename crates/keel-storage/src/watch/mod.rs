//! The watch hub: live and historical change streams over key ranges.
//!
//! Guarantees (etcd's, docs "Watch API guarantees"): events arrive in revision order, never
//! twice, with no gap, all events of one revision in the same batch, from any revision not
//! yet compacted.
//!
//! How: every watcher is either **synced** (it has received everything up to the last
//! notified revision, so the committer pushes new revisions into its bounded buffer) or
//! **unsynced** (it lags: it is served from the `kv_revs` history when its owner polls).
//! A synced watcher whose buffer is full becomes a **victim**: the committer never blocks on
//! it, it simply turns unsynced at the revision it missed. Catch-up reads history only up to
//! the last *notified* revision and flips the watcher to synced under the hub lock, so the
//! hand-over from history to live delivery can neither skip nor repeat a revision.
//!
//! Catch-up runs in the caller of [`Watcher::poll`]; the hub owns no thread, so it runs
//! unchanged in a deterministic simulation.

mod hub;
mod watcher;

pub use hub::{WatchHub, WatchId};
pub use watcher::{WatchBatch, WatchSpec, Watcher};
