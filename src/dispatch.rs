//! Dispatch: tails the commit log and appends one consume-queue entry per message, delivery
//! and hop record; delivery, hop and discard records also advance the delivery cursor of the
//! timed queue whose entry they consumed.
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
use crate::consume_queue::{ConsumeQueues, QueueKey, QueueRef, TimedQueue};
use crate::decisions::{Decision, Decisions};
use crate::error::{DecodeError, Result};
use crate::signal::Signal;
use crate::timer::{release_ms, slot_for};
use crate::topic::topic_name_problem;
use std::collections::BTreeMap;

/// Bytes of log dispatched per batch before the batch lock is released.
const BATCH_BYTES_MAX: u64 = 4 * 1024 * 1024;

/// The consume queue a record belongs to, or `None` for records that are not indexed. A
/// message is indexed in its delay level's queue, in the timer slot its due time and store
/// time select, or (not delayed, or due when stored) in its topic queue.
pub fn dispatch_target<'a>(header: &RecordHeader, topic: &'a str) -> Option<QueueRef<'a>> {
    match header.kind {
        RecordKind::Filler | RecordKind::Cancel | RecordKind::Discard => None,
        RecordKind::Hop => u8::try_from(header.queue_id).ok().map(QueueRef::TimerSlot),
        RecordKind::Message if header.delay_level > 0 => {
            Some(QueueRef::DelayLevel(header.delay_level))
        }
        RecordKind::Message => match slot_for(header.due_ms, header.store_ms) {
            Some(slot) => Some(QueueRef::TimerSlot(slot)),
            None => Some(QueueRef::Topic(topic, header.queue_id)),
        },
        RecordKind::Delivery => Some(QueueRef::Topic(topic, header.queue_id)),
    }
}

/// How far each timed queue has been consumed: entries of queue `q` below `delivered(q)` have
/// been delivered, hopped or discarded (a record naming them is in the log). Derived only from
/// those records, by dispatch, so recovery recomputes it from the log and the checkpoint
/// snapshots it together with the queue counts.
///
/// It also keeps, per commit-log segment, what retention must not delete under it (see
/// [`SegmentRefs`]), derived the same way and snapshotted with the cursors.
#[derive(Debug)]
pub struct DeliveryCursors {
    delivered: Vec<AtomicU64>,
    segments: Mutex<BTreeMap<u64, SegmentRefs>>,
}

/// What keeps a commit-log segment from retention, by segment base offset.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SegmentRefs {
    /// Delayed messages stored in the segment whose timed-queue entry is not consumed yet
    /// (neither delivered nor discarded): their records must stay.
    pub pending: u64,
    /// Log offset of the newest delivery record that re-posted a message stored in the
    /// segment (0 = none): until consumers have read past it, the content must stay.
    pub last_delivery_offset: u64,
}

/// Number of timed-queue ids (`0..512`, see [`TimedQueue::to_id`]).
const TIMED_ID_COUNT: usize = 512;

impl Default for DeliveryCursors {
    fn default() -> Self {
        DeliveryCursors {
            delivered: (0..TIMED_ID_COUNT).map(|_| AtomicU64::new(0)).collect(),
            segments: Mutex::new(BTreeMap::new()),
        }
    }
}

impl DeliveryCursors {
    /// Cursors starting from a checkpoint's lists of (timed-queue id, cursor) and of
    /// (segment base, references).
    pub fn from_lists(list: &[(u16, u64)], segments: &[(u64, SegmentRefs)]) -> Self {
        let cursors = DeliveryCursors::default();
        for &(id, delivered) in list {
            if let Some(queue) = TimedQueue::from_id(id) {
                cursors.advance(queue, delivered);
            }
        }
        cursors.segments.lock().extend(segments.iter().copied());
        cursors
    }

    /// The references of every segment that has any.
    pub fn segment_refs(&self) -> Vec<(u64, SegmentRefs)> {
        self.segments
            .lock()
            .iter()
            .filter(|(_, refs)| **refs != SegmentRefs::default())
            .map(|(base, refs)| (*base, *refs))
            .collect()
    }

    /// The references of one segment.
    pub fn refs_of(&self, base: u64) -> SegmentRefs {
        self.segments.lock().get(&base).copied().unwrap_or_default()
    }

    /// Forgets segments below `start` (retired).
    pub fn forget_below(&self, start: u64) {
        self.segments.lock().retain(|base, _| *base >= start);
    }

    fn update(&self, base: Option<u64>, change: impl FnOnce(&mut SegmentRefs)) {
        if let Some(base) = base {
            change(self.segments.lock().entry(base).or_default());
        }
    }

    /// Entries of `queue` below this have been consumed.
    pub fn delivered(&self, queue: TimedQueue) -> u64 {
        self.delivered
            .get(usize::from(queue.to_id()))
            .map_or(0, |c| c.load(Ordering::Acquire))
    }

    /// Moves `queue`'s cursor up to `delivered` (never down).
    pub fn advance(&self, queue: TimedQueue, delivered: u64) {
        if let Some(cursor) = self.delivered.get(usize::from(queue.to_id())) {
            cursor.fetch_max(delivered, Ordering::AcqRel);
        }
    }

    /// Every non-zero cursor, by timed-queue id.
    pub fn to_list(&self) -> Vec<(u16, u64)> {
        (0..TIMED_ID_COUNT as u16)
            .filter_map(TimedQueue::from_id)
            .map(|queue| (queue.to_id(), self.delivered(queue)))
            .filter(|(_, delivered)| *delivered > 0)
            .collect()
    }
}

