//! The delivery dispatcher: walks each timed queue in order, head first, and releases every
//! entry whose time has come. A delay level's queue is in due order (every message of a level
//! waits the same delay); a timer slot's queue is in release order (see [`crate::timer`]). A
//! released message is re-posted to its target queue as a delivery record that names its
//! origin (no payload copy), hopped to a lower timer tier as a small hop record, or discarded
//! (cancelled, or corrupt); the host decides which.
//!
//! Wake-ups are deadline-driven: the thread sleeps until the earliest head of any level is due,
//! a new entry is dispatched, or the clock is moved, never on a fixed polling period.
//!
//! It must never deliver a message twice or drop one: its progress is not saved anywhere but
//! derived from the delivery, hop and discard records in the log (see [`crate::dispatch::DeliveryCursors`]), and
//! it retries a failed re-post until it succeeds or the store is poisoned.
//!
//! **Clock jumps.** Arbitrary delays are absolute wall-clock due times: they are delivered when
//! the clock reads their due time, whatever it did before. For delay levels: due times are
//! wall-clock times fixed at put (store time + the delay the
//! message was stored with); the current delay table is never consulted, so reopening with
//! another table changes no stored due time. A forward jump makes everything it passes due. When
//! the clock is seen going back, to `j`, every message already queued is treated as if stored
//! at `min(store time, j)`: its deadline becomes `due - max(0, store time - j)`. So a backward
//! jump never holds a message longer than its own delay after the jump (RocketMQ's
//! `correctDeliverTimestamp` bound), never releases it before its delay has elapsed since the
//! jump (RocketMQ releases such messages at once), and keeps each level in order.

use std::time::Duration;

use crate::consume_queue::entry::Entry;
use crate::consume_queue::TimedQueue;
use crate::error::{Error, Result};
use crate::timer::release_ms;

/// Most entries one queue releases before the others get a turn.
const QUEUE_BATCH_MAX: u64 = 4096;
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
    /// The timed queues to walk (every level that may hold entries, and the timer slots).
    fn timed_queues(&self) -> &[TimedQueue];
    /// Log offset just past the last record written.
    fn log_written_end(&self) -> u64;
    /// Entry count of a timed queue (0 if it does not exist).
    fn queue_len(&self, queue: TimedQueue) -> u64;
    /// Entry `index` of a timed queue.
    fn entry(&self, queue: TimedQueue, index: u64) -> Result<Entry>;
    /// Store time and due time of the record entry `index` of `queue` points at: from its
    /// header when the due time agrees with the entry's time tag (for a timer slot: the tag is
    /// the start of the due time's granule), else from the whole record once its CRC holds. An
    /// error if the CRC fails or the record is not the one the entry was made for.
    fn record_times(&self, queue: TimedQueue, index: u64, entry: &Entry) -> Result<(u64, u64)>;
    /// The newest store time handed out so far, including the log's newest record at open: a
    /// store time is a clock reading, so a clock below it has gone back (while the store was
    /// closed, or since that put), whether or not the loop saw the higher reading.
    fn newest_store_ms(&self) -> u64;
    /// Where a queue's delivery starts after open.
    fn delivered(&self, queue: TimedQueue) -> u64;
    /// Releases entry `index` of `queue`, whose time has come: appends the record that
    /// consumes it (a delivery, a hop to a lower timer slot, or a discard) and returns the log
    /// end after it. A corrupt record is discarded (the host counts and reports it), never
    /// retried, so one rotten record cannot block its queue.
    fn release(&self, queue: TimedQueue, index: u64, entry: &Entry, now_ms: u64) -> Result<u64>;
    /// Called after a round that released something, with the log end to make durable (sync
    /// mode) before the records become visible.
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

/// A backward clock jump seen by the loop, applied to the messages put before it.
#[derive(Debug, Clone, Copy)]
struct JumpCap {
    /// Clock reading just after the jump.
    jumped_to_ms: u64,
    /// Messages whose record lies below this log offset were put before the jump (whether or
    /// not they were dispatched into their level's queue yet).
    before_log_offset: u64,
}

/// The loop's state: per-queue cursors (in [`DeliveryHost::timed_queues`] order) and the
/// clock-jump bookkeeping.
struct Delivery {
    cursors: Vec<u64>,
    cap: Option<JumpCap>,
    /// The clock at the last round.
    clock_high_ms: u64,
    /// [`DeliveryHost::newest_store_ms`] at the last round.
    newest_seen_ms: u64,
}

