//! What recovery would do, computed by recovery itself over a read-only view.
//!
//! [`plan_recovery`] runs [`crate::recovery::recover`] unchanged over an
//! [`OverlayFs`]: every decision (which checkpoint to trust, where to cut, which segments and
//! queue entries go, which queues are rebuilt) is recovery's own, and every change it would
//! make is kept in memory and listed instead of being made. Nothing on disk changes; the
//! directory's lock is taken shared for the duration, so no store opens meanwhile.
//!
//! It adds what recovery does not report itself: the valid records lying after the cut (found
//! by the scan of [`super::log_scan`], which resumes after damage), which the cut drops.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::commit_log::preallocate::PREPARING_SUFFIX;
use crate::commit_log::record::{RecordKind, RecordView};
use crate::consume_queue::QueueKey;
use crate::consumer_offsets::ConsumerOffsets;
use crate::error::{Error, Result};
use crate::io::{Change, FileSystem, OverlayFs};
use crate::meta::StoreMeta;
use crate::options::SegmentFill;
use crate::recovery::{recover, RecoveryConfig, RecoveryReport};

use super::files::StoreFiles;
use super::log_scan::{scan_log, RecordAt, ScanVisitor};
use super::probe_lock;

/// Dropped records listed one by one before the rest are only counted.
pub const DROPPED_LISTED_MAX: usize = 10_000;

/// The settings recovery runs with (the store's options).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlanConfig {
    /// Size of new segments (`Options::segment_bytes`).
    pub segment_bytes: u64,
    /// Entries per new queue file (`Options::consume_queue_file_entries`).
    pub queue_file_entries: u64,
    /// How new segments are prepared.
    pub segment_fill: SegmentFill,
}

/// A valid record that lies after the recovered end of the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DroppedRecord {
    /// Its log offset (for a message, its id).
    pub log_offset: u64,
    /// Its segment file.
    pub file: PathBuf,
    /// Its byte offset there.
    pub file_offset: u64,
    /// Message or delivery.
    pub kind: RecordKind,
    /// Topic.
    pub topic: String,
    /// Queue id.
    pub queue_id: u32,
    /// Offset in its queue (its level's queue for a delayed message).
    pub queue_offset: u64,
    /// Delay level (0 = none).
    pub delay_level: u8,
    /// Store time.
    pub store_ms: u64,
    /// Length in bytes.
    pub record_bytes: u64,
}

/// What recovery would do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveryPlan {
    /// Recovery's own report, as it would be (consumer offsets clamped included).
    pub report: RecoveryReport,
    /// Every change it would make to the directory, in order.
    pub changes: Vec<Change>,
    /// Valid records after the recovered end (at most [`DROPPED_LISTED_MAX`]).
    pub dropped: Vec<DroppedRecord>,
    /// All valid records after the recovered end.
    pub dropped_count: u64,
    /// Their bytes.
    pub dropped_bytes: u64,
}

/// Computes what opening the store in `dir` would do, without changing anything. Fails with
/// [`Error::Locked`] when a live store holds it, [`Error::StoreNotFound`] when there is none,
/// and with recovery's own error when recovery would refuse to open (a segment gap, R14).
pub fn plan_recovery(dir: &Path, config: &PlanConfig) -> Result<RecoveryPlan> {
    let overlay = OverlayFs::new();
    let _lock = probe_lock(&overlay, dir)?;
    if StoreMeta::load(&overlay, dir)?.is_none() {
        return Err(Error::StoreNotFound {
            dir: dir.to_path_buf(),
        });
    }
    let fs: Arc<dyn FileSystem> = Arc::new(overlay.clone());
    let recovered = recover(&RecoveryConfig {
        dir: dir.to_path_buf(),
        fs: fs.clone(),
        segment_bytes: config.segment_bytes,
        queue_file_entries: config.queue_file_entries,
        segment_fill: config.segment_fill,
    })?;
    recovered.log.stop();
    let mut report = recovered.report;
    // What `Store::open` does next: lower offsets past their recovered queue.
    let offsets = ConsumerOffsets::load(fs, dir)?;
    for (key, queue) in recovered.queues.all() {
        if let QueueKey::Topic { topic, queue_id } = key {
            report.consumer_offsets_clamped.extend(offsets.clamp(
                &topic,
                queue_id,
                queue.entry_count(),
            ));
        }
    }
    let changes = overlay
        .changes()
        .into_iter()
        .filter(|change| !is_preparation(change))
        .collect();

    // The records the cut drops, read from the files as they are (a fresh view).
    let original = OverlayFs::new();
    let files = StoreFiles::survey(&original, dir)?;
    let mut collect = Collect {
        files: &files,
        dropped: Vec::new(),
        count: 0,
        bytes: 0,
    };
    scan_log(
        &original,
        &files.segments,
        report.log_end_offset,
        &mut collect,
    )?;
    Ok(RecoveryPlan {
        changes,
        dropped: collect.dropped,
        dropped_count: collect.count,
        dropped_bytes: collect.bytes,
        report,
    })
}

/// The preallocator's routine preparation of the next segment (a `*.prealloc` file created
/// and renamed into place) is the store starting, not recovery deciding.
fn is_preparation(change: &Change) -> bool {
    let preparing = |p: &Path| p.to_string_lossy().ends_with(PREPARING_SUFFIX);
    match change {
        Change::Rename { from, .. } => preparing(from),
        Change::CreateFile { path, .. }
        | Change::Write { path, .. }
        | Change::ZeroTail { path, .. } => preparing(path),
        Change::CreateDir { .. }
        | Change::SetLen { .. }
        | Change::WriteFile { .. }
        | Change::Remove { .. } => false,
    }
}

struct Collect<'a> {
    files: &'a StoreFiles,
    dropped: Vec<DroppedRecord>,
    count: u64,
    bytes: u64,
}

impl ScanVisitor for Collect<'_> {
    fn record(&mut self, at: &RecordAt, record: &RecordView<'_>) {
        let header = &record.header;
        self.count += 1;
        self.bytes += u64::from(header.total_bytes);
        if self.dropped.len() < DROPPED_LISTED_MAX {
            self.dropped.push(DroppedRecord {
                log_offset: at.log_offset,
                file: self
                    .files
                    .segments
                    .get(at.segment)
                    .map(|s| s.path.clone())
                    .unwrap_or_default(),
                file_offset: at.file_offset,
                kind: header.kind,
                topic: record.topic.to_owned(),
                queue_id: header.queue_id,
                queue_offset: header.queue_offset,
                delay_level: header.delay_level,
                store_ms: header.store_ms,
                record_bytes: u64::from(header.total_bytes),
            });
        }
    }
}
