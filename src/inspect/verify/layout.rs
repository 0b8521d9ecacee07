//! Checks of names and file layout: leftovers and strangers, contiguous segments, queue
//! files, committed consumer offsets.

use std::collections::HashMap;
use std::path::Path;

use crate::consume_queue::entry::ENTRY_BYTES;
use crate::consume_queue::QueueKey;
use crate::consumer_offsets::{decode_offsets, OFFSETS_FILE};
use crate::io::FileSystem;
use crate::meta::StoreMeta;

use super::super::files::StoreFiles;
use super::super::problem::{ProblemKind, Severity};
use super::super::queue_reader::capacity_entries;
use super::{Sink, VerifyOptions};

/// Leftovers and strangers, and queue directories beyond their topic's queue count.
pub(super) fn check_names(sink: &mut Sink<'_>, files: &StoreFiles, meta: Option<&StoreMeta>) {
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
pub(super) fn check_segment_layout(sink: &mut Sink<'_>, files: &StoreFiles) {
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

/// Queue files: whole entries, contiguous, not longer than configured, starting at entry 0
/// while the log starts at offset 0 (retention deletes queue files only after the segments
/// they point into, as recovery assumes).
pub(super) fn check_queue_layout(sink: &mut Sink<'_>, files: &StoreFiles, options: &VerifyOptions) {
    let log_start = files.segments.first().map_or(0, |s| s.base_offset);
    for queue in &files.queues {
        let mut expected = match queue.files.first() {
            Some(first) if log_start > 0 => first.first_entry,
            _ => 0,
        };
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

/// Committed offsets must lie within their queue. `counts` holds the queues whose records the
/// scan met; after retention (`whole_log` false) a queue whose records are all gone has no
/// known end and is not checked.
pub(super) fn check_consumer_offsets(
    fs: &dyn FileSystem,
    dir: &Path,
    sink: &mut Sink<'_>,
    counts: &HashMap<QueueKey, u64>,
    whole_log: bool,
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
        let end = match counts.get(&key) {
            Some(end) => *end,
            None if whole_log => 0,
            None => continue,
        };
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
