//! The poison flag shared by both engines: after the first write or fsync failure, every
//! later call fails fast, so nothing is half-applied on top of an unknown state.

use crate::error::{Result, StorageError};
use parking_lot::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

/// Poison state. Guards: `cause` holds the first failure's description; `poisoned` mirrors
/// `cause.is_some()` for a lock-free fast path.
#[derive(Debug, Default)]
pub(crate) struct Poison {
    poisoned: AtomicBool,
    cause: Mutex<Option<String>>,
}

impl Poison {
    /// `Err(Poisoned)` if poisoned.
    pub(crate) fn check(&self) -> Result<()> {
        if !self.poisoned.load(Ordering::Acquire) {
            return Ok(());
        }
        let cause = self.cause.lock().clone().unwrap_or_default();
        Err(StorageError::Poisoned { cause })
    }

    /// Record `error` as the poisoning cause (the first one wins) and return it.
    pub(crate) fn poison(&self, error: StorageError) -> StorageError {
        let mut cause = self.cause.lock();
        if cause.is_none() {
            *cause = Some(error.to_string());
        }
        self.poisoned.store(true, Ordering::Release);
        error
    }
}
