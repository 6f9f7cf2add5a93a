//! A poison-tolerant lock for the short critical sections of the runtime,
//! the transports and the policies.

use std::sync::{Mutex, MutexGuard};

/// Locks `m`, taking the data even if a holder panicked: callers keep every
/// critical section consistent before anything in it can panic, so a poisoned
/// lock is still safe to use (and one panicking task does not take the whole
/// node down with it).
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
