//! Bounded recursion for decoders of recursive values (a txn inside a txn, a response inside a
//! response): a peer's message or a corrupted record nested a million levels deep must be
//! refused with an error, not overflow the decoding thread's stack.

use crate::limits::DECODE_NESTING_MAX;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer};
use std::cell::Cell;

thread_local! {
    /// Recursive values being decoded on this thread, outermost included.
    static DEPTH: Cell<usize> = const { Cell::new(0) };
}

/// One level entered; left on drop (also when decoding fails).
struct Level;

impl Drop for Level {
    fn drop(&mut self) {
        DEPTH.with(|d| d.set(d.get().saturating_sub(1)));
    }
}

/// Decode a `T` one nesting level deeper, refusing more than [`DECODE_NESTING_MAX`] levels
/// (counted per thread across every recursive type using it). Use it as serde's
/// `deserialize_with` on the field or variant through which a type recurses.
///
/// # Errors
/// The decoder's error, or "nested more than N levels deep".
pub fn deserialize_nested<'de, D, T>(decoder: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    let depth = DEPTH.with(|d| {
        let depth = d.get() + 1;
        d.set(depth);
        depth
    });
    let _level = Level;
    if depth > DECODE_NESTING_MAX {
        return Err(D::Error::custom(format_args!(
            "nested more than {DECODE_NESTING_MAX} levels deep"
        )));
    }
    T::deserialize(decoder)
}
