//! The store's side of the delivery dispatcher ([`crate::delivery`]): reads timed-queue
//! entries and writes the record that consumes each released one: a delivery into the target
//! queue, a hop to a lower timer slot, or a discard.

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::Inner;
use crate::commit_log::record::{
    decode_header, decode_record, encode_message, MessageFields, OriginRef, Placement,
    RecordHeader, RecordKind, HEADER_BYTES,
};
use crate::commit_log::Appended;
use crate::consume_queue::entry::Entry;
use crate::consume_queue::TimedQueue;
use crate::decisions::Decision;
use crate::delivery::DeliveryHost;
use crate::error::{DecodeError, Error, Result};
use crate::options::SyncMode;
use crate::timer::{hop_slot, release_ms, slot_for};

/// Whether a message record is the one entry `index` of `queue` was dispatched for: it routes
/// there and carries that queue offset. A timed-queue entry is only a pointer (no checksum): a
/// misdirected write can make it name another valid record, which must not be re-posted.
fn first_indexed_at(header: &RecordHeader, queue: TimedQueue, index: u64) -> bool {
    let routes = match queue {
        TimedQueue::Level(level) => header.delay_level == level,
        TimedQueue::TimerSlot(slot) => {
            header.delay_level == 0 && slot_for(header.due_ms, header.store_ms) == Some(slot)
        }
    };
    header.kind == RecordKind::Message && routes && header.queue_offset == index
}

/// Whether a hop record is the one entry `index` of `queue` was dispatched for.
fn hop_indexed_at(header: &RecordHeader, queue: TimedQueue, index: u64) -> bool {
    let routes = match queue {
        TimedQueue::TimerSlot(slot) => u32::from(slot) == header.queue_id,
        TimedQueue::Level(_) => false,
    };
    header.kind == RecordKind::Hop && routes && header.queue_offset == index
}

impl Inner {
    /// Appends a record without topic or payload other than `body` (a hop or a discard).
    fn append_control(
        &self,
        kind: RecordKind,
        body: &[u8],
        due_ms: u64,
        now_ms: u64,
        place: impl FnOnce(&mut super::Placements, u64) -> (u32, u64),
    ) -> Result<Appended> {
        let mut record = encode_message(&MessageFields {
            kind,
            topic: "",
            queue_id: 0,
            key: "",
            properties: &[],
            body,
            delay_level: 0,
        })
        .map_err(|kind| Error::InvalidMessage {
            reason: kind.to_string(),
        })?;
        self.log.append(&mut record, now_ms, |log_offset| {
            let mut placements = self.placements.lock();
            let store_ms = self.stamp_store_time();
            let (queue_id, queue_offset) = place(&mut placements, store_ms);
            Ok(Placement {
                queue_id,
                log_offset,
                store_ms,
                due_ms,
                queue_offset,
            })
        })
    }

    /// Moves a message due at `due_ms` to the timer slot that fits the time left when the hop
    /// record is stamped.
    fn hop(&self, origin: &OriginRef, due_ms: u64, now_ms: u64) -> Result<u64> {
        let appended = self.append_control(
            RecordKind::Hop,
            &origin.encode(),
            due_ms,
            now_ms,
            |placements, store_ms| {
                let slot = hop_slot(due_ms, store_ms);
                let offset = placements.next_timed_offset(TimedQueue::TimerSlot(slot));
                (u32::from(slot), offset)
            },
        )?;
        failpoint!("delivery.after_hop");
        Ok(appended.end_offset)
    }

    /// Consumes an entry without delivering anything.
    fn discard(&self, origin: &OriginRef, now_ms: u64) -> Result<u64> {
        let appended =
            self.append_control(RecordKind::Discard, &origin.encode(), 0, now_ms, |_, _| {
                (0, 0)
            })?;
        failpoint!("delivery.after_discard");
        Ok(appended.end_offset)
    }

    /// Discards an entry whose record is corrupt: counted and reported, never silent.
    fn discard_corrupt(&self, origin: &OriginRef, err: &Error, now_ms: u64) -> Result<u64> {
        self.undeliverable.fetch_add(1, Ordering::Relaxed);
        eprintln!("delaystore: discarding an undeliverable delayed message: {err}");
        self.discard(origin, now_ms)
    }