/// Runs the delivery loop until the host stops.
pub fn run_delivery(host: &dyn DeliveryHost) {
    let mut state = Delivery {
        cursors: host
            .timed_queues()
            .iter()
            .map(|queue| host.delivered(*queue))
            .collect(),
        cap: None,
        clock_high_ms: 0,
        newest_seen_ms: 0,
    };
    let mut failing = false;
    while !host.stopping() && !host.poisoned() {
        let generation = host.generation();
        match state.round(host) {
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

impl Delivery {
    /// Notes a backward clock jump: every message put before it gets a cap. The jump is seen
    /// at the first round after it (the loop wakes at least every second), and is dated to
    /// that round's clock reading.
    fn watch_clock(&mut self, host: &dyn DeliveryHost) {
        // Newest store time first, then the clock: every store time was a clock reading taken
        // before ours, so on a clock that does not go back `newest <= now`. (The other order let
        // a put between the two reads look like a backward jump, and released it early.)
        let newest = host.newest_store_ms();
        let now = host.now_ms();
        // Each jump is noted once: the clock is below the last reading, or a store time above
        // the clock appeared since the last round (the clock went back after that put, or while
        // the store was closed). Re-noting it every round would slide the caps later.
        let jumped = now < self.clock_high_ms || (newest > self.newest_seen_ms && now < newest);
        if jumped {
            self.cap = Some(JumpCap {
                jumped_to_ms: now,
                before_log_offset: host.log_written_end(),
            });
        }
        self.clock_high_ms = now;
        self.newest_seen_ms = newest;
    }

    /// The time an entry may be released: its time tag; for a delay level, moved earlier after
    /// a backward jump by how far its store time lay beyond the clock the jump went to.
    /// A level's due time is read from the record, not trusted from the entry: a damaged entry
    /// time must not release a message early. (A timer entry is only a release hint: the
    /// release itself reads the due time from the record and hops if it is not reached.)
    fn deadline_ms(
        &self,
        host: &dyn DeliveryHost,
        queue: TimedQueue,
        index: u64,
        entry: &Entry,
    ) -> u64 {
        // An unreadable header (or one of another record) keeps the entry's time; the
        // release reports the record.
        let times = host.record_times(queue, index, entry).ok();
        if let TimedQueue::TimerSlot(slot) = queue {
            // Only a release hint: the release reads the due time from the record and hops if
            // it is not reached. Taken from the record when the two disagree, so a damaged tag
            // cannot hold the slot back.
            return times.map_or(entry.time_ms, |(_, due_ms)| release_ms(due_ms, slot));
        }
        let due_ms = times.map_or(entry.time_ms, |(_, due_ms)| due_ms);
        match (self.cap, times) {
            (Some(cap), Some((store_ms, _)))
                if entry.log_offset < cap.before_log_offset && store_ms > cap.jumped_to_ms =>
            {
                due_ms.saturating_sub(store_ms - cap.jumped_to_ms)
            }
            _ => due_ms,
        }
    }

    /// One pass over the timed queues: releases what is due (a bounded batch per queue).
    fn round(&mut self, host: &dyn DeliveryHost) -> Result<Round> {
        self.watch_clock(host);
        let mut next_due_ms: Option<u64> = None;
        let mut log_end = None;
        for (at, &queue) in host.timed_queues().iter().enumerate() {
            let len = host.queue_len(queue);
            let mut batch = 0;
            while let Some(&cursor) = self.cursors.get(at) {
                if cursor >= len || batch >= QUEUE_BATCH_MAX {
                    break;
                }
                let entry = host.entry(queue, cursor)?;
                let deadline = self.deadline_ms(host, queue, cursor, &entry);
                // Read the clock after the entry: its store time was read before it was
                // written, so a fresh entry can never look like it was stored in the future.
                let now = host.now_ms();
                if deadline > now {
                    next_due_ms = Some(next_due_ms.map_or(deadline, |d| d.min(deadline)));
                    break;
                }
                log_end = Some(host.release(queue, cursor, &entry, now)?);
                if let Some(slot) = self.cursors.get_mut(at) {
                    *slot = cursor + 1;
                }
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
}