/// The entry a record gets in `target` (from [`dispatch_target`]). The time tag is when the
/// delivery dispatcher may take the entry: the due time in a delay-level queue, the start of
/// the due time's granule in a timer slot; in a topic queue it is the time the message became
/// visible there: its store time, or for a delivered message the delivery time.
pub fn entry_for(header: &RecordHeader, target: QueueRef<'_>) -> Entry {
    Entry {
        log_offset: header.log_offset,
        record_bytes: header.total_bytes,
        time_ms: match target {
            QueueRef::DelayLevel(_) => header.due_ms,
            QueueRef::TimerSlot(slot) => release_ms(header.due_ms, slot),
            QueueRef::Topic(..) => header.store_ms,
        },
    }
}

/// Progress of dispatching, shared by the dispatcher and whoever writes checkpoints.
#[derive(Debug, Default)]
pub struct DispatchProgress {
    /// Consumed counts per timed queue, as far as dispatched.
    pub cursors: DeliveryCursors,
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
    pub fn new(log_offset: u64, last_record_offset: u64, cursors: DeliveryCursors) -> Self {
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
    pub fn dispatch_to(
        &self,
        log: &CommitLog,
        queues: &ConsumeQueues,
        decisions: &Decisions,
        limit: u64,
    ) -> Result<()> {
        while self.dispatched_end() < limit {
            let _batch = self.batch.lock();
            let from = self.dispatched_end();
            let to = limit.min(from.saturating_add(BATCH_BYTES_MAX));
            let done = dispatch_range(log, queues, decisions, &self.cursors, from, to, None)?;
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
    /// Offset of the last record handled, fillers aside.
    pub last_record_offset: Option<u64>,
    /// Entries appended.
    pub entries: u64,
}

/// Appends the entries of every record starting in `[from, to)`. Records whose entry is
/// already present (queue offset below the queue's count) are skipped, so replaying a range is
/// idempotent. With `only`, entries go only to those queues (rebuilding damaged ones).
/// Delivery, hop and discard records advance their source queue's cursor; delivery and cancel
/// records record their decision.
pub fn dispatch_range(
    log: &CommitLog,
    queues: &ConsumeQueues,
    decisions: &Decisions,
    cursors: &DeliveryCursors,
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
            .filter(|t| !header.kind.has_topic() || topic_name_problem(t).is_none())
            .ok_or_else(|| log.corruption(pos, DecodeError::BadField { field: "topic" }))?;
        // Segment references count each record once: in the live path and in recovery's
        // replay from the checkpoint (which holds the counts below it), not when rebuilding.
        let counting = only.is_none();
        if let Some(target) = dispatch_target(&header, topic) {
            if counting && target.timed().is_some() && header.kind == RecordKind::Message {
                cursors.update(log.segment_base_for(pos), |refs| refs.pending += 1);
            }
            let wanted = only.is_none_or(|set| set.contains(&target.to_key()));
            if wanted {
                let queue = queues.get_or_create(target)?;
                if log.start_offset() > 0 {
                    queue.start_at(header.queue_offset);
                }
                if header.queue_offset >= queue.entry_count() {
                    queue.append(header.queue_offset, &entry_for(&header, target))?;
                    entries += 1;
                }
            }
        }
        // Every record but a filler is one a checkpoint may end after: also a cancel or a
        // discard, which index nothing (a checkpoint ending after one once named the record
        // before it and was rejected by recovery).
        if header.kind != RecordKind::Filler {
            last = Some(pos);
        }
        let names_origin = match header.kind {
            RecordKind::Delivery | RecordKind::Hop | RecordKind::Discard | RecordKind::Cancel => {
                true
            }
            RecordKind::Message | RecordKind::Filler => false,
        };
        if names_origin {
            let mut body = [0u8; ORIGIN_REF_BYTES];
            let at = pos + HEADER_BYTES as u64 + u64::from(header.topic_bytes);
            log.read_at(at, &mut body)?;
            let origin = OriginRef::decode(&body).map_err(|kind| log.corruption(pos, kind))?;
            let decision = match header.kind {
                RecordKind::Delivery => Some(Decision::Delivered(pos)),
                RecordKind::Cancel => Some(Decision::Cancelled(pos)),
                RecordKind::Hop
                | RecordKind::Discard
                | RecordKind::Message
                | RecordKind::Filler => None,
            };
            if let Some(decision) = decision {
                decisions.set(origin.first, origin.first_offset, decision)?;
            }
            if header.kind != RecordKind::Cancel {
                cursors.advance(origin.source, origin.source_offset.saturating_add(1));
            }
            if counting {
                let base = log.segment_base_for(origin.log_offset);
                match header.kind {
                    RecordKind::Delivery => cursors.update(base, |refs| {
                        refs.pending = refs.pending.saturating_sub(1);
                        refs.last_delivery_offset = refs.last_delivery_offset.max(pos);
                    }),
                    RecordKind::Discard => {
                        cursors.update(base, |refs| refs.pending = refs.pending.saturating_sub(1))
                    }
                    RecordKind::Hop
                    | RecordKind::Cancel
                    | RecordKind::Message
                    | RecordKind::Filler => {}
                }
            }
        }
        pos += u64::from(header.total_bytes);
    }
    Ok(Dispatched {
        end_offset: pos,
        last_record_offset: last,
        entries,
    })
}
