//! A problem found by a check: what, where (file and byte offset, and the log offset for the
//! commit log), and how serious.

use std::fmt;
use std::path::PathBuf;

/// How serious a problem is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// A state the store produces itself and recovery settles at the next open (for example
    /// the queue entries of records written after the last checkpoint by a process that was
    /// killed). Reported, but the store is sound.
    Warning,
    /// Bytes or files that a correct store never holds: damage, loss, or leftovers recovery
    /// will cut. `verify` exits with 1.
    Error,
}

impl Severity {
    /// Lower-case name used in JSON output.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Warning => "warning",
            Severity::Error => "error",
        }
    }
}

/// What kind of problem. Names in JSON output are the snake_case forms of [`Self::as_str`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ProblemKind {
    /// A record fails a check (magic, version, kind, length, stored position, CRC, names).
    BadRecord,
    /// Like `BadRecord`, but below the checkpoint's log end: recovery does not re-read it, so
    /// the store opens cleanly and fails where the record is read (pull, delivery), or a later
    /// full scan cuts the log there.
    DamageBelowCheckpoint,
    /// Non-zero bytes after the end of the data of a segment (after the first zero header).
    DataAfterEnd,
    /// Segments are not contiguous (a segment is missing or cut short in the middle).
    SegmentGap,
    /// A segment file shorter than one record header.
    ShortSegment,
    /// A segment file being prepared (`*.prealloc`), left by a crash.
    PreparingSegment,
    /// A file the store does not know, where it keeps its own files.
    StrangeFile,
    /// A leftover temporary file of an atomic replace.
    LeftoverTemp,
    /// A record's properties do not decode (a pull of it fails).
    BadProperties,
    /// A delivery, hop, cancel or discard names a timed-queue entry that does not stand for
    /// the message it names (or no entry at all).
    BadOrigin,
    /// A delayed message delivered twice.
    DuplicateDelivery,
    /// A timed-queue entry consumed by two records (delivered, hopped or discarded twice).
    EntryConsumedTwice,
    /// A delayed message both delivered and cancelled, or cancelled twice.
    ConflictingDecision,
    /// A delivery or cancel whose decision slot does not name it: an error below the
    /// checkpoint (slots are synced before it), a warning after it (recovery rewrites it).
    DecisionSlotMissing,
    /// A decision slot that no record confirms: it outlived its record in a crash; the store
    /// ignores it (warning).
    DecisionSlotStale,
    /// Records of one queue skip queue offsets.
    QueueOffsetGap,
    /// Two records claim the same queue offset.
    QueueOffsetRepeated,
    /// A record has no entry in its consume queue.
    QueueEntryMissing,
    /// A record's entry exists but points elsewhere, or has another length or time.
    QueueEntryMismatch,
    /// A record written after the checkpoint has no entry yet (a killed process): recovery
    /// replays it.
    QueueEntryNotDispatched,
    /// Entries after the last record of their queue (pointing past the log, or at damage).
    QueueEntriesPastLog,
    /// A queue's files are not contiguous, or do not start at entry 0 while the log starts at
    /// offset 0.
    QueueFileGap,
    /// A queue file whose length is not a whole number of entries, or that overlaps the next.
    QueueFileSize,
    /// A queue file holding more entries than the configured count (accepted by the store).
    QueueFileLongerThanConfigured,
    /// A queue directory whose queue id is not below the topic's queue count.
    QueueIdOutOfRange,
    /// The checkpoint does not decode.
    CheckpointCorrupt,
    /// The checkpoint's log end lies past the valid log (recovery refuses, R16, or rejects, R18).
    CheckpointAheadOfLog,
    /// The checkpoint's log end or last record is not a record boundary of the log.
    CheckpointNotAtRecordEnd,
    /// A queue's entry count in the checkpoint differs from the records below its log end.
    CheckpointQueueCount,
    /// A timed queue's consumed count in the checkpoint differs from the delivery, hop and
    /// discard records below its end.
    CheckpointCursor,
    /// A segment's retention references in the checkpoint differ from the records below its
    /// end.
    CheckpointSegmentRefs,
    /// The `meta` file is missing or does not decode.
    MetaCorrupt,
    /// The `consumer_offsets` file does not decode.
    ConsumerOffsetsCorrupt,
    /// A committed consumer offset lies past the end of its queue.
    ConsumerOffsetPastEnd,
}

impl ProblemKind {
    /// snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            ProblemKind::BadRecord => "bad_record",
            ProblemKind::DamageBelowCheckpoint => "damage_below_checkpoint",
            ProblemKind::DataAfterEnd => "data_after_end",
            ProblemKind::SegmentGap => "segment_gap",
            ProblemKind::ShortSegment => "short_segment",
            ProblemKind::PreparingSegment => "preparing_segment",
            ProblemKind::StrangeFile => "strange_file",
            ProblemKind::LeftoverTemp => "leftover_temp",
            ProblemKind::BadProperties => "bad_properties",
            ProblemKind::BadOrigin => "bad_origin",
            ProblemKind::DuplicateDelivery => "duplicate_delivery",
            ProblemKind::EntryConsumedTwice => "entry_consumed_twice",
            ProblemKind::ConflictingDecision => "conflicting_decision",
            ProblemKind::DecisionSlotMissing => "decision_slot_missing",
            ProblemKind::DecisionSlotStale => "decision_slot_stale",
            ProblemKind::QueueOffsetGap => "queue_offset_gap",
            ProblemKind::QueueOffsetRepeated => "queue_offset_repeated",
            ProblemKind::QueueEntryMissing => "queue_entry_missing",
            ProblemKind::QueueEntryMismatch => "queue_entry_mismatch",
            ProblemKind::QueueEntryNotDispatched => "queue_entry_not_dispatched",
            ProblemKind::QueueEntriesPastLog => "queue_entries_past_log",
            ProblemKind::QueueFileGap => "queue_file_gap",
            ProblemKind::QueueFileSize => "queue_file_size",
            ProblemKind::QueueFileLongerThanConfigured => "queue_file_longer_than_configured",
            ProblemKind::QueueIdOutOfRange => "queue_id_out_of_range",
            ProblemKind::CheckpointCorrupt => "checkpoint_corrupt",
            ProblemKind::CheckpointAheadOfLog => "checkpoint_ahead_of_log",
            ProblemKind::CheckpointNotAtRecordEnd => "checkpoint_not_at_record_end",
            ProblemKind::CheckpointQueueCount => "checkpoint_queue_count",
            ProblemKind::CheckpointCursor => "checkpoint_cursor",
            ProblemKind::CheckpointSegmentRefs => "checkpoint_segment_refs",
            ProblemKind::MetaCorrupt => "meta_corrupt",
            ProblemKind::ConsumerOffsetsCorrupt => "consumer_offsets_corrupt",
            ProblemKind::ConsumerOffsetPastEnd => "consumer_offset_past_end",
        }
    }
}

impl fmt::Display for ProblemKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One problem, positioned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// What.
    pub kind: ProblemKind,
    /// How serious.
    pub severity: Severity,
    /// The file (or directory) holding it.
    pub file: PathBuf,
    /// Byte offset inside that file.
    pub offset: u64,
    /// Commit-log offset, for problems in the commit log.
    pub log_offset: Option<u64>,
    /// Human-readable facts (the failed check, the values found and expected).
    pub detail: String,
}
