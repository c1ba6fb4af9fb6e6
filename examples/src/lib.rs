//! Shared helpers for keel examples (none yet).
