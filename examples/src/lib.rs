//! Runnable examples of keel; see the files next to this crate's `Cargo.toml`.
