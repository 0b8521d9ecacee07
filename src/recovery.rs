//! Recovery: rebuilds everything derived from the commit log when a store opens.
//!
//! Every situation it can meet is a labelled case in `docs/recovery.md` (R01..R22), each with a
//! test of the same name in `tests/recovery.rs`. The steps:
//! 1. open the segments; a gap between segments is a positioned corruption (never guessed);
//! 2. read the checkpoint; if missing, corrupt or inconsistent with the log, fall back to a
//!    full scan;
//! 3. scan from the checkpoint's log end, accepting a record only if its header, length,
//!    stored position and CRC all match; the first failure is the end of the log (after a
//!    clean close the scan stops at its first header, so a clean reopen reads no log);
//! 4. cut there: zero the rest of that segment, remove later segments;
//! 5. truncate each consume queue to its checkpointed count, after checking its last entry
//!    against the log; a queue that fails is cut at its last good entry and rebuilt;
//! 6. replay dispatch over the scanned range, then sync everything it touched.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::checkpoint::Checkpoint;
use crate::commit_log::preallocate::PREPARING_SUFFIX;
use crate::commit_log::record::{
    checked_bytes, decode_header, decode_record, RecordKind, HEADER_BYTES,
};
use crate::commit_log::segment::Segment;
use crate::commit_log::{CommitLog, COMMIT_LOG_DIR};
use crate::consume_queue::{ConsumeQueue, ConsumeQueues, QueueKey, TimedQueue};
use crate::decisions::Decisions;
use crate::dispatch::{dispatch_range, dispatch_target, DeliveryCursors, DispatchProgress};
use crate::error::{DecodeError, Error, Result};
use crate::io::{create_dir_synced, FileSystem, OpenMode};
use crate::naming::parse_offset_file_name;
use crate::options::SegmentFill;

/// Segments must end below this log offset (2^62): every offset and length computed from a
/// position in the log then fits in a `u64`, whatever the file names say.
pub const LOG_OFFSET_LIMIT: u64 = 1 << 62;

/// How the checkpoint was used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckpointUse {
    /// No checkpoint: a new store, or one that never wrote one. Full scan.
    Missing,
    /// The checkpoint was used as the scan start.
    Used {
        /// Whether it was written by a clean close.
        clean_shutdown: bool,
    },
    /// The checkpoint was unreadable or did not match the log; full scan and queue rebuild.
    Rejected {
        /// Why.
        reason: String,
    },
}

/// Where and why the scan stopped before the last byte written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornTail {
    /// Segment file.
    pub file: PathBuf,
    /// Offset inside the file.
    pub offset: u64,
    /// Commit-log offset.
    pub log_offset: u64,
    /// The failed check.
    pub kind: DecodeError,
}

/// What recovery found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Checkpoint use.
    pub checkpoint: CheckpointUse,
    /// Log offset the scan started at.
    pub scan_from: u64,
    /// The recovered end of the log.
    pub log_end_offset: u64,
    /// Records validated by the scan.
    pub records_scanned: u64,
    /// Set when the scan stopped at bytes that were not zero (a torn or corrupt record).
    pub torn_tail: Option<TornTail>,
    /// Segment files removed because they lay after the end (or were cut short at creation).
    pub segments_removed: Vec<PathBuf>,
    /// How many of the removed segments held data (not only zeros at their start).
    pub segments_removed_with_data: u64,
    /// Bytes after the end of the log, in the segment holding it, that were not zero and were
    /// zeroed (counted by 4 KiB page): what a torn write left, or data after a hole.
    pub discarded_tail_bytes: u64,
    /// Consume-queue entries dropped because they lay after the checkpointed counts.
    pub queues_truncated: Vec<QueueKey>,
    /// Queues found damaged and rebuilt from the log.
    pub queues_rebuilt: Vec<QueueKey>,
    /// Entries written by replaying dispatch.
    pub entries_replayed: u64,
    /// Consumer offsets that pointed past their recovered queue and were lowered to its end:
    /// (group, topic, queue, from, to). Filled in by the store after recovery.
    pub consumer_offsets_clamped: Vec<(String, String, u32, u64, u64)>,
    /// Decision files found shorter than their fixed length (cut by damage, or left by a crash
    /// while being created), whose slots were rebuilt from the log (R27).
    pub decision_files_rebuilt: Vec<PathBuf>,
}