    /// The decision recorded for a delayed message, if the record it points at still says so
    /// (a slot may outlive a record that a crash took away: see [`crate::decisions`]).
    pub(super) fn decision(&self, origin: &OriginRef) -> Result<Option<Decision>> {
        let slot = self.decisions.slot(origin.first, origin.first_offset)?;
        if slot == 0 {
            return Ok(None);
        }
        let Some(decision) = Decision::decode(slot) else {
            return self.find_decision_in_log(origin);
        };
        let at = decision.record_offset();
        let in_log = at >= self.log.start_offset()
            && at.saturating_add(HEADER_BYTES as u64) <= self.log.written_end();
        if !in_log {
            return self.find_decision_in_log(origin);
        }
        let bytes = match self.log.read_record(at) {
            Ok(bytes) => bytes,
            Err(Error::Corruption { .. }) => return self.find_decision_in_log(origin),
            Err(err) => return Err(err),
        };
        let Ok(record) = decode_record(&bytes, at) else {
            return self.find_decision_in_log(origin);
        };
        let kind_matches = matches!(
            (decision, record.header.kind),
            (Decision::Delivered(_), RecordKind::Delivery)
                | (Decision::Cancelled(_), RecordKind::Cancel)
        );
        let names_origin =
            OriginRef::decode(record.body).is_ok_and(|o| o.log_offset == origin.log_offset);
        if kind_matches && names_origin {
            return Ok(Some(decision));
        }
        // The slot names a record that is not this message's decision: damaged, or left by a
        // crash that lost its record (R23). Only the log can tell: look for the deciding record.
        self.find_decision_in_log(origin)
    }

    /// Searches the log after a message for the delivery or cancel record that names it (rare:
    /// only when its decision slot does not check out), and repairs the slot if one is found.
    fn find_decision_in_log(&self, origin: &OriginRef) -> Result<Option<Decision>> {
        let mut found = None;
        crate::decisions::scan_log(&self.log, origin.log_offset, |decision, named| {
            if named.log_offset == origin.log_offset {
                found = Some(decision);
            }
            Ok(found.is_some())
        })?;
        match found {
            Some(decision) => self
                .decisions
                .set(origin.first, origin.first_offset, decision)?,
            // The slot is cleared, so the next lookup does not search again.
            None => self.decisions.clear(origin.first, origin.first_offset)?,
        }
        Ok(found)
    }

    /// Appends a cancel record for a pending message and records the decision. The caller
    /// holds the decide lock and has checked there is no decision yet. Returns the log end.
    pub(super) fn cancel_pending(&self, origin: &OriginRef) -> Result<u64> {
        self.decisions.ensure(origin.first, origin.first_offset)?;
        let appended = self.append_control(
            RecordKind::Cancel,
            &origin.encode(),
            0,
            self.clock.now_ms(),
            |_, _| (0, 0),
        )?;
        failpoint!("cancel.after_append");
        self.record_decision(origin, Decision::Cancelled(appended.placement.log_offset));
        self.cancelled.fetch_add(1, Ordering::Relaxed);
        failpoint!("cancel.after_decision");
        Ok(appended.end_offset)
    }

