//! `verify`: a read-only check of a whole store. Every record's header, length, position and
//! CRC (through [`super::log_scan`]); every consume-queue entry against the record it indexes,
//! and every entry past the last record of its queue; delivery records against the delayed
//! messages they name; the checkpoint's log end, queue counts and level cursors against the
//! log; the meta and consumer-offset files, and committed offsets against their queues.
//!
//! It writes nothing and holds no lock of its own: the caller probes the lock first
//! ([`super::probe_lock`]) and keeps the guard while this runs.
//!
//! Severity follows what recovery would make of a problem: damage, loss and anything a correct
//! store never holds is an [`Severity::Error`]; what a killed process leaves and recovery
//! settles as a matter of course (entries not yet dispatched for records after the checkpoint,
//! a segment left half-prepared) is a [`Severity::Warning`].

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use crate::checkpoint::{Checkpoint, CHECKPOINT_FILE};
use crate::commit_log::record::{
    decode_properties, OriginRef, RecordHeader, RecordKind, RecordView,
};
use crate::consume_queue::entry::ENTRY_BYTES;
use crate::consume_queue::{queue_dir, QueueKey, QueueRef};
use crate::consumer_offsets::{decode_offsets, OFFSETS_FILE};
use crate::dispatch::{dispatch_target, entry_for};
use crate::error::{DecodeError, Error, Result};
use crate::io::FileSystem;
use crate::meta::{StoreMeta, META_FILE};

use super::files::{QueueFiles, StoreFiles};
use super::log_scan::{scan_log, RecordAt, ScanVisitor};
use super::problem::{Problem, ProblemKind, Severity};
use super::queue_reader::{capacity_entries, EntryLookup, EntryPlace, QueueReader};

/// Problems of one kind passed to the caller (and kept in the report) before the rest are
/// only counted: a deleted queue directory would otherwise print one line per message.
pub const PROBLEMS_PER_KIND_MAX: u64 = 100;

/// What `verify` needs to know beyond the files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifyOptions {
    /// Entries per consume-queue file the store is run with (`Options::consume_queue_file_entries`);
    /// a longer file is reported as a warning.
    pub queue_file_entries: u64,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        VerifyOptions {
            queue_file_entries: crate::Options::default().consume_queue_file_entries,
        }
    }
}

/// The checkpoint's facts, as found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckpointFacts {
    /// Its log end.
    pub log_end_offset: u64,
    /// Its last record.
    pub last_record_offset: u64,
    /// When it was written.
    pub written_ms: u64,
    /// Whether a clean close wrote it.
    pub clean_shutdown: bool,
}

/// What `verify` found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Valid records (messages, deliveries and fillers).
    pub records: u64,
    /// Valid message records.
    pub messages: u64,
    /// Of which delayed.
    pub delayed_messages: u64,
    /// Valid delivery records.
    pub deliveries: u64,
    /// Valid filler records.
    pub fillers: u64,
    /// Bytes of the valid records.
    pub record_bytes: u64,
    /// Bytes of segment files read.
    pub scanned_bytes: u64,
    /// Segment files.
    pub segments: u64,
    /// Consume queues (on disk or named by a record).
    pub queues: u64,
    /// Queue entries that matched their record.
    pub queue_entries: u64,
    /// Where a full recovery scan would end the log: the first damage or zero header, or the
    /// end of the last segment.
    pub log_end_offset: u64,
    /// Valid records after `log_end_offset`: recovery would drop them.
    pub records_after_end: u64,
    /// Delayed messages without a delivery record.
    pub pending_delayed: u64,
    /// The checkpoint, if it decoded.
    pub checkpoint: Option<CheckpointFacts>,
    /// Problems of severity error.
    pub errors: u64,
    /// Problems of severity warning.
    pub warnings: u64,
    /// Count of every kind found.
    pub by_kind: BTreeMap<ProblemKind, u64>,
    /// The first [`PROBLEMS_PER_KIND_MAX`] problems of each kind, in the order found.
    pub problems: Vec<Problem>,
}

