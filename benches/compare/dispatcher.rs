//! The dispatcher every table-based peer gets: move the due entries into the target queue in
//! one transaction, then sleep until the earliest pending due time (at most `POLL_MS_MAX`), so
//! the peers are deadline-driven like delaystore rather than handicapped by a fixed poll.

use std::time::{Duration, Instant};

use delaystore::Clock;

use crate::peer::Visit;
use crate::timing::now_us;

/// Longest sleep of a dispatcher with nothing pending (RocketMQ's poll interval).
pub const POLL_MS_MAX: u64 = 100;
/// Entries moved per transaction at most.
pub const MOVE_BATCH: usize = 10_000;

/// What a table-based peer provides to be dispatched.
pub trait Mover {
    /// Moves up to `limit` entries due at `now_ms` into the target queue in one transaction;
    /// returns their (seq, due_ms).
    fn move_due(&self, now_ms: u64, limit: usize) -> Result<Vec<(u64, u64)>, String>;
    /// The earliest due time pending.
    fn next_due_ms(&self) -> Result<Option<u64>, String>;
}

/// Runs the dispatcher until `expect` entries moved or `timeout` passed. An entry counts as
/// visible when its transaction has committed (a consumer would see it only later: this
/// favours the peers).
pub fn deliver_polling(
    mover: &dyn Mover,
    clock: &dyn Clock,
    expect: u64,
    timeout: Duration,
    visit: &mut Visit,
) -> Result<u64, String> {
    let start = Instant::now();
    let mut moved_total = 0u64;
    while moved_total < expect && start.elapsed() < timeout {
        let now_ms = clock.now_ms();
        let moved = mover.move_due(now_ms, MOVE_BATCH)?;
        let visible_ms = now_us() as f64 / 1000.0;
        moved_total += moved.len() as u64;
        for (seq, due_ms) in &moved {
            visit(*seq, *due_ms, visible_ms);
        }
        if moved.len() == MOVE_BATCH {
            continue;
        }
        let wait_ms = match mover.next_due_ms()? {
            Some(due) => due.saturating_sub(clock.now_ms()).min(POLL_MS_MAX),
            None => POLL_MS_MAX,
        };
        if wait_ms > 0 {
            // Wake at the due millisecond itself, not a whole millisecond later.
            let into_ms = now_us() % 1000;
            let sleep_us = (wait_ms * 1000).saturating_sub(into_ms);
            std::thread::sleep(Duration::from_micros(sleep_us.max(50)));
        }
    }
    Ok(moved_total)
}
