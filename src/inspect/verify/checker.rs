//! The scan of the log: every record against its queue entry, the checkpoint's boundaries,
//! and what lies after the end of the log. Delayed-message checks are in [`super::delays`],
//! the checkpoint's contents in [`super::checkpoint`].

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::checkpoint::{Checkpoint, CHECKPOINT_FILE};
use crate::commit_log::record::{decode_properties, RecordHeader, RecordKind, RecordView};
use crate::consume_queue::entry::ENTRY_BYTES;
use crate::consume_queue::{queue_dir, QueueKey, QueueRef, TimedQueue};
use crate::decisions::Decisions;
use crate::dispatch::{dispatch_target, entry_for, SegmentRefs};
use crate::error::{DecodeError, Result};
use crate::io::FileSystem;

use super::super::delay_ledger::DelayLedger;
use super::super::files::{QueueFiles, StoreFiles};
use super::super::log_scan::{RecordAt, ScanVisitor};
use super::super::problem::{ProblemKind, Severity};
use super::super::queue_reader::{EntryLookup, EntryPlace, QueueReader};
use super::Sink;

/// The state of one queue during the scan.
#[derive(Debug)]
pub(super) struct QueueState {
    reader: QueueReader,
    /// 1 + the highest queue offset seen in a record.
    next: u64,
    /// Whether a record of the queue was seen.
    seen: bool,
}

/// FNV-1a: the topic map is looked up once per record, and SipHash showed in profiles.
#[derive(Default)]
struct Fnv(u64);

impl std::hash::Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut hash = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for byte in bytes {
            hash = (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = hash;
    }
}

type FastMap<K, V> = HashMap<K, V, std::hash::BuildHasherDefault<Fnv>>;

/// Queue counts, timed-queue cursors and segment references at one point of the log.
pub(super) struct Snapshot {
    pub(super) counts: HashMap<QueueKey, u64>,
    pub(super) cursors: Vec<(u16, u64)>,
    /// By segment index.
    pub(super) segment_refs: Vec<SegmentRefs>,
}

/// Entries written past a queue's records: the first one's place, and how many.
struct Trailing {
    first: EntryPlace,
    count: u64,
    next: u64,
}

pub(super) struct Checker<'a, 'b> {
    pub(super) fs: &'a dyn FileSystem,
    pub(super) dir: &'a Path,
    pub(super) files: &'a StoreFiles,
    pub(super) sink: &'a mut Sink<'b>,
    pub(super) checkpoint: Option<&'a Checkpoint>,
    pub(super) progress: Option<&'a mut dyn FnMut(u64)>,
    /// First log offset stored: records, entries and slots below it were retained away.
    pub(super) log_start: u64,
    topics: FastMap<String, FastMap<u32, QueueState>>,
    timed: HashMap<TimedQueue, QueueState>,
    /// Which message every timed-queue entry stands for, and what became of each message.
    pub(super) ledger: DelayLedger,
    /// The decision slots, read through the store's own code.
    pub(super) decisions: Decisions,
    /// Slots a decision record confirmed, by (timed-queue id, file's first slot): a bit per
    /// slot.
    pub(super) confirmed_slots: HashMap<(u16, u64), Vec<u64>>,
    /// Retention references of every segment, by segment index, as dispatch derives them.
    pub(super) segment_refs: Vec<SegmentRefs>,
    /// Segments (by index) with damage: their references cannot be derived.
    pub(super) damaged_segments: HashSet<usize>,
    /// Delayed messages delivered, cancelled or discarded (of those stored).
    pub(super) settled_messages: u64,
    /// Where a full recovery scan would stop.
    log_end: Option<u64>,
    /// The snapshot below the checkpoint's end, once the scan passed it.
    pub(super) at_checkpoint: Option<Snapshot>,
    pub(super) checkpoint_last_record_seen: bool,
    /// A valid record ends exactly at the checkpoint's log end.
    pub(super) checkpoint_end_reached: bool,
    /// The last record's end (for the boundary check).
    scanned_end: u64,
    /// Segment index after which a record was reported past a zero end.
    reported_after_end_segment: Option<usize>,
    ended_by_zero: bool,
}

