//! Small helpers every room of the node uses: a lock that survives a
//! panicked holder, and the wall clock in milliseconds.
//!
//! Owns no state.

use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
