//! Dispatch: tails the commit log and appends one consume-queue entry per message record.
//!
//! The same [`dispatch_range`] serves the live dispatcher thread and recovery's replay, so a
//! queue rebuilt after a crash is byte-for-byte what the live path would have written. It reads
//! records trusted to be complete (below the written end, or validated by recovery's scan).

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::commit_log::record::{
    decode_header, OriginRef, RecordHeader, RecordKind, HEADER_BYTES, ORIGIN_REF_BYTES,
};
use crate::commit_log::CommitLog;
use crate::consume_queue::entry::Entry;
use crate::consume_queue::{ConsumeQueues, QueueKey, QueueRef};
use crate::error::{DecodeError, Result};
use crate::signal::Signal;
use crate::topic::topic_name_problem;

/// Bytes of log dispatched per batch before the batch lock is released.
const BATCH_BYTES_MAX: u64 = 4 * 1024 * 1024;

/// The consume queue a record belongs to, or `None` for records that are not indexed.
pub fn dispatch_target<'a>(header: &RecordHeader, topic: &'a str) -> Option<QueueRef<'a>> {
    match header.kind {
        RecordKind::Filler => None,
        RecordKind::Message if header.delay_level > 0 => {
            Some(QueueRef::DelayLevel(header.delay_level))
        }
        RecordKind::Message | RecordKind::Delivery => Some(QueueRef::Topic(topic, header.queue_id)),
    }
}

/// How far each delay level has been delivered: level `L`'s entries below `delivered(L)` have
/// been re-posted (a delivery record is in the log). Derived only from delivery records, by
/// dispatch, so recovery recomputes it from the log and the checkpoint snapshots it together
/// with the queue counts.
#[derive(Debug)]
pub struct LevelCursors {
    delivered: Vec<AtomicU64>,
}