impl VerifyReport {
    /// Whether the store may be opened recovery-free: no checkpoint or an unclean one means a
    /// process stopped without closing it.
    pub fn needs_recovery(&self) -> bool {
        self.checkpoint.is_none_or(|c| !c.clean_shutdown)
    }
}

/// Collects problems, passing the first ones of each kind to the caller.
struct Sink<'a> {
    on_problem: &'a mut dyn FnMut(&Problem),
    report: VerifyReport,
}

impl Sink<'_> {
    fn add(
        &mut self,
        kind: ProblemKind,
        severity: Severity,
        file: &Path,
        offset: u64,
        log_offset: Option<u64>,
        detail: String,
    ) {
        let count = self.report.by_kind.entry(kind).or_insert(0);
        *count += 1;
        match severity {
            Severity::Error => self.report.errors += 1,
            Severity::Warning => self.report.warnings += 1,
        }
        if *count <= PROBLEMS_PER_KIND_MAX {
            let problem = Problem {
                kind,
                severity,
                file: file.to_path_buf(),
                offset,
                log_offset,
                detail,
            };
            (self.on_problem)(&problem);
            self.report.problems.push(problem);
        }
    }
}

/// Checks the store in `dir` through `fs` (which must not write: use an
/// [`crate::io::OverlayFs`] for a real directory). Problems are passed to `on_problem` as they
/// are found; `progress` receives (bytes scanned, bytes to scan). Fails with
/// [`Error::StoreNotFound`] when `dir` holds no store, and on I/O errors.
pub fn verify(
    fs: &dyn FileSystem,
    dir: &Path,
    options: &VerifyOptions,
    on_problem: &mut dyn FnMut(&Problem),
    progress: &mut dyn FnMut(u64, u64),
) -> Result<VerifyReport> {
    let meta_path = dir.join(META_FILE);
    let log_dir = dir.join(crate::commit_log::COMMIT_LOG_DIR);
    if !fs.exists(&meta_path) && !fs.exists(&log_dir) {
        return Err(Error::StoreNotFound {
            dir: dir.to_path_buf(),
        });
    }
    let mut sink = Sink {
        on_problem,
        report: VerifyReport::default(),
    };
    let meta = match StoreMeta::load(fs, dir) {
        Ok(Some(meta)) => Some(meta),
        Ok(None) => {
            sink.add(
                ProblemKind::MetaCorrupt,
                Severity::Error,
                &meta_path,
                0,
                None,
                "missing: the store does not open without it".into(),
            );
            None
        }
        Err(err @ (Error::Corruption { .. } | Error::UnsupportedVersion { .. })) => {
            sink.add(
                ProblemKind::MetaCorrupt,
                Severity::Error,
                &meta_path,
                0,
                None,
                err.to_string(),
            );
            None
        }
        Err(err) => return Err(err),
    };
    let files = StoreFiles::survey(fs, dir)?;
    check_names(&mut sink, &files, meta.as_ref());
    check_segment_layout(&mut sink, &files);
    check_queue_layout(&mut sink, &files, options);

    let checkpoint_path = dir.join(CHECKPOINT_FILE);
    let checkpoint = match Checkpoint::load(fs, dir) {
        Ok(checkpoint) => checkpoint,
        Err(Error::Corruption { kind, .. }) => {
            sink.add(
                ProblemKind::CheckpointCorrupt,
                Severity::Error,
                &checkpoint_path,
                0,
                None,
                format!(
                    "{kind}: recovery ignores it, scans the whole log and rebuilds every queue"
                ),
            );
            None
        }
        Err(err) => return Err(err),
    };
    sink.report.checkpoint = checkpoint.as_ref().map(|c| CheckpointFacts {
        log_end_offset: c.log_end_offset,
        last_record_offset: c.last_record_offset,
        written_ms: c.written_ms,
        clean_shutdown: c.clean_shutdown,
    });

    let total_bytes = files.segment_bytes();
    let mut checker = Checker::new(fs, dir, &files, checkpoint.as_ref(), &mut sink);
    let mut forward = |done: u64| progress(done, total_bytes);
    checker.progress = Some(&mut forward);
    let totals = scan_log(fs, &files.segments, 0, &mut checker)?;
    checker.progress = None;
    checker.finish(&files)?;
    let counts = checker.queue_counts();
    let delivered_total = checker.delivered_total;
    drop(checker);

    check_consumer_offsets(fs, dir, &mut sink, &counts);
    let report = &mut sink.report;
    report.scanned_bytes = totals.scanned_bytes;
    report.segments = files.segments.len() as u64;
    report.pending_delayed = report.delayed_messages.saturating_sub(delivered_total);
    Ok(sink.report)
}

