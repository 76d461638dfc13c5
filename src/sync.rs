//! Locking shared in-memory state. A thread that panicked while holding a lock leaves state
//! that every user of it here can still read safely (counters, maps of caches), so a poisoned
//! lock is taken over rather than spreading the panic.

use std::sync::{Mutex, MutexGuard};

/// Locks `mutex`, taking it over if a panicking holder poisoned it.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