impl RecoveryReport {
    /// Whether recovery cut, discarded or rebuilt anything (worth a line in the log).
    pub fn lost_anything(&self) -> bool {
        self.torn_tail.is_some()
            || self.discarded_tail_bytes > 0
            || self.segments_removed_with_data > 0
            || !self.queues_rebuilt.is_empty()
            || !self.consumer_offsets_clamped.is_empty()
            || !self.decision_files_rebuilt.is_empty()
            || matches!(self.checkpoint, CheckpointUse::Rejected { .. })
    }
}

/// The recovered parts a store is built from.
#[derive(Debug)]
pub struct Recovered {
    /// The commit log, ready to append at its end.
    pub log: CommitLog,
    /// Every consume queue, agreeing with the log.
    pub queues: ConsumeQueues,
    /// The decision columns, holding every decision recorded in the log.
    pub decisions: Decisions,
    /// Dispatch progress (at the log end).
    pub progress: DispatchProgress,
    /// What happened.
    pub report: RecoveryReport,
}

/// Settings recovery needs.
#[derive(Debug, Clone)]
pub struct RecoveryConfig {
    /// Store directory.
    pub dir: PathBuf,
    /// File system.
    pub fs: Arc<dyn FileSystem>,
    /// Size of new segments.
    pub segment_bytes: u64,
    /// Entries per new consume-queue file.
    pub queue_file_entries: u64,
    /// How new segments are prepared.
    pub segment_fill: SegmentFill,
}