impl<'a, 'b> Checker<'a, 'b> {
    pub(super) fn new(
        shared_fs: &'a Arc<dyn FileSystem>,
        dir: &'a Path,
        files: &'a StoreFiles,
        checkpoint: Option<&'a Checkpoint>,
        sink: &'a mut Sink<'b>,
    ) -> Self {
        let log_start = files.segments.first().map_or(0, |s| s.base_offset);
        Checker {
            fs: shared_fs.as_ref(),
            dir,
            files,
            sink,
            checkpoint,
            progress: None,
            log_start,
            topics: FastMap::default(),
            timed: HashMap::new(),
            ledger: DelayLedger::new(log_start == 0),
            decisions: Decisions::new(shared_fs.clone(), dir),
            confirmed_slots: HashMap::new(),
            segment_refs: vec![SegmentRefs::default(); files.segments.len()],
            damaged_segments: HashSet::new(),
            settled_messages: 0,
            log_end: None,
            at_checkpoint: None,
            checkpoint_last_record_seen: false,
            checkpoint_end_reached: false,
            scanned_end: 0,
            reported_after_end_segment: None,
            ended_by_zero: false,
        }
    }

    fn checkpoint_end(&self) -> Option<u64> {
        self.checkpoint.map(|c| c.log_end_offset)
    }

    /// Whether the checkpoint vouches for the record at `log_offset` (and what is derived from
    /// it: its queue entry, its decision slot).
    pub(super) fn covered(&self, log_offset: u64) -> bool {
        self.checkpoint_end().is_some_and(|end| log_offset < end)
    }

    pub(super) fn segment_path(&self, at: &RecordAt) -> PathBuf {
        self.files
            .segments
            .get(at.segment)
            .map(|s| s.path.clone())
            .unwrap_or_default()
    }

    /// Takes the snapshot at the checkpoint's end once the scan reaches it.
    fn pass(&mut self, log_offset: u64) {
        if self.at_checkpoint.is_none() && self.checkpoint_end().is_some_and(|e| log_offset >= e) {
            self.at_checkpoint = Some(self.snapshot());
        }
    }

    fn snapshot(&self) -> Snapshot {
        Snapshot {
            counts: self.queue_counts(),
            cursors: self.ledger.cursors(),
            segment_refs: self.segment_refs.clone(),
        }
    }

    /// Entry counts of the queues whose records the scan met.
    pub(super) fn queue_counts(&self) -> HashMap<QueueKey, u64> {
        let mut out = HashMap::new();
        for (topic, queues) in &self.topics {
            for (queue_id, state) in queues.iter().filter(|(_, s)| s.seen) {
                out.insert(
                    QueueKey::Topic {
                        topic: topic.clone(),
                        queue_id: *queue_id,
                    },
                    state.next,
                );
            }
        }
        for (queue, state) in self.timed.iter().filter(|(_, s)| s.seen) {
            out.insert(queue.queue_ref().to_key(), state.next);
        }
        out
    }

    fn queue_state(&mut self, target: QueueRef<'_>) -> Option<&mut QueueState> {
        let (store_dir, files) = (self.dir, self.files);
        let make = |key: QueueKey| {
            let queue_files = files.queue(&key).cloned().unwrap_or_else(|| QueueFiles {
                dir: queue_dir(store_dir, key.as_ref()),
                key,
                files: Vec::new(),
            });
            QueueState {
                reader: QueueReader::new(queue_files),
                next: 0,
                seen: false,
            }
        };
        match target {
            QueueRef::Topic(topic, queue_id) => {
                // Looked up by `&str` first: no allocation per record.
                if !self.topics.contains_key(topic) {
                    self.topics.insert(topic.to_owned(), FastMap::default());
                }
                let queues = self.topics.get_mut(topic)?;
                Some(
                    queues
                        .entry(queue_id)
                        .or_insert_with(|| make(target.to_key())),
                )
            }
            QueueRef::DelayLevel(_) | QueueRef::TimerSlot(_) => {
                let timed = target.timed()?;
                Some(
                    self.timed
                        .entry(timed)
                        .or_insert_with(|| make(target.to_key())),
                )
            }
        }
    }