    /// Re-posts the origin's message to its target queue as a delivery record, and records
    /// the decision. The caller holds the decide lock.
    fn deliver(&self, origin: &OriginRef, now_ms: u64) -> Result<u64> {
        if origin.log_offset < self.log.start_offset() {
            // Forced out of the log under disk pressure (counted when deleted).
            return self.discard(origin, now_ms);
        }
        let bytes = match self.read_checked(origin.log_offset) {
            Ok(bytes) => bytes,
            Err(err @ Error::Corruption { .. }) => {
                return self.discard_corrupt(origin, &err, now_ms)
            }
            Err(err) => return Err(err),
        };
        let record = match decode_record(&bytes, origin.log_offset) {
            Ok(record) if first_indexed_at(&record.header, origin.first, origin.first_offset) => {
                record
            }
            Ok(_) => {
                let kind = DecodeError::BadField { field: "origin" };
                let err = self.log.corruption(origin.log_offset, kind);
                return self.discard_corrupt(origin, &err, now_ms);
            }
            Err(kind) => {
                let err = self.log.corruption(origin.log_offset, kind);
                return self.discard_corrupt(origin, &err, now_ms);
            }
        };
        let (topic, queue, due_ms) = (record.topic, record.header.queue_id, record.header.due_ms);
        self.decisions.ensure(origin.first, origin.first_offset)?;
        let queue_count = self.meta.read().queue_count(topic).max(queue + 1);
        let body = origin.encode();
        let level = match origin.source {
            TimedQueue::Level(level) => level,
            TimedQueue::TimerSlot(_) => 0,
        };
        let mut delivery = encode_message(&MessageFields {
            kind: RecordKind::Delivery,
            topic,
            queue_id: queue,
            key: "",
            properties: &[],
            body: &body,
            delay_level: level,
        })
        .map_err(|kind| self.log.corruption(origin.log_offset, kind))?;
        let appended = self.log.append(&mut delivery, now_ms, |log_offset| {
            let queue_offset =
                self.placements
                    .lock()
                    .next_topic_offset(topic, queue, queue_count)?;
            let store_ms = self.stamp_store_time();
            Ok(Placement {
                queue_id: queue,
                log_offset,
                store_ms,
                due_ms,
                queue_offset,
            })
        })?;
        self.record_decision(origin, Decision::Delivered(appended.placement.log_offset));
        failpoint!("delivery.after_repost");
        Ok(appended.end_offset)
    }

    /// Records a decision whose record is appended. Its slot's file exists (the caller ensured
    /// it before appending), so this cannot fail for want of space; if it fails anyway the
    /// error is reported, not returned: the record is in the log, so retrying the decision
    /// would append a second one, and dispatch records the slot from the record soon after.
    fn record_decision(&self, origin: &OriginRef, decision: Decision) {
        if let Err(err) = self
            .decisions
            .set(origin.first, origin.first_offset, decision)
        {
            eprintln!("delaystore: recording a decision failed (dispatch will redo it): {err}");
        }
    }
}

impl Inner {
    /// Delivers a message whose time has come, unless it was cancelled (or, after a crash
    /// that lost its cursor progress but not the delivery, already delivered): then its entry
    /// is discarded, so it is never delivered twice nor after a cancel.
    fn deliver_undecided(&self, origin: &OriginRef, now_ms: u64) -> Result<u64> {
        match self.decision(origin)? {
            Some(_) => self.discard(origin, now_ms),
            None => self.deliver(origin, now_ms),
        }
    }
}

impl DeliveryHost for Inner {
    fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    fn timed_queues(&self) -> &[TimedQueue] {
        &self.timed_queues
    }

    fn log_written_end(&self) -> u64 {
        self.log.written_end()
    }

    fn queue_len(&self, queue: TimedQueue) -> u64 {
        self.queues
            .get(queue.queue_ref())
            .map_or(0, |q| q.entry_count())
    }

    fn entry(&self, queue: TimedQueue, index: u64) -> Result<Entry> {
        match self.queues.get(queue.queue_ref()) {
            Some(cq) => cq.get(index),
            None => Err(Error::Corruption {
                file: crate::consume_queue::queue_dir(&self.dir, queue.queue_ref()),
                offset: 0,
                kind: DecodeError::Truncated {
                    needed: index.saturating_add(1),
                    available: 0,
                },
            }),
        }
    }

    fn delivered(&self, queue: TimedQueue) -> u64 {
        // After retention, a queue rebuilt without a checkpoint may start above a cursor that
        // no surviving record advanced: its entries below the start were consumed.
        let first = self
            .queues
            .get(queue.queue_ref())
            .map_or(0, |q| q.min_entry());
        self.progress.cursors.delivered(queue).max(first)
    }