/// Runs recovery on the store directory.
pub fn recover(config: &RecoveryConfig) -> Result<Recovered> {
    let fs = config.fs.clone();
    let log_dir = config.dir.join(COMMIT_LOG_DIR);
    create_dir_synced(fs.as_ref(), &log_dir).map_err(|e| Error::io(&log_dir, e))?;
    let (mut segments, mut segments_removed) = open_segments(fs.as_ref(), &log_dir)?;

    let first_offset = segments.first().map_or(0, |s| s.base_offset);
    let log_limit = segments.last().map_or(0, Segment::end_offset);
    let (mut checkpoint_use, checkpoint) = match Checkpoint::load(fs.as_ref(), &config.dir) {
        Ok(None) => (CheckpointUse::Missing, None),
        Ok(Some(cp)) if cp.log_end_offset > log_limit || cp.log_end_offset < first_offset => {
            // The checkpoint is intact but the log does not reach it: segments are missing.
            // Opening would silently lose everything they held; refuse, naming the gap.
            return Err(Error::Corruption {
                file: log_dir,
                offset: log_limit,
                kind: DecodeError::WrongPosition {
                    stored: cp.log_end_offset,
                    actual: if cp.log_end_offset < first_offset {
                        first_offset
                    } else {
                        log_limit
                    },
                },
            });
        }
        Ok(Some(cp)) => match check_checkpoint(&segments, &cp, first_offset) {
            Ok(()) => (
                CheckpointUse::Used {
                    clean_shutdown: cp.clean_shutdown,
                },
                Some(cp),
            ),
            Err(reason) => (CheckpointUse::Rejected { reason }, None),
        },
        Err(err) => (
            CheckpointUse::Rejected {
                reason: err.to_string(),
            },
            None,
        ),
    };
    if checkpoint.is_none() && segments.is_empty() {
        checkpoint_use = CheckpointUse::Missing;
    }
    let scan_from = checkpoint
        .as_ref()
        .map_or(first_offset, |c| c.log_end_offset);
    let scan = scan(&segments, scan_from);

    // After a clean close that the scan confirmed (it ended on zeros right at the checkpoint),
    // the tail is known to be zero: skip reading the rest of the segment.
    let end = scan.end_offset;
    let clean_end = scan.torn_tail.is_none()
        && end == scan_from
        && matches!(
            checkpoint_use,
            CheckpointUse::Used {
                clean_shutdown: true
            }
        );
    // Cut the log at the end of the last valid record: segments after it go, except, after a
    // clean close, the zero-filled next segment the preallocator had made (kept, so a reopen
    // does not write a segment of zeros again).
    let active_end = segments
        .iter()
        .find(|s| s.contains(end))
        .map_or(end, Segment::end_offset);
    let mut prepared = None;
    let mut segments_removed_with_data = 0;
    while segments.last().is_some_and(|s| s.base_offset > end) {
        let Some(segment) = segments.pop() else { break };
        let keep = clean_end
            && segment.base_offset == active_end
            && segment.len_bytes() == config.segment_bytes
            && segments.last().is_some_and(|s| s.contains(end));
        if keep {
            // Opened as an existing file, it is all readable; it is empty, so the writer's
            // boundary starts at 0 (its zero content was confirmed by the clean close).
            let mut segment = segment;
            segment
                .file
                .reset_tail(0, false)
                .map_err(|e| Error::io(&segment.path, e))?;
            prepared = Some(segment);
            continue;
        }
        let mut head = [0u8; HEADER_BYTES];
        if segment.file.read_at(0, &mut head).is_ok() && head.iter().any(|&b| b != 0) {
            segments_removed_with_data += 1;
        }
        let path = segment.path.clone();
        drop(segment);
        fs.remove_file(&path).map_err(|e| Error::io(&path, e))?;
        segments_removed.push(path);
    }
    let mut discarded_tail_bytes = 0;
    for segment in segments.iter_mut() {
        if segment.contains(end) {
            discarded_tail_bytes += segment
                .file
                .reset_tail(end - segment.base_offset, !clean_end)
                .map_err(|e| Error::io(&segment.path, e))?;
        }
        // Records accepted by the scan may still be only in the page cache (process crash):
        // make them durable before a checkpoint can claim them.
        let lo = scan_from.max(segment.base_offset);
        let hi = end.min(segment.end_offset());
        if lo < hi {
            segment
                .file
                .sync_range(lo - segment.base_offset, hi - lo)
                .map_err(|e| Error::io(&segment.path, e))?;
        }
    }
    fs.sync_dir(&log_dir).map_err(|e| Error::io(&log_dir, e))?;
    let log = CommitLog::from_recovered(
        fs.clone(),
        &log_dir,
        segments,
        prepared,
        end,
        config.segment_bytes,
        config.segment_fill,
    )?;

    // Consume queues: truncate to the checkpointed counts, rebuild the damaged ones.
    let decisions = Decisions::new(config.fs.clone(), &config.dir);
    // Before anything opens a decision file (opening brings it to its full length).
    let short_decision_files = decisions.short_files()?;
    let queues = ConsumeQueues::new(
        fs.clone(),
        &config.dir,
        config.queue_file_entries,
        config.segment_fill,
    );
    let expected: Vec<(QueueKey, u64)> = checkpoint
        .as_ref()
        .map(|c| c.queue_counts.clone())
        .unwrap_or_default();
    let mut keys: Vec<QueueKey> = queues.list_on_disk()?;
    keys.extend(expected.iter().map(|(k, _)| k.clone()));
    keys.sort();
    keys.dedup();
    let mut queues_truncated = Vec::new();
    let mut queues_rebuilt = Vec::new();
    let mut rebuild_from = scan_from;
    for key in keys {
        let mut queue = queues.open_detached(key.as_ref())?;
        // Without a checkpoint, the files say how far the queue went: the entries whose
        // records retention deleted cannot be replayed from the log, so they are kept (the
        // search below keeps exactly those) and the queue's numbering goes on after them. A
        // queue restarted at 0 would reuse offsets that surviving delivery records name.
        let count = match &checkpoint {
            Some(_) => expected
                .iter()
                .find(|(k, _)| *k == key)
                .map_or(0, |(_, c)| *c),
            None => queue.contiguous_end(),
        };
        let good = good_prefix(&log, &queue, &key, count, scan_from);
        if good < count {
            queues_rebuilt.push(key.clone());
            let restart = match good.checked_sub(1) {
                Some(last) => queue
                    .get(last)
                    .map(|e| e.log_offset + u64::from(e.record_bytes))
                    .unwrap_or(first_offset),
                _ => first_offset,
            };
            // An entry whose record retention deleted ends below the log start.
            rebuild_from = rebuild_from.min(restart.max(first_offset));
        }
        // Files are pre-sized: an entry that decodes past `good` is one being dropped.
        if queue.get(good).is_ok() {
            queues_truncated.push(key.clone());
        }
        queue.truncate_to(good, !clean_end || good < count)?;
        queues.insert(&key, queue);
    }

    let (cursor_list, segment_refs) = checkpoint
        .as_ref()
        .map(|c| (c.cursors.clone(), c.segment_refs.clone()))
        .unwrap_or_default();
    let cursors = DeliveryCursors::from_lists(&cursor_list, &segment_refs);
    let mut entries_replayed = 0;
    if !queues_rebuilt.is_empty() {
        let only: HashSet<QueueKey> = queues_rebuilt.iter().cloned().collect();
        entries_replayed += dispatch_range(
            &log,
            &queues,
            &decisions,
            &cursors,
            rebuild_from,
            scan_from,
            Some(&only),
        )?
        .entries;
    }
    let replay = dispatch_range(&log, &queues, &decisions, &cursors, scan_from, end, None)?;
    entries_replayed += replay.entries;
    let decision_files_rebuilt =
        rebuild_short_decision_files(&log, &decisions, short_decision_files)?;
    queues.sync_all()?;
    decisions.sync_all()?;

    let last_record = replay
        .last_record_offset
        .or(scan.last_record_offset)
        .or(checkpoint.as_ref().map(|c| c.last_record_offset))
        .unwrap_or(end);
    let progress = DispatchProgress::new(end, last_record, cursors);
    Ok(Recovered {
        log,
        queues,
        decisions,
        progress,
        report: RecoveryReport {
            checkpoint: checkpoint_use,
            scan_from,
            log_end_offset: end,
            records_scanned: scan.records,
            torn_tail: scan.torn_tail,
            segments_removed,
            segments_removed_with_data,
            discarded_tail_bytes,
            queues_truncated,
            queues_rebuilt,
            entries_replayed,
            consumer_offsets_clamped: Vec::new(),
            decision_files_rebuilt,
        },
    })
}