impl Default for LevelCursors {
    fn default() -> Self {
        LevelCursors {
            delivered: (0..=u8::MAX).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

impl LevelCursors {
    /// Cursors starting from a checkpoint's list.
    pub fn from_list(list: &[(u8, u64)]) -> Self {
        let cursors = LevelCursors::default();
        for &(level, delivered) in list {
            cursors.advance(level, delivered);
        }
        cursors
    }

    /// Entries of `level` below this have been delivered.
    pub fn delivered(&self, level: u8) -> u64 {
        self.delivered
            .get(usize::from(level))
            .map_or(0, |c| c.load(Ordering::Acquire))
    }

    /// Moves `level`'s cursor up to `delivered` (never down).
    pub fn advance(&self, level: u8, delivered: u64) {
        if let Some(cursor) = self.delivered.get(usize::from(level)) {
            cursor.fetch_max(delivered, Ordering::AcqRel);
        }
    }

    /// Every non-zero cursor.
    pub fn to_list(&self) -> Vec<(u8, u64)> {
        (1..=u8::MAX)
            .map(|level| (level, self.delivered(level)))
            .filter(|(_, delivered)| *delivered > 0)
            .collect()
    }
}

/// The entry a record gets in its queue. The time tag is the due time in a delay-level queue
/// (the delivery dispatcher compares it with the clock) and, in a topic queue, the time the
/// message became visible there: its store time, or for a delivered message the delivery time.
pub fn entry_for(header: &RecordHeader) -> Entry {
    let in_level_queue = header.kind == RecordKind::Message && header.delay_level > 0;
    Entry {
        log_offset: header.log_offset,
        record_bytes: header.total_bytes,
        time_ms: if in_level_queue {
            header.due_ms
        } else {
            header.store_ms
        },
    }
}

/// Progress of dispatching, shared by the dispatcher and whoever writes checkpoints.
#[derive(Debug, Default)]
pub struct DispatchProgress {
    /// Delivered counts per level, as far as dispatched.
    pub cursors: LevelCursors,
    /// Records below this log offset have their entries written.
    dispatched_end: AtomicU64,
    /// Offset of the last record dispatched.
    last_record_offset: AtomicU64,
    /// Held while a batch is dispatched, so a checkpoint sees queue counts that match
    /// `dispatched_end` exactly.
    pub batch: Mutex<()>,
    /// Notified after each batch (consumers waiting for new entries sleep on it).
    pub signal: Arc<Signal>,
}

impl DispatchProgress {
    /// Progress starting at `log_offset`.
    pub fn new(log_offset: u64, last_record_offset: u64, cursors: LevelCursors) -> Self {
        let progress = DispatchProgress {
            cursors,
            ..DispatchProgress::default()
        };
        progress.dispatched_end.store(log_offset, Ordering::Release);
        progress
            .last_record_offset
            .store(last_record_offset, Ordering::Release);
        progress
    }

    /// Records below this offset are dispatched.
    pub fn dispatched_end(&self) -> u64 {
        self.dispatched_end.load(Ordering::Acquire)
    }

    /// Offset of the last record dispatched.
    pub fn last_record_offset(&self) -> u64 {
        self.last_record_offset.load(Ordering::Acquire)
    }

    /// Dispatches records from the current end up to `limit` (in batches), then notifies.
    pub fn dispatch_to(&self, log: &CommitLog, queues: &ConsumeQueues, limit: u64) -> Result<()> {
        while self.dispatched_end() < limit {
            let _batch = self.batch.lock();
            let from = self.dispatched_end();
            let to = limit.min(from.saturating_add(BATCH_BYTES_MAX));
            let done = dispatch_range(log, queues, &self.cursors, from, to, None)?;
            failpoint!("dispatch.after_batch");
            if let Some(last) = done.last_record_offset {
                self.last_record_offset.store(last, Ordering::Release);
            }
            self.dispatched_end
                .store(done.end_offset, Ordering::Release);
            drop(_batch);
            self.signal.notify();
            if done.end_offset == from {
                break;
            }
        }
        Ok(())
    }
}

/// What [`dispatch_range`] got through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dispatched {
    /// Log offset just past the last record handled (>= `to` once a record crosses it).
    pub end_offset: u64,
    /// Offset of the last record handled.
    pub last_record_offset: Option<u64>,
    /// Entries appended.
    pub entries: u64,
}

/// Appends the entries of every record starting in `[from, to)`. Records whose entry is
/// already present (queue offset below the queue's count) are skipped, so replaying a range is
/// idempotent. With `only`, entries go only to those queues (rebuilding damaged ones).
/// Delivery records advance their level's cursor.
pub fn dispatch_range(
    log: &CommitLog,
    queues: &ConsumeQueues,
    cursors: &LevelCursors,
    from: u64,
    to: u64,
    only: Option<&HashSet<QueueKey>>,
) -> Result<Dispatched> {
    let mut pos = from;
    let mut last = None;
    let mut entries = 0;
    let mut header_buf = [0u8; HEADER_BYTES];
    let mut topic_buf = Vec::with_capacity(128);
    while pos < to {
        log.read_at(pos, &mut header_buf)?;
        let header = decode_header(&header_buf, pos).map_err(|kind| log.corruption(pos, kind))?;
        topic_buf.resize(usize::from(header.topic_bytes), 0);
        log.read_at(pos + HEADER_BYTES as u64, &mut topic_buf)?;
        let topic = std::str::from_utf8(&topic_buf)
            .ok()
            .filter(|t| header.kind == RecordKind::Filler || topic_name_problem(t).is_none())
            .ok_or_else(|| log.corruption(pos, DecodeError::BadField { field: "topic" }))?;
        if let Some(target) = dispatch_target(&header, topic) {
            let wanted = only.is_none_or(|set| set.contains(&target.to_key()));
            if wanted {
                let queue = queues.get_or_create(target)?;
                if header.queue_offset >= queue.entry_count() {
                    queue.append(header.queue_offset, &entry_for(&header))?;
                    entries += 1;
                }
            }
            last = Some(pos);
        }
        if header.kind == RecordKind::Delivery {
            let mut body = [0u8; ORIGIN_REF_BYTES];
            let at = pos + HEADER_BYTES as u64 + u64::from(header.topic_bytes);
            log.read_at(at, &mut body)?;
            let origin = OriginRef::decode(&body).map_err(|kind| log.corruption(pos, kind))?;
            cursors.advance(
                header.delay_level,
                origin.level_queue_offset.saturating_add(1),
            );
        }
        pos += u64::from(header.total_bytes);
    }
    Ok(Dispatched {
        end_offset: pos,
        last_record_offset: last,
        entries,
    })
}