    /// The record's queue offset follows its queue's previous one, and its entry matches.
    /// After retention, a queue's first record may have any offset.
    fn check_entry(&mut self, at: &RecordAt, header: &RecordHeader, target: QueueRef<'_>) {
        let (fs, whole_log) = (self.fs, self.log_start == 0);
        let Some(state) = self.queue_state(target) else {
            return;
        };
        let index = header.queue_offset;
        if !state.seen && !whole_log {
            state.next = index;
        }
        state.seen = true;
        let order = index.cmp(&state.next);
        state.next = state.next.max(index.saturating_add(1));
        let expected = entry_for(header, target);
        let matches = order == std::cmp::Ordering::Equal
            && matches!(state.reader.entry_at(fs, index), Ok(Some(entry)) if entry == expected);
        if matches {
            self.sink.report.queue_entries += 1;
        } else {
            self.report_entry(at, header, target, order);
        }
    }

    /// The slow path of [`Self::check_entry`]: says what is wrong.
    fn report_entry(
        &mut self,
        at: &RecordAt,
        header: &RecordHeader,
        target: QueueRef<'_>,
        order: std::cmp::Ordering,
    ) {
        let covered = self.covered(at.log_offset);
        let fs = self.fs;
        let path = self.segment_path(at);
        let Some(state) = self.queue_state(target) else {
            return;
        };
        let index = header.queue_offset;
        let mut found = Vec::new();
        match order {
            std::cmp::Ordering::Greater => found.push((
                ProblemKind::QueueOffsetGap,
                Severity::Error,
                path.clone(),
                at.file_offset,
                format!(
                    "record has queue offset {index}, but no record holds the offsets between the \
                     previous record of its queue and it"
                ),
            )),
            std::cmp::Ordering::Less => found.push((
                ProblemKind::QueueOffsetRepeated,
                Severity::Error,
                path.clone(),
                at.file_offset,
                format!("queue offset {index} was already used by an earlier record"),
            )),
            std::cmp::Ordering::Equal => {}
        }
        let expected = entry_for(header, target);
        let lookup = state.reader.get(fs, index);
        let dir = state.reader.files().dir.clone();
        let (missing, severity) = if covered {
            (ProblemKind::QueueEntryMissing, Severity::Error)
        } else {
            (ProblemKind::QueueEntryNotDispatched, Severity::Warning)
        };
        let why_missing = if covered {
            "below the checkpoint: its queue lost it (recovery rebuilds the queue, R11/R12)"
        } else {
            "after the checkpoint: recovery replays it (R02)"
        };
        match lookup {
            Ok(EntryLookup::Entry { entry, .. }) if entry == expected => {
                self.sink.report.queue_entries += 1;
            }
            Ok(EntryLookup::Entry {
                entry,
                file,
                offset,
            }) => found.push((
                ProblemKind::QueueEntryMismatch,
                if covered {
                    Severity::Error
                } else {
                    Severity::Warning
                },
                file,
                offset,
                format!(
                    "entry {index} is {entry:?}, the record at log offset {} needs {expected:?}",
                    at.log_offset
                ),
            )),
            Ok(EntryLookup::Unwritten { file, offset }) => found.push((
                missing,
                severity,
                file,
                offset,
                format!(
                    "entry {index} for the record at log offset {} is zero; {why_missing}",
                    at.log_offset
                ),
            )),
            Ok(EntryLookup::NoFile) => found.push((
                missing,
                severity,
                dir,
                index.saturating_mul(ENTRY_BYTES as u64),
                format!(
                    "no queue file holds entry {index} for the record at log offset {}; \
                     {why_missing}",
                    at.log_offset
                ),
            )),
            Err(err) => found.push((
                ProblemKind::QueueEntryMissing,
                Severity::Error,
                dir,
                index.saturating_mul(ENTRY_BYTES as u64),
                format!("entry {index} cannot be read: {err}"),
            )),
        }
        for (kind, severity, file, offset, detail) in found {
            let log_offset = matches!(
                kind,
                ProblemKind::QueueOffsetGap | ProblemKind::QueueOffsetRepeated
            )
            .then_some(at.log_offset);
            self.sink
                .add(kind, severity, &file, offset, log_offset, detail);
        }
    }

