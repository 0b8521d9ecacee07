//! Retention: deletes the oldest commit-log segments that are no longer needed, and the
//! consume-queue files that only pointed into them.
//!
//! A segment is *pinned* while it holds a delayed message not yet consumed from its timed
//! queue, or data a registered consumer group (one that has committed an offset) has not
//! read yet: a message of its own, or a message of its that a later delivery record re-posted
//! (a delivered message's content stays in its original record). An unpinned segment goes when
//! its records are older than `retention_ms` or the segments exceed `disk_usage_soft_bytes`;
//! a pinned one only when they exceed `disk_usage_hard_bytes`, and then every message lost is
//! counted and reported. Segments go oldest first, so the log stays one contiguous range; the
//! segment being written is never deleted.

use std::sync::atomic::Ordering;

use super::Inner;
use crate::commit_log::record::{decode_header, HEADER_BYTES};
use crate::commit_log::segment::Segment;
use crate::consume_queue::{ConsumeQueue, QueueKey, QueueRef};
use crate::dispatch::SegmentRefs;
use crate::error::Result;

impl Inner {
    /// One retention pass (run by the flusher).
    pub(super) fn retain(&self) -> Result<()> {
        let options = &self.options;
        let (retention_ms, soft, hard) = (
            options.retention_ms,
            options.disk_usage_soft_bytes,
            options.disk_usage_hard_bytes,
        );
        if retention_ms.is_none() && soft.is_none() && hard.is_none() {
            return Ok(());
        }
        let segments = self.log.segments();
        let mut remaining: u64 = segments.iter().map(|s| s.len_bytes()).sum();
        let now_ms = self.clock.now_ms();
        let first_unconsumed = self.first_unconsumed_offset()?;
        // Only segments before the last checkpoint's last record: they are fully dispatched
        // (their references are complete), and the checkpoint a crash falls back to names no
        // deleted record.
        let dispatched = self.checkpointed_last_record.load(Ordering::Acquire);
        let mut retire = 0;
        let mut forced_lost = 0;
        for pair in segments.windows(2) {
            let [segment, next] = pair else { break };
            if segment.end_offset() > dispatched {
                break;
            }
            let refs = self.progress.cursors.refs_of(segment.base_offset);
            let read_up_to = segment
                .end_offset()
                .saturating_sub(1)
                .max(refs.last_delivery_offset);
            let pinned = refs.pending > 0 || first_unconsumed <= read_up_to;
            let over_soft = soft.is_some_and(|limit| remaining > limit);
            let over_hard = hard.is_some_and(|limit| remaining > limit);
            let expired = retention_ms.is_some_and(|retention_ms| {
                // Every record of a segment is older than the next segment's first record.
                self.first_store_ms(next)
                    .is_some_and(|newer_ms| newer_ms.saturating_add(retention_ms) <= now_ms)
            });
            let goes = if pinned {
                over_hard
            } else {
                expired || over_soft || over_hard
            };
            if !goes {
                break;
            }
            if pinned {
                forced_lost += self.messages_lost_with(segment, &refs)?;
            }
            retire += 1;
            remaining = remaining.saturating_sub(segment.len_bytes());
        }
        if retire == 0 {
            return Ok(());
        }
        // Counted before the segments go, so no one sees them gone but not counted.
        self.forced_deleted
            .fetch_add(forced_lost, Ordering::Relaxed);
        let start = self.log.retire_oldest(retire)?;
        failpoint!("retention.after_retire");
        self.progress.cursors.forget_below(start);
        if forced_lost > 0 {
            eprintln!(
                "delaystore: disk usage above disk_usage_hard_bytes: deleted {retire} segment(s) \
                 below log offset {start} holding {forced_lost} pending or unconsumed message(s)"
            );
        }
        for (key, queue) in self.queues.all() {
            let gone = first_entry_at_or_after(&queue, start);
            let boundary = match key.as_ref().timed() {
                Some(timed) => {
                    // Messages first indexed below `gone` were deleted: so are their
                    // decisions (entries are in log order and a message's first entry points
                    // at the message itself).
                    self.decisions.retire_below(timed, gone)?;
                    // A timed queue keeps what its delivery dispatcher has not consumed (it
                    // discards entries whose records are gone).
                    gone.min(self.progress.cursors.delivered(timed))
                }
                None => gone,
            };
            queue.retire_before(boundary)?;
        }
        Ok(())
    }

    /// The lowest log offset a registered consumer group has still to read (`u64::MAX` when
    /// every group is up to date).
    fn first_unconsumed_offset(&self) -> Result<u64> {
        let mut lowest = u64::MAX;
        for ((_, topic, queue_id), committed) in self.offsets.snapshot() {
            let Some(queue) = self.queues.get(QueueRef::Topic(&topic, queue_id)) else {
                continue;
            };
            let next = committed.max(queue.min_entry());
            if next < queue.entry_count() {
                lowest = lowest.min(queue.get(next)?.log_offset);
            }
        }
        Ok(lowest)
    }

    /// Messages a forced deletion of `segment` loses: its pending delayed messages, and in
    /// each topic queue the entries into it that the most lagging group has not read.
    fn messages_lost_with(&self, segment: &Segment, refs: &SegmentRefs) -> Result<u64> {
        let mut lost = refs.pending;
        let mut lagging: std::collections::HashMap<QueueKey, u64> = Default::default();
        for ((_, topic, queue_id), committed) in self.offsets.snapshot() {
            let key = QueueKey::Topic {
                topic: topic.clone(),
                queue_id,
            };
            let slot = lagging.entry(key).or_insert(u64::MAX);
            *slot = (*slot).min(committed);
        }
        for (key, committed) in lagging {
            let Some(queue) = self.queues.get(key.as_ref()) else {
                continue;
            };
            let from = committed.max(first_entry_at_or_after(&queue, segment.base_offset));
            let to = first_entry_at_or_after(&queue, segment.end_offset());
            lost += to.saturating_sub(from);
        }
        Ok(lost)
    }

    /// Store time of a segment's first record, if it has one.
    fn first_store_ms(&self, segment: &Segment) -> Option<u64> {
        if segment.base_offset.saturating_add(HEADER_BYTES as u64) > self.log.written_end() {
            return None;
        }
        let mut header = [0u8; HEADER_BYTES];
        segment.file.read_at(0, &mut header).ok()?;
        decode_header(&header, segment.base_offset)
            .ok()
            .map(|h| h.store_ms)
    }
}

/// The first entry of `queue` whose record lies at or after `log_offset` (entries are in log
/// order in every queue); unreadable entries count as after.
pub(super) fn first_entry_at_or_after(queue: &ConsumeQueue, log_offset: u64) -> u64 {
    let (mut lo, mut hi) = (queue.min_entry(), queue.entry_count());
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        match queue.get(mid) {
            Ok(entry) if entry.log_offset < log_offset => lo = mid + 1,
            _ => hi = mid,
        }
    }
    lo
}
