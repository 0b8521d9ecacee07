//! Wall-clock helpers shared by the benches that measure lateness against due times.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Microseconds since the Unix epoch (0 if the clock is before it).
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Milliseconds from `due_ms` to now, with microsecond resolution.
pub fn ms_since(due_ms: u64) -> f64 {
    now_us() as f64 / 1000.0 - due_ms as f64
}

/// Sleeps until `at` (returns at once if it has passed).
pub fn sleep_until(at: Instant) {
    let now = Instant::now();
    if at > now {
        std::thread::sleep(at - now);
    }
}
