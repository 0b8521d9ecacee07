//! Delayed messages: every record that names one (delivery, hop, cancel, discard) against the
//! timed-queue entries and messages the scan met, each message decided at most once, every
//! timed-queue entry consumed at most once; decision slots against the delivery and cancel
//! records; the segment references dispatch derives for retention.
//!
//! The rules are the store's: a delivery, hop or discard consumes the entry it names (its
//! `source`), which stands for the message it names (the message's own entry in its first
//! queue, or a hop's); a cancel consumes nothing; a delivery or a cancel is the message's one
//! decision, recorded in the slot of its first queue and offset.

use crate::commit_log::record::{OriginRef, RecordKind, RecordView};
use crate::consume_queue::TimedQueue;
use crate::decisions::{Decision, DECISION_FILE_SLOTS};

use super::super::delay_ledger::{Outcome, Slot};
use super::super::delay_state::first_timed_queue;
use super::super::files::StoreFiles;
use super::super::log_scan::RecordAt;
use super::super::problem::{ProblemKind, Severity};
use super::checker::Checker;
use super::timed_queue_name;

impl Checker<'_, '_> {
    /// The delayed-message checks of one record.
    pub(super) fn check_delays(&mut self, at: &RecordAt, record: &RecordView<'_>) {
        let header = &record.header;
        match header.kind {
            RecordKind::Message => {
                if let Some(first) = first_timed_queue(header) {
                    self.sink.report.delayed_messages += 1;
                    self.ledger
                        .add_entry(first, header.queue_offset, at.log_offset);
                    if let Some(refs) = self.segment_refs.get_mut(at.segment) {
                        refs.pending += 1;
                    }
                }
            }
            RecordKind::Filler => {}
            RecordKind::Delivery | RecordKind::Hop | RecordKind::Cancel | RecordKind::Discard => {
                // decode_record checked the body already; this cannot fail for a valid record.
                let Ok(origin) = OriginRef::decode(record.body) else {
                    self.origin_problem(at, "origin reference does not decode".into());
                    return;
                };
                self.check_named(at, header.kind, &origin);
                if header.kind == RecordKind::Hop {
                    if let Ok(slot) = u8::try_from(header.queue_id) {
                        self.ledger.add_entry(
                            TimedQueue::TimerSlot(slot),
                            header.queue_offset,
                            origin.log_offset,
                        );
                    }
                }
                self.count_references(at, header.kind, &origin);
            }
        }
    }

    fn origin_problem(&mut self, at: &RecordAt, detail: String) {
        let path = self.segment_path(at);
        self.sink.add(
            ProblemKind::BadOrigin,
            Severity::Error,
            &path,
            at.file_offset,
            Some(at.log_offset),
            detail,
        );
    }

    /// A record naming a delayed message: the entries it names, the entry it consumes, the
    /// decision it takes.
    fn check_named(&mut self, at: &RecordAt, kind: RecordKind, origin: &OriginRef) {
        let what = super::super::dump::kind_name(kind);
        // The message's own entry in its first queue.
        let first = self.ledger.slot(origin.first, origin.first_offset);
        let known_message = first == Slot::Message(origin.log_offset);
        let first_ok = match first {
            Slot::Message(id) => id == origin.log_offset,
            Slot::Retained => true,
            // A discard settles an entry whose record could not be read.
            Slot::Unknown => kind == RecordKind::Discard,
            Slot::Beyond => false,
        };
        if !first_ok {
            self.origin_problem(
                at,
                format!(
                    "{what} names the message at log offset {} as entry {} of {}, but {}",
                    origin.log_offset,
                    origin.first_offset,
                    timed_queue_name(origin.first),
                    describe(first)
                ),
            );
        }
        let consumes = match kind {
            RecordKind::Delivery | RecordKind::Hop | RecordKind::Discard => true,
            RecordKind::Cancel | RecordKind::Message | RecordKind::Filler => false,
        };
        let mut reported_twice = false;
        let before = self.ledger.outcome(origin.first, origin.first_offset);
        match kind {
            RecordKind::Delivery => {
                self.ledger
                    .decide(origin.first, origin.first_offset, Outcome::Delivered);
                match before {
                    Some(Outcome::Delivered) => {
                        reported_twice = true;
                        self.decision_problem(
                            at,
                            ProblemKind::DuplicateDelivery,
                            origin,
                            "was already delivered",
                        );
                    }
                    Some(Outcome::Cancelled) => self.decision_problem(
                        at,
                        ProblemKind::ConflictingDecision,
                        origin,
                        "is delivered after it was cancelled",
                    ),
                    Some(Outcome::Discarded) | None => {}
                }
            }
            RecordKind::Cancel => {
                self.ledger
                    .decide(origin.first, origin.first_offset, Outcome::Cancelled);
                match before {
                    Some(Outcome::Delivered) => self.decision_problem(
                        at,
                        ProblemKind::ConflictingDecision,
                        origin,
                        "is cancelled after it was delivered",
                    ),
                    Some(Outcome::Cancelled) => self.decision_problem(
                        at,
                        ProblemKind::ConflictingDecision,
                        origin,
                        "is cancelled a second time",
                    ),
                    Some(Outcome::Discarded) | None => {}
                }
            }
            RecordKind::Discard => {
                if before.is_none() {
                    self.ledger
                        .decide(origin.first, origin.first_offset, Outcome::Discarded);
                    if known_message {
                        self.sink.report.discarded_messages += 1;
                    }
                }
            }
            RecordKind::Hop | RecordKind::Message | RecordKind::Filler => {}
        }
        if known_message && before.is_none() && kind != RecordKind::Hop {
            self.settled_messages += 1;
            if kind == RecordKind::Cancel {
                self.sink.report.cancelled_messages += 1;
            }
        }
        if consumes {
            self.check_consumed(at, kind, origin, reported_twice);
        }
        match kind {
            RecordKind::Delivery => self.check_slot(at, origin, Decision::Delivered(at.log_offset)),
            RecordKind::Cancel => self.check_slot(at, origin, Decision::Cancelled(at.log_offset)),
            RecordKind::Hop | RecordKind::Discard | RecordKind::Message | RecordKind::Filler => {}
        }
    }