/// Opens every segment file, sorted. A gap between two segments is a corruption (nothing is
/// removed then). A last file shorter than a record header is a segment whose creation was
/// cut short: it holds nothing and is removed (returned in the second list).
fn open_segments(fs: &dyn FileSystem, dir: &Path) -> Result<(Vec<Segment>, Vec<PathBuf>)> {
    let listed = fs.list_dir(dir).map_err(|e| Error::io(dir, e))?;
    let mut removed = Vec::new();
    // A segment the preallocator was still preparing: never used, never named as a segment.
    for name in listed.iter().filter(|n| n.ends_with(PREPARING_SUFFIX)) {
        let path = dir.join(name);
        fs.remove_file(&path).map_err(|e| Error::io(&path, e))?;
        removed.push(path);
    }
    let mut names: Vec<(u64, String)> = listed
        .into_iter()
        .filter_map(|name| parse_offset_file_name(&name).map(|base| (base, name)))
        .collect();
    names.sort();
    let mut files = Vec::with_capacity(names.len());
    for (base_offset, name) in names {
        let path = dir.join(&name);
        let len = fs.file_len(&path).map_err(|e| Error::io(&path, e))?;
        files.push((base_offset, path, len));
    }
    let last = files.len().saturating_sub(1);
    let mut expected = files.first().map(|f| f.0);
    for (index, (base_offset, path, len)) in files.iter().enumerate() {
        // Offsets stay far from overflow: a segment must end below 2^62.
        let in_range = base_offset
            .checked_add(*len)
            .is_some_and(|end| end < LOG_OFFSET_LIMIT);
        if expected != Some(*base_offset)
            || !in_range
            || (*len < HEADER_BYTES as u64 && index != last)
        {
            return Err(Error::Corruption {
                file: path.clone(),
                offset: 0,
                kind: DecodeError::WrongPosition {
                    stored: *base_offset,
                    actual: expected.unwrap_or(0),
                },
            });
        }
        expected = base_offset.checked_add(*len);
    }
    let mut segments = Vec::with_capacity(files.len());
    for (base_offset, path, len) in files {
        if len < HEADER_BYTES as u64 {
            fs.remove_file(&path).map_err(|e| Error::io(&path, e))?;
            removed.push(path);
            continue;
        }
        let file = fs
            .open_mapped(&path, OpenMode::Existing)
            .map_err(|e| Error::io(&path, e))?;
        segments.push(Segment {
            base_offset,
            path,
            file,
        });
    }
    Ok((segments, removed))
}