    /// The end of the log as a full recovery scan sees it: the first damage or zero header.
    fn end_here(&mut self, log_offset: u64) {
        if self.log_end.is_none() {
            self.log_end = Some(log_offset);
        }
    }

    fn check_checkpoint_boundary(&mut self, at: &RecordAt, total: u64) {
        let Some(cp) = self.checkpoint else { return };
        let end = at.log_offset.saturating_add(total);
        if end == cp.log_end_offset {
            self.checkpoint_end_reached = true;
        }
        if at.log_offset < cp.log_end_offset && cp.log_end_offset < end {
            self.sink.add(
                ProblemKind::CheckpointNotAtRecordEnd,
                Severity::Error,
                &self.dir.join(CHECKPOINT_FILE),
                0,
                Some(cp.log_end_offset),
                format!(
                    "checkpoint ends at {} inside the record at {} (ending at {end}); recovery \
                     rejects it (R18)",
                    cp.log_end_offset, at.log_offset
                ),
            );
        }
    }

    /// After the scan: the checkpoint against the log, and entries past each queue's records.
    pub(super) fn finish(&mut self, files: &StoreFiles) -> Result<()> {
        let log_end = self
            .log_end
            .unwrap_or_else(|| files.segments.last().map_or(0, |s| s.end_offset()));
        self.sink.report.log_end_offset = log_end;
        if self.at_checkpoint.is_none() {
            self.at_checkpoint = Some(self.snapshot());
        }
        if let Some(cp) = self.checkpoint {
            self.check_checkpoint(cp, log_end);
        }
        // Queues on disk that no record names still get their trailing entries checked.
        for queue in &files.queues {
            self.queue_state(queue.key.as_ref());
        }
        let mut trailing = Vec::new();
        let (fs, log_start) = (self.fs, self.log_start);
        let mut states: Vec<&mut QueueState> = self
            .topics
            .values_mut()
            .flat_map(|q| q.values_mut())
            .chain(self.timed.values_mut())
            .collect();
        for state in states.iter_mut() {
            if let Some(found) = entries_past(fs, state, log_start)? {
                trailing.push(found);
            }
        }
        self.sink.report.queues = states.len() as u64;
        for Trailing {
            first: (file, offset, first_index),
            count,
            next,
        } in trailing
        {
            self.sink.add(
                ProblemKind::QueueEntriesPastLog,
                Severity::Error,
                &file,
                offset,
                None,
                format!(
                    "{count} written entries from entry {first_index} on, but the log holds \
                     records only for entries below {next} (recovery drops those past its \
                     checkpoint, R13)"
                ),
            );
        }
        Ok(())
    }
}

/// Written entries at or after the queue's record count, other than entries into segments
/// retention deleted.
fn entries_past(
    fs: &dyn FileSystem,
    state: &mut QueueState,
    log_start: u64,
) -> Result<Option<Trailing>> {
    let next = state.next;
    let (count, first) = state.reader.written_from(fs, next, log_start)?;
    Ok(first.map(|first| Trailing { first, count, next }))
}