/// Leftovers and strangers, and queue directories beyond their topic's queue count.
fn check_names(sink: &mut Sink<'_>, files: &StoreFiles, meta: Option<&StoreMeta>) {
    for path in &files.preparing {
        sink.add(
            ProblemKind::PreparingSegment,
            Severity::Warning,
            path,
            0,
            None,
            "a segment being prepared when the process stopped; recovery removes it (R22)".into(),
        );
    }
    for path in &files.temporaries {
        sink.add(
            ProblemKind::LeftoverTemp,
            Severity::Warning,
            path,
            0,
            None,
            "an atomic replace was interrupted; never read, overwritten by the next one".into(),
        );
    }
    for path in &files.strangers {
        sink.add(
            ProblemKind::StrangeFile,
            Severity::Warning,
            path,
            0,
            None,
            "not a name the store uses; ignored by the store".into(),
        );
    }
    let Some(meta) = meta else { return };
    for queue in &files.queues {
        if let QueueKey::Topic { topic, queue_id } = &queue.key {
            let count = meta.queue_count(topic);
            if *queue_id >= count {
                sink.add(
                    ProblemKind::QueueIdOutOfRange,
                    Severity::Warning,
                    &queue.dir,
                    0,
                    None,
                    format!("topic {topic} has {count} queues in meta"),
                );
            }
        }
    }
}

/// Segments must be contiguous; only the last may be shorter than a header (R14, R15, R21).
fn check_segment_layout(sink: &mut Sink<'_>, files: &StoreFiles) {
    let last = files.segments.len().saturating_sub(1);
    let mut expected = files.segments.first().map(|s| s.base_offset);
    for (index, segment) in files.segments.iter().enumerate() {
        if expected != Some(segment.base_offset) {
            sink.add(
                ProblemKind::SegmentGap,
                Severity::Error,
                &segment.path,
                0,
                Some(segment.base_offset),
                format!(
                    "segment starts at {} but the previous one ends at {}: the store refuses to \
                     open (R14)",
                    segment.base_offset,
                    expected.unwrap_or(0)
                ),
            );
        }
        if segment.len_bytes < crate::commit_log::record::HEADER_BYTES as u64 {
            let (severity, why) = if index == last {
                (
                    Severity::Warning,
                    "an interrupted creation; recovery removes it (R15)",
                )
            } else {
                (
                    Severity::Error,
                    "in the middle of the log: the store refuses to open (R21)",
                )
            };
            sink.add(
                ProblemKind::ShortSegment,
                severity,
                &segment.path,
                0,
                Some(segment.base_offset),
                format!("{} bytes: {why}", segment.len_bytes),
            );
        }
        expected = Some(segment.end_offset());
    }
}