/// Rebuilds the slots of decision files shorter than their fixed length from the delivery and
/// cancel records of the whole log (one scan, only when such a file exists), and brings each
/// to its full length so the next open does not scan again. Returns their paths.
fn rebuild_short_decision_files(
    log: &CommitLog,
    decisions: &Decisions,
    short: Vec<(TimedQueue, u64, PathBuf)>,
) -> Result<Vec<PathBuf>> {
    if short.is_empty() {
        return Ok(Vec::new());
    }
    let file_of = |queue: TimedQueue, index: u64| {
        let first = index - index % crate::decisions::DECISION_FILE_SLOTS;
        short.iter().any(|(q, f, _)| *q == queue && *f == first)
    };
    crate::decisions::scan_log(log, log.start_offset(), |decision, origin| {
        if file_of(origin.first, origin.first_offset) {
            decisions.set(origin.first, origin.first_offset, decision)?;
        }
        Ok(false)
    })?;
    for (queue, first, _) in &short {
        decisions.ensure(*queue, *first)?;
    }
    Ok(short.into_iter().map(|(_, _, path)| path).collect())
}

/// A checkpoint is usable if it ends exactly where its last record (plus, at a segment's end,
/// the filler after it) ends: anything else would restart the log after a hole.
fn check_checkpoint(
    segments: &[Segment],
    cp: &Checkpoint,
    first_offset: u64,
) -> std::result::Result<(), String> {
    let end = cp.log_end_offset;
    if cp.last_record_offset == end {
        return if end == first_offset {
            Ok(())
        } else {
            Err(format!(
                "checkpoint names no last record but ends at {end}, not at the log start"
            ))
        };
    }
    let invalid =
        |at: u64, kind: DecodeError| format!("checkpoint's last record at {at} is invalid: {kind}");
    let (len, _) = read_valid(segments, cp.last_record_offset)
        .map_err(|kind| invalid(cp.last_record_offset, kind))?;
    let after = cp.last_record_offset + len;
    if after == end {
        return Ok(());
    }
    match read_valid(segments, after) {
        Ok((filler, RecordKind::Filler)) if after + filler == end => Ok(()),
        _ => Err(format!(
            "checkpoint ends at {end}, but its last record ends at {after}"
        )),
    }
}

struct Scan {
    end_offset: u64,
    records: u64,
    last_record_offset: Option<u64>,
    torn_tail: Option<TornTail>,
}

/// Validates records from `from` until the first one that fails.
fn scan(segments: &[Segment], from: u64) -> Scan {
    let mut pos = from;
    let mut records = 0;
    let mut last = None;
    let torn_tail = loop {
        let Some(segment) = segments.iter().find(|s| s.contains(pos)) else {
            break None;
        };
        match read_valid(segments, pos) {
            Ok((len, _)) => {
                records += 1;
                last = Some(pos);
                pos += len;
            }
            Err(DecodeError::BadMagic { found: 0 }) => break None,
            Err(kind) => {
                break Some(TornTail {
                    file: segment.path.clone(),
                    offset: pos - segment.base_offset,
                    log_offset: pos,
                    kind,
                })
            }
        }
    };
    Scan {
        end_offset: pos,
        records,
        last_record_offset: last,
        torn_tail,
    }
}

