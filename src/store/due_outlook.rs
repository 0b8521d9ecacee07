//! The due outlook: how many pending delayed messages fall due in each of the next seconds,
//! for admission control ("can I schedule another 100k for 12:00:00?"), and how late the
//! oldest overdue one is.
//!
//! Read from the timed queues only: each queue is scanned from its delivery cursor while its
//! entries' release times lie inside the window (levels are in due order, timer slots in
//! release order, and a release time is never after the due time), reading one record header
//! per timer entry for its exact due time. The scan is bounded by [`OUTLOOK_ENTRIES_MAX`];
//! beyond it the outlook says it is truncated.

use super::Inner;
use crate::commit_log::record::{decode_header, HEADER_BYTES};
use crate::consume_queue::TimedQueue;

/// Seconds the outlook covers.
pub const OUTLOOK_SECONDS: usize = 60;
/// Most queue entries one outlook reads.
pub const OUTLOOK_ENTRIES_MAX: u64 = 200_000;

/// Pending delayed messages by when they fall due.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DueOutlook {
    /// Element `i`: messages due in `[now + i s, now + (i + 1) s)`.
    pub due_per_second: Vec<u64>,
    /// Messages already due and not yet delivered.
    pub overdue: u64,
    /// How long the oldest overdue message has been due, in ms (0 if none).
    pub delivery_lag_ms: u64,
    /// Whether the scan stopped at [`OUTLOOK_ENTRIES_MAX`] entries (counts are then low).
    pub truncated: bool,
}

impl Inner {
    /// The due outlook at the store clock's now.
    pub(super) fn due_outlook(&self) -> DueOutlook {
        let now_ms = self.clock.now_ms();
        let window_end_ms = now_ms.saturating_add(OUTLOOK_SECONDS as u64 * 1000);
        let mut outlook = DueOutlook {
            due_per_second: vec![0; OUTLOOK_SECONDS],
            ..DueOutlook::default()
        };
        let mut budget = OUTLOOK_ENTRIES_MAX;
        for &timed in &self.timed_queues {
            let Some(queue) = self.queues.get(timed.queue_ref()) else {
                continue;
            };
            let mut index = self.progress.cursors.delivered(timed);
            while index < queue.entry_count() {
                if budget == 0 {
                    outlook.truncated = true;
                    return outlook;
                }
                budget -= 1;
                let Ok(entry) = queue.get(index) else { break };
                if entry.time_ms >= window_end_ms {
                    break;
                }
                let due_ms = match timed {
                    TimedQueue::Level(_) => Some(entry.time_ms),
                    TimedQueue::TimerSlot(_) => self.due_ms_of(entry.log_offset),
                };
                if let Some(due_ms) = due_ms {
                    if due_ms <= now_ms {
                        outlook.overdue += 1;
                        outlook.delivery_lag_ms = outlook.delivery_lag_ms.max(now_ms - due_ms);
                    } else if let Some(slot) = usize::try_from((due_ms - now_ms) / 1000)
                        .ok()
                        .and_then(|second| outlook.due_per_second.get_mut(second))
                    {
                        *slot += 1;
                    }
                }
                index += 1;
            }
        }
        outlook
    }

    /// The due time a timer entry's record carries (a message or a hop).
    fn due_ms_of(&self, log_offset: u64) -> Option<u64> {
        let mut header = [0u8; HEADER_BYTES];
        self.log.read_at(log_offset, &mut header).ok()?;
        decode_header(&header, log_offset).ok().map(|h| h.due_ms)
    }
}