/// Queue files: whole entries, starting at entry 0, contiguous, not longer than configured.
fn check_queue_layout(sink: &mut Sink<'_>, files: &StoreFiles, options: &VerifyOptions) {
    for queue in &files.queues {
        let mut expected = 0u64;
        for file in &queue.files {
            let capacity = capacity_entries(file);
            if file.len_bytes % ENTRY_BYTES as u64 != 0 {
                sink.add(
                    ProblemKind::QueueFileSize,
                    Severity::Error,
                    &file.path,
                    capacity * ENTRY_BYTES as u64,
                    None,
                    format!(
                        "{} bytes is not a whole number of 20-byte entries",
                        file.len_bytes
                    ),
                );
            }
            if capacity > options.queue_file_entries {
                sink.add(
                    ProblemKind::QueueFileLongerThanConfigured,
                    Severity::Warning,
                    &file.path,
                    0,
                    None,
                    format!(
                        "{capacity} entries, configured {}: accepted by the store (capacity is \
                         read from the length)",
                        options.queue_file_entries
                    ),
                );
            }
            if file.first_entry != expected {
                let (kind, detail) = if file.first_entry > expected {
                    (
                        ProblemKind::QueueFileGap,
                        format!(
                            "file starts at entry {} but entries from {expected} have no file",
                            file.first_entry
                        ),
                    )
                } else {
                    (
                        ProblemKind::QueueFileSize,
                        format!(
                            "file starts at entry {} inside the previous file (ending at \
                             {expected})",
                            file.first_entry
                        ),
                    )
                };
                sink.add(kind, Severity::Error, &file.path, 0, None, detail);
            }
            expected = file.first_entry.saturating_add(capacity);
        }
    }
}

/// Committed offsets must lie within their queue.
fn check_consumer_offsets(
    fs: &dyn FileSystem,
    dir: &Path,
    sink: &mut Sink<'_>,
    counts: &HashMap<QueueKey, u64>,
) {
    let path = dir.join(OFFSETS_FILE);
    if !fs.exists(&path) {
        return;
    }
    let table = match fs.read_file(&path) {
        Ok(bytes) => decode_offsets(&bytes).map_err(|kind| kind.to_string()),
        Err(err) => Err(err.to_string()),
    };
    let table = match table {
        Ok(table) => table,
        Err(why) => {
            sink.add(
                ProblemKind::ConsumerOffsetsCorrupt,
                Severity::Error,
                &path,
                0,
                None,
                format!("{why}: the store does not open"),
            );
            return;
        }
    };
    for ((group, topic, queue_id), offset) in table {
        let key = QueueKey::Topic {
            topic: topic.clone(),
            queue_id,
        };
        let end = counts.get(&key).copied().unwrap_or(0);
        if offset > end {
            sink.add(
                ProblemKind::ConsumerOffsetPastEnd,
                Severity::Error,
                &path,
                0,
                None,
                format!(
                    "group {group} committed {offset} in {topic}/{queue_id}, whose records end at \
                     {end}; the next open lowers it"
                ),
            );
        }
    }
}

/// The state of one queue during the scan.
#[derive(Debug)]
struct QueueState {
    reader: QueueReader,
    /// 1 + the highest queue offset seen in a record.
    next: u64,
}

/// Delayed messages of one level: the log offset of each (by level-queue offset) and whether a
/// delivery named it.
#[derive(Debug, Default)]
struct LevelState {
    origins: Vec<u64>,
    delivered: Vec<u64>,
    /// 1 + the highest level-queue offset named by a delivery.
    cursor: u64,
}

const NO_ORIGIN: u64 = u64::MAX;

impl LevelState {
    fn set_origin(&mut self, index: u64, log_offset: u64) {
        let Ok(index) = usize::try_from(index) else {
            return;
        };
        if index >= self.origins.len() {
            // Level-queue offsets come from records that passed their CRC; a huge one is still
            // bounded by what the scan can reach (one per record), so grow to it.
            self.origins.resize(index + 1, NO_ORIGIN);
        }
        if let Some(slot) = self.origins.get_mut(index) {
            *slot = log_offset;
        }
    }

