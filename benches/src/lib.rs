//! Shared helpers for keel benchmarks.
