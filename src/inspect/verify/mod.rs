//! `verify`: a read-only check of a whole store. Every record's header, length, position and
//! CRC (through [`super::log_scan`]); every consume-queue entry against the record it indexes,
//! and every entry past the last record of its queue; delivery, hop, cancel and discard
//! records against the delayed messages and timed-queue entries they name; decision slots
//! against the delivery and cancel records; the checkpoint's log end, queue counts, cursors
//! and segment references against the log; the meta and consumer-offset files, and committed
//! offsets against their queues.
//!
//! It writes nothing and holds no lock of its own: the caller probes the lock first
//! ([`super::probe_lock`]) and keeps the guard while this runs.
//!
//! Severity follows what recovery would make of a problem: damage, loss and anything a correct
//! store never holds is an [`Severity::Error`]; what a killed process leaves and recovery
//! settles as a matter of course (entries not yet dispatched for records after the checkpoint,
//! a segment left half-prepared, a decision slot that outlived its record) is a
//! [`Severity::Warning`].
//!
//! After retention deleted the oldest segments, the log starts after offset 0: entries, slots
//! and references that point below its start name deleted records and are not checked.
//!
//! One concept per file: [`layout`] (names and file layout), [`checker`] (the scan: records
//! and queue entries), [`delays`] (delayed messages and decision slots), [`checkpoint`] (the
//! checkpoint against the log).

mod checker;
mod checkpoint;
mod delays;
mod layout;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use crate::checkpoint::{Checkpoint, CHECKPOINT_FILE};
use crate::consume_queue::QueueKey;
use crate::error::{Error, Result};
use crate::io::FileSystem;
use crate::meta::{StoreMeta, META_FILE};

use super::files::StoreFiles;
use super::log_scan::scan_log;
use super::problem::{Problem, ProblemKind, Severity};
use checker::Checker;

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
    /// Valid records (of every kind).
    pub records: u64,
    /// Valid message records.
    pub messages: u64,
    /// Of which delayed (by a delay level or an arbitrary delay).
    pub delayed_messages: u64,
    /// Valid delivery records.
    pub deliveries: u64,
    /// Valid hop records (timer messages moving down the wheel).
    pub hops: u64,
    /// Valid cancel records.
    pub cancels: u64,
    /// Valid discard records.
    pub discards: u64,
    /// Valid filler records.
    pub fillers: u64,
    /// Bytes of the valid records.
    pub record_bytes: u64,
    /// Bytes of segment files read.
    pub scanned_bytes: u64,
    /// Segment files.
    pub segments: u64,
    /// First log offset still stored (above 0 once retention deleted segments).
    pub log_start_offset: u64,
    /// Consume queues (on disk or named by a record).
    pub queues: u64,
    /// Queue entries that matched their record.
    pub queue_entries: u64,
    /// Where a full recovery scan would end the log: the first damage or zero header, or the
    /// end of the last segment.
    pub log_end_offset: u64,
    /// Valid records after `log_end_offset`: recovery would drop them.
    pub records_after_end: u64,
    /// Delayed messages neither delivered, cancelled nor discarded.
    pub pending_delayed: u64,
    /// Delayed messages cancelled (of those stored).
    pub cancelled_messages: u64,
    /// Delayed messages discarded without a delivery or a cancel (of those stored).
    pub discarded_messages: u64,
    /// Decision slots found set in the decision files.
    pub decision_slots: u64,
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
pub(super) struct Sink<'a> {
    on_problem: &'a mut dyn FnMut(&Problem),
    report: VerifyReport,
}

impl Sink<'_> {
    pub(super) fn add(
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
    shared_fs: &Arc<dyn FileSystem>,
    dir: &Path,
    options: &VerifyOptions,
    on_problem: &mut dyn FnMut(&Problem),
    progress: &mut dyn FnMut(u64, u64),
) -> Result<VerifyReport> {
    let fs = shared_fs.as_ref();
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
    layout::check_names(&mut sink, &files, meta.as_ref());
    layout::check_segment_layout(&mut sink, &files);
    layout::check_queue_layout(&mut sink, &files, options);

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
    let log_start = files.segments.first().map_or(0, |s| s.base_offset);
    let mut checker = Checker::new(shared_fs, dir, &files, checkpoint.as_ref(), &mut sink);
    let mut forward = |done: u64| progress(done, total_bytes);
    checker.progress = Some(&mut forward);
    let totals = scan_log(fs, &files.segments, 0, &mut checker)?;
    checker.progress = None;
    checker.finish(&files)?;
    checker.check_decision_files(&files);
    let counts = checker.queue_counts();
    let settled = checker.settled_messages;
    drop(checker);

    layout::check_consumer_offsets(fs, dir, &mut sink, &counts, log_start == 0);
    let report = &mut sink.report;
    report.scanned_bytes = totals.scanned_bytes;
    report.segments = files.segments.len() as u64;
    report.log_start_offset = log_start;
    report.pending_delayed = report.delayed_messages.saturating_sub(settled);
    Ok(sink.report)
}

/// `topic/queue`, `__delay/level` or `__timer/slot`.
pub fn queue_name(key: &QueueKey) -> String {
    match key {
        QueueKey::Topic { topic, queue_id } => format!("{topic}/{queue_id}"),
        QueueKey::DelayLevel(level) => format!("{}/{level}", crate::consume_queue::DELAY_DIR),
        QueueKey::TimerSlot(slot) => format!("{}/{slot}", crate::consume_queue::TIMER_DIR),
    }
}

/// `__delay/level` or `__timer/slot`.
pub fn timed_queue_name(queue: crate::consume_queue::TimedQueue) -> String {
    queue_name(&queue.queue_ref().to_key())
}
