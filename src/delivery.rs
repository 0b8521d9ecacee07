//! The delivery dispatcher: walks each delay level's queue in order (queue order is due order,
//! since every message of a level waits the same delay) and re-posts every due message to its
//! target queue as a delivery record that names its origin: no payload copy.
//!
//! Wake-ups are deadline-driven: the thread sleeps until the earliest head of any level is due,
//! a new entry is dispatched, or the clock is moved, never on a fixed polling period.
//!
//! It must never deliver a message twice or drop one: its progress is not saved anywhere but
//! derived from the delivery records in the log (see [`crate::dispatch::LevelCursors`]), and
//! it retries a failed re-post until it succeeds or the store is poisoned.

use std::time::Duration;

use crate::commit_log::record::OriginRef;
use crate::consume_queue::entry::Entry;
use crate::error::{Error, Result};

/// Most entries one level delivers before the others get a turn.
const LEVEL_BATCH_MAX: u64 = 4096;
/// Longest sleep when nothing is pending (a safety net; new entries wake the thread anyway).
const IDLE_SLEEP: Duration = Duration::from_millis(1000);
/// Pause after a failed re-post before retrying it.
const RETRY_PAUSE: Duration = Duration::from_millis(50);

/// What the delivery loop needs from the store.
pub trait DeliveryHost {
    /// Store clock, ms.
    fn now_ms(&self) -> u64;
    /// Whether the store is stopping.
    fn stopping(&self) -> bool;
    /// Delay of `level` in the current table (`None` for a level beyond it).
    fn level_delay_ms(&self, level: u8) -> Option<u64>;
    /// Highest level that may hold entries.
    fn level_count(&self) -> u8;
    /// Entry count of the level's queue (0 if it does not exist).
    fn level_queue_len(&self, level: u8) -> u64;
    /// Entry `index` of the level queue.
    fn level_entry(&self, level: u8, index: u64) -> Result<Entry>;
    /// Where `level`'s delivery starts after open.
    fn delivered(&self, level: u8) -> u64;
    /// Appends the delivery record of the origin an entry points at (reading and checking the
    /// origin record first); returns the log end after it, or `None` if the origin record is
    /// corrupt and can never be delivered (the host counts and reports it; it is not retried,
    /// so one rotten record cannot block its level).
    fn repost(&self, origin: OriginRef, level: u8, now_ms: u64) -> Result<Option<u64>>;
    /// Called after a round that re-posted something, with the log end to make durable (sync
    /// mode) before the re-posts become visible.
    fn after_round(&self, log_end: u64) -> Result<()>;
    /// Sleeps until new entries, a clock move, a stop, or `timeout`.
    fn sleep(&self, generation: u64, timeout: Duration);
    /// The generation to pass to `sleep` (read before looking for work).
    fn generation(&self) -> u64;
    /// Reports a failure (once per streak).
    fn report(&self, what: &str, err: &Error);
    /// Whether writes are refused for good.
    fn poisoned(&self) -> bool;
}

/// Runs the delivery loop until the host stops.
pub fn run_delivery(host: &dyn DeliveryHost) {
    let mut cursors: Vec<u64> = (0..=u8::MAX).map(|level| host.delivered(level)).collect();
    let mut failing = false;
    while !host.stopping() && !host.poisoned() {
        let generation = host.generation();
        match deliver_round(host, &mut cursors) {
            Ok(Round::Delivered) => failing = false,
            Ok(Round::Idle { next_due_ms }) => {
                failing = false;
                let now = host.now_ms();
                let timeout = next_due_ms
                    .map(|due| Duration::from_millis(due.saturating_sub(now)))
                    .unwrap_or(IDLE_SLEEP)
                    .min(IDLE_SLEEP);
                if !timeout.is_zero() {
                    host.sleep(generation, timeout);
                }
            }
            Err(err) => {
                if !failing {
                    host.report("delivery stalled, retrying", &err);
                }
                failing = true;
                host.sleep(generation, RETRY_PAUSE);
            }
        }
    }
}

enum Round {
    Delivered,
    Idle { next_due_ms: Option<u64> },
}

/// One pass over the levels: re-posts what is due (a bounded batch per level).
fn deliver_round(host: &dyn DeliveryHost, cursors: &mut [u64]) -> Result<Round> {
    let now = host.now_ms();
    let mut next_due_ms: Option<u64> = None;
    let mut log_end = None;
    for level in 1..=host.level_count() {
        let Some(cursor) = cursors.get_mut(usize::from(level)) else {
            continue;
        };
        let len = host.level_queue_len(level);
        let mut batch = 0;
        while *cursor < len && batch < LEVEL_BATCH_MAX {
            let entry = host.level_entry(level, *cursor)?;
            if !is_due(entry.time_ms, now, host.level_delay_ms(level)) {
                next_due_ms = Some(next_due_ms.map_or(entry.time_ms, |d| d.min(entry.time_ms)));
                break;
            }
            let origin = OriginRef {
                log_offset: entry.log_offset,
                record_bytes: entry.record_bytes,
                level_queue_offset: *cursor,
            };
            if let Some(end) = host.repost(origin, level, now)? {
                log_end = Some(end);
            }
            *cursor += 1;
            batch += 1;
        }
    }
    match log_end {
        Some(end) => {
            host.after_round(end)?;
            Ok(Round::Delivered)
        }
        None => Ok(Round::Idle { next_due_ms }),
    }
}

/// A message is due when its due time has come on the store clock, or when the clock has gone
/// back so far that the due time lies more than the level's delay ahead: it has then waited
/// at least its delay already, and holding it for the jump would delay it by more than that
/// (RocketMQ's `correctDeliverTimestamp` rule).
pub fn is_due(due_ms: u64, now_ms: u64, level_delay_ms: Option<u64>) -> bool {
    due_ms <= now_ms || level_delay_ms.is_some_and(|delay| due_ms > now_ms.saturating_add(delay))
}