    /// The entry a delivery, hop or discard consumes stands for its message, once.
    fn check_consumed(
        &mut self,
        at: &RecordAt,
        kind: RecordKind,
        origin: &OriginRef,
        reported_twice: bool,
    ) {
        let what = super::super::dump::kind_name(kind);
        let source = self.ledger.slot(origin.source, origin.source_offset);
        let source_ok = match source {
            Slot::Message(id) => id == origin.log_offset,
            Slot::Retained => true,
            Slot::Unknown => kind == RecordKind::Discard,
            Slot::Beyond => false,
        };
        let from_first = origin.source == origin.first;
        if !source_ok || (from_first && origin.source_offset != origin.first_offset) {
            self.origin_problem(
                at,
                format!(
                    "{what} consumes entry {} of {} for the message at log offset {}, but {}",
                    origin.source_offset,
                    timed_queue_name(origin.source),
                    origin.log_offset,
                    if source_ok {
                        format!(
                            "that is its first queue, where it is entry {}",
                            origin.first_offset
                        )
                    } else {
                        describe(source)
                    }
                ),
            );
        }
        let twice = self.ledger.consume(origin.source, origin.source_offset);
        if twice && !reported_twice {
            let path = self.segment_path(at);
            self.sink.add(
                ProblemKind::EntryConsumedTwice,
                Severity::Error,
                &path,
                at.file_offset,
                Some(at.log_offset),
                format!(
                    "{what} consumes entry {} of {} (message at log offset {}), which an earlier \
                     record consumed already",
                    origin.source_offset,
                    timed_queue_name(origin.source),
                    origin.log_offset
                ),
            );
        }
    }

    fn decision_problem(
        &mut self,
        at: &RecordAt,
        kind: ProblemKind,
        origin: &OriginRef,
        what: &str,
    ) {
        let path = self.segment_path(at);
        self.sink.add(
            kind,
            Severity::Error,
            &path,
            at.file_offset,
            Some(at.log_offset),
            format!(
                "the message at log offset {} (entry {} of {}) {what}",
                origin.log_offset,
                origin.first_offset,
                timed_queue_name(origin.first)
            ),
        );
    }

    /// The decision slot of a delivery or cancel names it (unless retention deleted the
    /// message, and with it its decision file). A slot naming a later record is
    /// checked with that record; one that is missing or names another record is an error
    /// below the checkpoint (slots are synced before each checkpoint: a released entry of a
    /// cancelled message would be delivered), a warning after it (recovery's replay writes
    /// it again).
    fn check_slot(&mut self, at: &RecordAt, origin: &OriginRef, expected: Decision) {
        let found = self.decisions.get(origin.first, origin.first_offset);
        let confirmed = matches!(found, Ok(Some(found)) if found == expected);
        let later = matches!(found, Ok(Some(found)) if found.record_offset() > at.log_offset);
        if confirmed {
            let file_first = origin.first_offset - origin.first_offset % DECISION_FILE_SLOTS;
            let bit = origin.first_offset % DECISION_FILE_SLOTS;
            let bits = self
                .confirmed_slots
                .entry((origin.first.to_id(), file_first))
                .or_insert_with(|| vec![0; (DECISION_FILE_SLOTS / 64) as usize]);
            if let Some(word) = bits.get_mut((bit / 64) as usize) {
                *word |= 1 << (bit % 64);
            }
            return;
        }
        if later || origin.log_offset < self.log_start {
            // Retention deletes the decision files of the messages it deleted.
            return;
        }
        let covered = self.covered(at.log_offset);
        let (severity, consequence) = if covered {
            (
                Severity::Error,
                "it was synced before the checkpoint; without it the store may deliver the \
                 message again, or deliver it although it was cancelled",
            )
        } else {
            (
                Severity::Warning,
                "the record is after the checkpoint: recovery's replay writes the slot",
            )
        };
        let file = self
            .dir
            .join(crate::decisions::DECISIONS_DIR)
            .join(origin.first.to_id().to_string())
            .join(crate::naming::offset_file_name(
                origin.first_offset - origin.first_offset % DECISION_FILE_SLOTS,
            ));
        let found = match found {
            Ok(None) => "empty".to_owned(),
            Ok(Some(decision)) => describe_decision(decision),
            Err(err) => format!("unreadable ({err})"),
        };
        self.sink.add(
            ProblemKind::DecisionSlotMissing,
            severity,
            &file,
            (origin.first_offset % DECISION_FILE_SLOTS) * 8,
            Some(at.log_offset),
            format!(
                "the decision slot of the message at log offset {} (entry {} of {}) is {found}, \
                 not {}: {consequence}",
                origin.log_offset,
                origin.first_offset,
                timed_queue_name(origin.first),
                describe_decision(expected)
            ),
        );
    }