    fn record_times(&self, queue: TimedQueue, index: u64, entry: &Entry) -> Result<(u64, u64)> {
        let mut header = [0u8; HEADER_BYTES];
        self.log.read_at(entry.log_offset, &mut header)?;
        let header = decode_header(&header, entry.log_offset)
            .map_err(|kind| self.log.corruption(entry.log_offset, kind))?;
        if !first_indexed_at(&header, queue, index) && !hop_indexed_at(&header, queue, index) {
            // A misdirected entry: another record's due time could hold this queue back.
            let kind = DecodeError::BadField {
                field: "timed queue entry",
            };
            return Err(self.log.corruption(entry.log_offset, kind));
        }
        let tag_ms = match queue {
            TimedQueue::Level(_) => header.due_ms,
            TimedQueue::TimerSlot(slot) => release_ms(header.due_ms, slot),
        };
        if tag_ms == entry.time_ms {
            return Ok((header.store_ms, header.due_ms));
        }
        // An entry's time tag follows from the due time of its record: when the two differ,
        // one of them is damaged, and the header alone has no CRC. Believe the record only once
        // its CRC holds; a corrupt one keeps the entry's time (the release then discards it,
        // counted) rather than a rotten due time that could hold the whole queue back.
        let bytes = self.read_checked(entry.log_offset)?;
        decode_record(&bytes, entry.log_offset)
            .map(|record| (record.header.store_ms, record.header.due_ms))
            .map_err(|kind| self.log.corruption(entry.log_offset, kind))
    }

    fn newest_store_ms(&self) -> u64 {
        self.newest_store_ms.load(Ordering::Acquire)
    }

    fn release(&self, queue: TimedQueue, index: u64, entry: &Entry, now_ms: u64) -> Result<u64> {
        // What the entry points at: the delayed message itself (its first queue), or a hop.
        let mut origin = OriginRef {
            log_offset: entry.log_offset,
            record_bytes: entry.record_bytes,
            source: queue,
            source_offset: index,
            first: queue,
            first_offset: index,
        };
        let _decide = self.decide.lock();
        if entry.log_offset < self.log.start_offset() {
            return self.discard(&origin, now_ms);
        }
        let record_end = entry
            .log_offset
            .saturating_add(u64::from(entry.record_bytes));
        if record_end > self.log.written_end() {
            // Dispatch writes entries only for records it has read: this one is damaged. (Read,
            // it would fail as an I/O error and be retried forever, holding its queue back.)
            let kind = DecodeError::Truncated {
                needed: record_end,
                available: self.log.written_end(),
            };
            let err = self.log.corruption(entry.log_offset, kind);
            return self.discard_corrupt(&origin, &err, now_ms);
        }
        if let TimedQueue::Level(_) = queue {
            // The loop released it at its due time (or its jump-corrected deadline).
            return self.deliver_undecided(&origin, now_ms);
        }
        let read = self.read_checked(entry.log_offset).and_then(|bytes| {
            decode_record(&bytes, entry.log_offset)
                .map(|record| (record.header, OriginRef::decode(record.body)))
                .map_err(|kind| self.log.corruption(entry.log_offset, kind))
        });
        let (due_ms, corrupt) = match read {
            Ok((header, _)) if first_indexed_at(&header, queue, index) => (header.due_ms, None),
            Ok((header, Ok(hop))) if hop_indexed_at(&header, queue, index) => {
                origin.log_offset = hop.log_offset;
                origin.record_bytes = hop.record_bytes;
                origin.first = hop.first;
                origin.first_offset = hop.first_offset;
                (header.due_ms, None)
            }
            Ok(_) => {
                let kind = DecodeError::BadField {
                    field: "timer entry",
                };
                (0, Some(self.log.corruption(entry.log_offset, kind)))
            }
            Err(err @ Error::Corruption { .. }) => (0, Some(err)),
            Err(err) => return Err(err),
        };
        if let Some(err) = corrupt {
            return self.discard_corrupt(&origin, &err, now_ms);
        }
        if due_ms > now_ms && self.decision(&origin)?.is_none() {
            self.hop(&origin, due_ms, now_ms)
        } else {
            self.deliver_undecided(&origin, now_ms)
        }
    }

    fn after_round(&self, log_end: u64) -> Result<()> {
        // In sync mode a re-post becomes visible only once durable: sync now rather than at
        // the next flush tick, so delivery is not late by a flush interval.
        if self.options.sync_mode == SyncMode::Sync {
            self.log.wait_durable(log_end)?;
        }
        Ok(())
    }

    fn sleep(&self, generation: u64, timeout: Duration) {
        self.progress.signal.wait_past(generation, timeout);
    }

    fn generation(&self) -> u64 {
        self.progress.signal.generation()
    }

    fn report(&self, what: &str, err: &Error) {
        eprintln!("delaystore: {what}: {err}");
    }

    fn poisoned(&self) -> bool {
        self.log.is_poisoned()
    }
}