    /// Marks `index` delivered; returns whether it already was.
    fn mark_delivered(&mut self, index: u64) -> bool {
        let Ok(index) = usize::try_from(index) else {
            return false;
        };
        let (word, bit) = (index / 64, index % 64);
        if word >= self.delivered.len() {
            self.delivered.resize(word + 1, 0);
        }
        let Some(slot) = self.delivered.get_mut(word) else {
            return false;
        };
        let was = *slot & (1 << bit) != 0;
        *slot |= 1 << bit;
        was
    }
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

/// Queue counts and level cursors at one point of the log.
type Snapshot = (HashMap<QueueKey, u64>, Vec<(u8, u64)>);

/// Entries written past a queue's records: the first one's place, and how many.
struct Trailing {
    first: EntryPlace,
    count: u64,
    next: u64,
}

struct Checker<'a, 'b> {
    fs: &'a dyn FileSystem,
    dir: &'a Path,
    files: &'a StoreFiles,
    sink: &'a mut Sink<'b>,
    checkpoint: Option<&'a Checkpoint>,
    progress: Option<&'a mut dyn FnMut(u64)>,
    topics: FastMap<String, FastMap<u32, QueueState>>,
    levels: HashMap<u8, QueueState>,
    level_states: Vec<LevelState>,
    delivered_total: u64,
    /// Where a full recovery scan would stop.
    log_end: Option<u64>,
    /// Queue counts and level cursors below the checkpoint's end, once the scan passed it.
    at_checkpoint: Option<Snapshot>,
    checkpoint_last_record_seen: bool,
    /// A valid record ends exactly at the checkpoint's log end.
    checkpoint_end_reached: bool,
    /// The last record's end (for the boundary check).
    scanned_end: u64,
    /// Segment index after which a record was reported past a zero end.
    reported_after_end_segment: Option<usize>,
    ended_by_zero: bool,
}

impl<'a, 'b> Checker<'a, 'b> {
    fn new(
        fs: &'a dyn FileSystem,
        dir: &'a Path,
        files: &'a StoreFiles,
        checkpoint: Option<&'a Checkpoint>,
        sink: &'a mut Sink<'b>,
    ) -> Self {
        Checker {
            fs,
            dir,
            files,
            sink,
            checkpoint,
            progress: None,
            topics: FastMap::default(),
            levels: HashMap::new(),
            level_states: (0..=u8::MAX).map(|_| LevelState::default()).collect(),
            delivered_total: 0,
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

    /// Whether the checkpoint vouches for the record at `log_offset` (and its queue entry).
    fn covered(&self, log_offset: u64) -> bool {
        self.checkpoint_end().is_some_and(|end| log_offset < end)
    }

    fn segment_path(&self, at: &RecordAt) -> PathBuf {
        self.files
            .segments
            .get(at.segment)
            .map(|s| s.path.clone())
            .unwrap_or_default()
    }

    /// Takes the snapshot at the checkpoint's end once the scan reaches it.
    fn pass(&mut self, log_offset: u64) {
        if self.at_checkpoint.is_none() && self.checkpoint_end().is_some_and(|e| log_offset >= e) {
            self.at_checkpoint = Some((self.queue_counts(), self.cursors()));
        }
    }

    fn queue_counts(&self) -> HashMap<QueueKey, u64> {
        let mut out = HashMap::new();
        for (topic, queues) in &self.topics {
            for (queue_id, state) in queues {
                out.insert(
                    QueueKey::Topic {
                        topic: topic.clone(),
                        queue_id: *queue_id,
                    },
                    state.next,
                );
            }
        }
        for (level, state) in &self.levels {
            out.insert(QueueKey::DelayLevel(*level), state.next);
        }
        out
    }

    fn cursors(&self) -> Vec<(u8, u64)> {
        self.level_states
            .iter()
            .enumerate()
            .filter(|(_, s)| s.cursor > 0)
            .filter_map(|(level, s)| Some((u8::try_from(level).ok()?, s.cursor)))
            .collect()
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
            QueueRef::DelayLevel(level) => Some(
                self.levels
                    .entry(level)
                    .or_insert_with(|| make(target.to_key())),
            ),
        }
    }

    /// The record's queue offset follows its queue's previous one, and its entry matches.
    fn check_entry(&mut self, at: &RecordAt, header: &RecordHeader, target: QueueRef<'_>) {
        let fs = self.fs;
        let Some(state) = self.queue_state(target) else {
            return;
        };
        let index = header.queue_offset;
        let order = index.cmp(&state.next);
        state.next = state.next.max(index.saturating_add(1));
        let expected = entry_for(header);
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
        let expected = entry_for(header);
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

    fn check_delivery(&mut self, at: &RecordAt, record: &RecordView<'_>) {
        let level = record.header.delay_level;
        let origin = match OriginRef::decode(record.body) {
            Ok(origin) => origin,
            Err(kind) => {
                let path = self.segment_path(at);
                self.sink.add(
                    ProblemKind::BadOrigin,
                    Severity::Error,
                    &path,
                    at.file_offset,
                    Some(at.log_offset),
                    format!("origin reference does not decode: {kind}"),
                );
                return;
            }
        };
        let Some(state) = self.level_states.get_mut(usize::from(level)) else {
            return;
        };
        let named = usize::try_from(origin.level_queue_offset)
            .ok()
            .and_then(|i| state.origins.get(i).copied());
        let duplicate = state.mark_delivered(origin.level_queue_offset);
        state.cursor = state
            .cursor
            .max(origin.level_queue_offset.saturating_add(1));
        if !duplicate {
            self.delivered_total += 1;
        }
        let path = || {
            self.files
                .segments
                .get(at.segment)
                .map(|s| s.path.clone())
                .unwrap_or_default()
        };
        if named != Some(origin.log_offset) {
            let path = path();
            self.sink.add(
                ProblemKind::BadOrigin,
                Severity::Error,
                &path,
                at.file_offset,
                Some(at.log_offset),
                format!(
                    "delivery names the message at log offset {} as entry {} of level {level}, \
                     but the log holds {} there",
                    origin.log_offset,
                    origin.level_queue_offset,
                    match named {
                        Some(NO_ORIGIN) | None => "no message".to_owned(),
                        Some(other) => format!("the message at log offset {other}"),
                    }
                ),
            );
        }
        if duplicate {
            let path = path();
            self.sink.add(
                ProblemKind::DuplicateDelivery,
                Severity::Error,
                &path,
                at.file_offset,
                Some(at.log_offset),
                format!(
                    "entry {} of level {level} (message at log offset {}) was already delivered",
                    origin.level_queue_offset, origin.log_offset
                ),
            );
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
    fn finish(&mut self, files: &StoreFiles) -> Result<()> {
        let log_end = self
            .log_end
            .unwrap_or_else(|| files.segments.last().map_or(0, |s| s.end_offset()));
        self.sink.report.log_end_offset = log_end;
        if self.at_checkpoint.is_none() {
            self.at_checkpoint = Some((self.queue_counts(), self.cursors()));
        }
        if let Some(cp) = self.checkpoint {
            self.check_checkpoint(cp, log_end);
        }
        // Queues on disk that no record names still get their trailing entries checked.
        for queue in &files.queues {
            self.queue_state(queue.key.as_ref());
        }
        let mut trailing = Vec::new();
        let fs = self.fs;
        let mut states: Vec<&mut QueueState> = self
            .topics
            .values_mut()
            .flat_map(|q| q.values_mut())
            .chain(self.levels.values_mut())
            .collect();
        for state in states.iter_mut() {
            if let Some(found) = entries_past(fs, state)? {
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

    fn check_checkpoint(&mut self, cp: &Checkpoint, log_end: u64) {
        let path = self.dir.join(CHECKPOINT_FILE);
        let segments_end = self.files.segments.last().map_or(0, |s| s.end_offset());
        let first = self.files.segments.first().map_or(0, |s| s.base_offset);
        let at_start = cp.log_end_offset == first;
        if cp.log_end_offset > segments_end || cp.log_end_offset < first {
            self.sink.add(
                ProblemKind::CheckpointAheadOfLog,
                Severity::Error,
                &path,
                0,
                Some(cp.log_end_offset),
                format!(
                    "checkpoint ends at {} outside the segment files ({first}..{segments_end}): \
                     segments are missing and the store refuses to open (R16)",
                    cp.log_end_offset
                ),
            );
        } else if !self.checkpoint_end_reached && !at_start {
            self.sink.add(
                ProblemKind::CheckpointAheadOfLog,
                Severity::Error,
                &path,
                0,
                Some(cp.log_end_offset),
                format!(
                    "checkpoint ends at {}, where no valid record ends (the valid log ends at \
                     {log_end}): recovery rejects it and scans the whole log (R18)",
                    cp.log_end_offset
                ),
            );
        }
        let no_record = cp.last_record_offset == cp.log_end_offset;
        if (no_record && cp.log_end_offset != first)
            || (!no_record && !self.checkpoint_last_record_seen)
        {
            self.sink.add(
                ProblemKind::CheckpointNotAtRecordEnd,
                Severity::Error,
                &path,
                0,
                Some(cp.last_record_offset),
                format!(
                    "checkpoint names its last record at {}, where no valid record starts",
                    cp.last_record_offset
                ),
            );
        }
        let Some((counts, cursors)) = &self.at_checkpoint else {
            return;
        };
        let mut mismatches = Vec::new();
        for (key, count) in &cp.queue_counts {
            let found = counts.get(key).copied().unwrap_or(0);
            if found != *count {
                mismatches.push((key.clone(), *count, found));
            }
        }
        for (key, found) in counts {
            if *found > 0 && !cp.queue_counts.iter().any(|(k, _)| k == key) {
                mismatches.push((key.clone(), 0, *found));
            }
        }
        mismatches.sort();
        for (key, count, found) in mismatches {
            self.sink.add(
                ProblemKind::CheckpointQueueCount,
                Severity::Error,
                &path,
                0,
                Some(cp.log_end_offset),
                format!(
                    "checkpoint counts {count} entries in {}, the log holds {found} records of it \
                     below the checkpoint's end",
                    queue_name(&key)
                ),
            );
        }
        for level in 1..=u8::MAX {
            let stored = cp
                .level_cursors
                .iter()
                .filter(|(l, _)| *l == level)
                .map(|(_, c)| *c)
                .max()
                .unwrap_or(0);
            let found = cursors
                .iter()
                .find(|(l, _)| *l == level)
                .map_or(0, |(_, c)| *c);
            if stored != found {
                self.sink.add(
                    ProblemKind::CheckpointCursor,
                    Severity::Error,
                    &path,
                    0,
                    Some(cp.log_end_offset),
                    format!(
                        "checkpoint says level {level} is delivered up to {stored}, the log's \
                         deliveries below its end say {found}"
                    ),
                );
            }
        }
    }
}

/// `topic/queue` or `__delay/level`.
pub fn queue_name(key: &QueueKey) -> String {
    match key {
        QueueKey::Topic { topic, queue_id } => format!("{topic}/{queue_id}"),
        QueueKey::DelayLevel(level) => format!("{}/{level}", crate::consume_queue::DELAY_DIR),
    }
}

/// Written entries at or after the queue's record count.
fn entries_past(fs: &dyn FileSystem, state: &mut QueueState) -> Result<Option<Trailing>> {
    let next = state.next;
    let (count, first) = state.reader.written_from(fs, next)?;
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
        match header.kind {
            RecordKind::Message => {
                self.sink.report.messages += 1;
                if header.delay_level > 0 {
                    self.sink.report.delayed_messages += 1;
                    if let Some(state) = self.level_states.get_mut(usize::from(header.delay_level))
                    {
                        state.set_origin(header.queue_offset, at.log_offset);
                    }
                }
            }
            RecordKind::Delivery => {
                self.sink.report.deliveries += 1;
                self.check_delivery(at, record);
            }
            RecordKind::Filler => {}
        }
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