impl ScanVisitor for Checker<'_, '_> {
    fn record(&mut self, at: &RecordAt, record: &RecordView<'_>) {
        self.pass(at.log_offset);
        let header = &record.header;
        let total = u64::from(header.total_bytes);
        self.check_checkpoint_boundary(at, total);
        if self
            .checkpoint
            .is_some_and(|c| c.last_record_offset == at.log_offset)
        {
            self.checkpoint_last_record_seen = true;
        }
        let report = &mut self.sink.report;
        report.records += 1;
        report.record_bytes += total;
        if self.log_end.is_some() {
            report.records_after_end += 1;
            if self.ended_by_zero && self.reported_after_end_segment != Some(at.segment) {
                self.reported_after_end_segment = Some(at.segment);
                let path = self.segment_path(at);
                self.sink.add(
                    ProblemKind::DataAfterEnd,
                    Severity::Error,
                    &path,
                    at.file_offset,
                    Some(at.log_offset),
                    format!(
                        "valid records after the end of the log at {}: recovery cuts them",
                        self.log_end.unwrap_or(0)
                    ),
                );
            }
        }
        let report = &mut self.sink.report;
        match header.kind {
            RecordKind::Message => report.messages += 1,
            RecordKind::Delivery => report.deliveries += 1,
            RecordKind::Hop => report.hops += 1,
            RecordKind::Cancel => report.cancels += 1,
            RecordKind::Discard => report.discards += 1,
            RecordKind::Filler => {}
        }
        self.check_delays(at, record);
        if decode_properties(record.properties).is_err() {
            let path = self.segment_path(at);
            self.sink.add(
                ProblemKind::BadProperties,
                Severity::Error,
                &path,
                at.file_offset,
                Some(at.log_offset),
                "properties do not decode: a pull of this message fails".into(),
            );
        }
        if let Some(target) = dispatch_target(header, record.topic) {
            self.check_entry(at, header, target);
        }
        self.scanned_end = at.log_offset.saturating_add(total);
    }

    fn filler(&mut self, at: &RecordAt, header: &RecordHeader) {
        self.pass(at.log_offset);
        let total = u64::from(header.total_bytes);
        self.check_checkpoint_boundary(at, total);
        let report = &mut self.sink.report;
        report.records += 1;
        report.fillers += 1;
        report.record_bytes += total;
        if self.log_end.is_some() {
            report.records_after_end += 1;
        }
        self.scanned_end = at.log_offset.saturating_add(total);
    }

    fn damage(&mut self, at: &RecordAt, kind: DecodeError, resumed_at: Option<u64>) {
        self.pass(at.log_offset);
        let covered = self.covered(at.log_offset);
        if covered {
            self.damaged_segments.insert(at.segment);
        }
        let first = self.log_end.is_none();
        self.end_here(at.log_offset);
        let path = self.segment_path(at);
        let resumed = match resumed_at {
            Some(r) => format!("the next valid record starts at byte {r} of this segment"),
            None => "no valid record follows in this segment".into(),
        };
        let consequence = if covered {
            "below the checkpoint: the store still opens (recovery does not re-read it), reads of \
             this record fail, and a full scan (a lost or rejected checkpoint) cuts the log here"
        } else if first {
            "recovery cuts the log here (R03/R05), dropping every record after it"
        } else {
            "after an earlier cut: already lost to recovery"
        };
        self.sink.add(
            if covered {
                ProblemKind::DamageBelowCheckpoint
            } else {
                ProblemKind::BadRecord
            },
            Severity::Error,
            &path,
            at.file_offset,
            Some(at.log_offset),
            format!("{kind}; {resumed}; {consequence}"),
        );
    }

    fn end_of_data(&mut self, at: &RecordAt) {
        self.pass(at.log_offset);
        if self.log_end.is_none() {
            self.ended_by_zero = true;
        }
        self.end_here(at.log_offset);
    }

    fn data_after_end(&mut self, at: &RecordAt, resumed_at: Option<u64>) {
        let path = self.segment_path(at);
        self.sink.add(
            ProblemKind::DataAfterEnd,
            Severity::Error,
            &path,
            at.file_offset,
            Some(at.log_offset),
            match resumed_at {
                Some(r) => format!(
                    "non-zero bytes after the end of the data; a valid record starts at byte {r}: \
                     recovery cuts it"
                ),
                None => "non-zero bytes after the end of the data (no valid record): recovery \
                         zeroes them"
                    .into(),
            },
        );
        self.reported_after_end_segment = Some(at.segment);
    }

    fn progress(&mut self, scanned_bytes: u64) {
        if let Some(progress) = self.progress.as_mut() {
            progress(scanned_bytes);
        }
    }
}