    /// Retention references, as dispatch counts them: a delayed message adds one to its
    /// segment's pending count, its delivery or discard removes it (saturating, in log order)
    /// and a delivery moves the segment's newest delivery.
    fn count_references(&mut self, at: &RecordAt, kind: RecordKind, origin: &OriginRef) {
        let segments = &self.files.segments;
        let index = segments.partition_point(|s| s.base_offset <= origin.log_offset);
        let Some(index) = index.checked_sub(1) else {
            return;
        };
        let Some(refs) = self.segment_refs.get_mut(index) else {
            return;
        };
        match kind {
            RecordKind::Delivery => {
                refs.pending = refs.pending.saturating_sub(1);
                refs.last_delivery_offset = refs.last_delivery_offset.max(at.log_offset);
            }
            RecordKind::Discard => refs.pending = refs.pending.saturating_sub(1),
            RecordKind::Hop | RecordKind::Cancel | RecordKind::Message | RecordKind::Filler => {}
        }
    }

    /// Every slot set in the decision files that no delivery or cancel record confirmed: it
    /// outlived its record (a crash lost the record after the slot was written, and the offset
    /// may since hold another record). Readers check the record a slot points at and ignore
    /// such a slot, so it is a warning. Slots of messages retention deleted, or pointing below
    /// the log's start, are not checked.
    pub(super) fn check_decision_files(&mut self, files: &StoreFiles) {
        for file in &files.decisions {
            if file.first_slot % DECISION_FILE_SLOTS != 0 {
                self.sink.add(
                    ProblemKind::StrangeFile,
                    Severity::Warning,
                    &file.path,
                    0,
                    None,
                    format!(
                        "a decision file must start at a multiple of {DECISION_FILE_SLOTS} \
                         slots: never read by the store"
                    ),
                );
                continue;
            }
            let confirmed = self
                .confirmed_slots
                .get(&(file.queue.to_id(), file.first_slot))
                .cloned()
                .unwrap_or_default();
            let slots = (file.len_bytes / 8).min(DECISION_FILE_SLOTS);
            for bit in 0..slots {
                let index = file.first_slot + bit;
                let found = match self.decisions.get(file.queue, index) {
                    Ok(Some(found)) => found,
                    Ok(None) => continue,
                    Err(err) => {
                        self.sink.add(
                            ProblemKind::DecisionSlotStale,
                            Severity::Warning,
                            &file.path,
                            bit * 8,
                            None,
                            format!("cannot be read: {err}"),
                        );
                        break;
                    }
                };
                self.sink.report.decision_slots += 1;
                let is_confirmed = confirmed
                    .get((bit / 64) as usize)
                    .is_some_and(|w| w & (1 << (bit % 64)) != 0);
                let message_deleted = self.ledger.slot(file.queue, index) == Slot::Retained;
                if is_confirmed || message_deleted || found.record_offset() < self.log_start {
                    continue;
                }
                self.sink.add(
                    ProblemKind::DecisionSlotStale,
                    Severity::Warning,
                    &file.path,
                    bit * 8,
                    Some(found.record_offset()),
                    format!(
                        "the slot of entry {index} of {} says {}, but no such record names that \
                         message: the store ignores the slot (it outlived its record in a crash)",
                        timed_queue_name(file.queue),
                        describe_decision(found)
                    ),
                );
            }
        }
    }
}

fn describe(slot: Slot) -> String {
    match slot {
        Slot::Message(id) => format!("that entry stands for the message at log offset {id}"),
        Slot::Retained => "that entry was deleted by retention".into(),
        Slot::Unknown => "no valid record holds that entry".into(),
        Slot::Beyond => "no record made that entry yet".into(),
    }
}

fn describe_decision(decision: Decision) -> String {
    match decision {
        Decision::Delivered(at) => format!("delivered by the record at log offset {at}"),
        Decision::Cancelled(at) => format!("cancelled by the record at log offset {at}"),
    }
}