/// Fully validates the record at `pos` (header, length within its segment, position, CRC,
/// fields) and returns its length and kind.
fn read_valid(
    segments: &[Segment],
    pos: u64,
) -> std::result::Result<(u64, RecordKind), DecodeError> {
    let segment = segments
        .iter()
        .find(|s| s.contains(pos))
        .ok_or(DecodeError::Truncated {
            needed: HEADER_BYTES as u64,
            available: 0,
        })?;
    let at = pos - segment.base_offset;
    let available = segment.len_bytes() - at;
    let mut header = [0u8; HEADER_BYTES];
    if available < HEADER_BYTES as u64 {
        return Err(DecodeError::Truncated {
            needed: HEADER_BYTES as u64,
            available,
        });
    }
    read_bytes(segment, at, &mut header)?;
    let decoded = decode_header(&header, pos)?;
    let total = u64::from(decoded.total_bytes);
    if total > available {
        return Err(DecodeError::BadLength { length: total });
    }
    let mut buf = vec![0u8; usize::try_from(checked_bytes(&decoded)).unwrap_or(usize::MAX)];
    read_bytes(segment, at, &mut buf)?;
    match decoded.kind {
        RecordKind::Filler => {
            crate::commit_log::record::verify_crc(&buf, decoded.crc)?;
            if at + total != segment.len_bytes() {
                return Err(DecodeError::BadLength { length: total });
            }
        }
        RecordKind::Message
        | RecordKind::Delivery
        | RecordKind::Hop
        | RecordKind::Cancel
        | RecordKind::Discard => {
            decode_record(&buf, pos)?;
        }
    }
    Ok((total, decoded.kind))
}

fn read_bytes(segment: &Segment, at: u64, buf: &mut [u8]) -> std::result::Result<(), DecodeError> {
    segment
        .file
        .read_at(at, buf)
        .map_err(|_| DecodeError::Truncated {
            needed: buf.len() as u64,
            available: 0,
        })
}

/// How many leading entries of `queue` can be trusted, at most `count`. Entries below the
/// checkpointed count were synced before the checkpoint, so they are intact unless files are
/// missing or damaged: the files must be contiguous from the first one retention kept, and the
/// last entry must match its record. Otherwise the longest
/// matching prefix before the first gap is found by binary search (an entry matches only if its
/// record names this queue and this index, so matching entries form a prefix); damage inside a
/// file that leaves the last entry intact is outside the fault model and is reported by reads
/// as a positioned corruption instead.
fn good_prefix(
    log: &CommitLog,
    queue: &ConsumeQueue,
    key: &QueueKey,
    count: u64,
    limit: u64,
) -> u64 {
    // Queue files go only after retention deleted log segments: a queue that starts later in
    // a log that still starts at 0 lost its first files, and is rebuilt.
    let min = queue.min_entry();
    if min > 0 && log.start_offset() == 0 {
        return 0;
    }
    if count <= min {
        return count.min(min);
    }
    let contiguous = queue.contiguous_end().min(count);
    let matches = |index: u64| entry_matches(log, queue, key, index, limit);
    if contiguous == count && matches(count - 1) {
        return count;
    }
    let (mut lo, mut hi) = (min, contiguous.max(min));
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if matches(mid) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo
}

/// Whether entry `index` points at a valid record below `limit` that belongs to this queue at
/// this index.
fn entry_matches(
    log: &CommitLog,
    queue: &ConsumeQueue,
    key: &QueueKey,
    index: u64,
    limit: u64,
) -> bool {
    let Ok(entry) = queue.get(index) else {
        return false;
    };
    if entry.log_offset < log.start_offset() {
        // Its record was deleted by retention: nothing to check it against.
        return true;
    }
    if entry
        .log_offset
        .saturating_add(u64::from(entry.record_bytes))
        > limit
    {
        return false;
    }
    let Ok(bytes) = log.read_record(entry.log_offset) else {
        return false;
    };
    let Ok(record) = decode_record(&bytes, entry.log_offset) else {
        return false;
    };
    record.header.total_bytes == entry.record_bytes
        && record.header.queue_offset == index
        && dispatch_target(&record.header, record.topic).is_some_and(|t| t == key.as_ref())
}
