//! `inspect`: what a store holds, from its files alone (read-only, no recovery): segments and
//! their offset ranges, queues and their entry counts, pending messages per delay level with
//! the next and the last due time, consumer groups and their lag, disk usage.
//!
//! Delivery progress is the checkpoint's level cursors advanced by the deliveries found after
//! the checkpoint's end (the same derivation recovery makes); queue entry counts are what the
//! files hold (after a crash, entries not yet dispatched are missing until the next open).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::checkpoint::Checkpoint;
use crate::commit_log::record::{OriginRef, RecordHeader, RecordKind, RecordView};
use crate::consume_queue::entry::Entry;
use crate::consume_queue::QueueKey;
use crate::consumer_offsets::{decode_offsets, OFFSETS_FILE};
use crate::error::{DecodeError, Result};
use crate::io::FileSystem;
use crate::meta::StoreMeta;

use super::files::StoreFiles;
use super::log_scan::{scan_log, RecordAt, ScanVisitor};
use super::queue_reader::{EntryLookup, QueueReader};
use super::verify::CheckpointFacts;

/// One segment file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentInfo {
    /// The file.
    pub path: PathBuf,
    /// Log offset of its first byte.
    pub base_offset: u64,
    /// Its length.
    pub len_bytes: u64,
    /// Where its data ends, if the log ends inside it.
    pub data_end_offset: Option<u64>,
}

/// One consume queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueInfo {
    /// Which queue.
    pub key: QueueKey,
    /// Its files.
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Entries written.
    pub entries: u64,
}

/// One delay level.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LevelInfo {
    /// The level.
    pub level: u8,
    /// Its delay in the table in force, in ms.
    pub delay_ms: Option<u64>,
    /// Messages put with it (entries of its queue).
    pub entries: u64,
    /// Of which delivered (or skipped as corrupt): the cursor.
    pub delivered: u64,
    /// Entries minus delivered.
    pub pending: u64,
    /// Due time of the first pending message.
    pub next_due_ms: Option<u64>,
    /// Due time of the last pending message: the level's horizon.
    pub last_due_ms: Option<u64>,
}

/// One consumer group's position in one queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerInfo {
    /// Group.
    pub group: String,
    /// Topic.
    pub topic: String,
    /// Queue id.
    pub queue: u32,
    /// Next offset it will read.
    pub committed_offset: u64,
    /// Entries in the queue.
    pub end_offset: u64,
    /// Entries it has not consumed.
    pub lag: u64,
}

/// Bytes on disk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiskUsage {
    /// Segment files.
    pub commit_log_bytes: u64,
    /// Queue files.
    pub consume_queue_bytes: u64,
    /// meta, checkpoint, consumer offsets, leftovers.
    pub small_file_bytes: u64,
}

/// What a store holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overview {
    /// Segments.
    pub segments: Vec<SegmentInfo>,
    /// Where the log's data ends (the first zero header or damage after the checkpoint).
    pub log_end_offset: u64,
    /// Queues.
    pub queues: Vec<QueueInfo>,
    /// Delay levels with a queue.
    pub levels: Vec<LevelInfo>,
    /// Consumer positions (empty if the file is missing or does not decode).
    pub consumers: Vec<ConsumerInfo>,
    /// Why the consumer offsets could not be read, if so.
    pub consumers_error: Option<String>,
    /// Disk usage.
    pub disk: DiskUsage,
    /// The checkpoint.
    pub checkpoint: Option<CheckpointFacts>,
    /// The settings.
    pub meta: Option<StoreMeta>,
}

impl Overview {
    /// Earliest due time among pending messages.
    pub fn next_due_ms(&self) -> Option<u64> {
        self.levels.iter().filter_map(|l| l.next_due_ms).min()
    }

    /// Latest due time among pending messages.
    pub fn horizon_ms(&self) -> Option<u64> {
        self.levels.iter().filter_map(|l| l.last_due_ms).max()
    }
}

/// Reads the overview of the store in `dir` through `fs` (a read-only view).
pub fn overview(
    fs: &dyn FileSystem,
    dir: &Path,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Overview> {
    let files = StoreFiles::survey(fs, dir)?;
    let meta = StoreMeta::load(fs, dir).ok().flatten();
    let checkpoint = Checkpoint::load(fs, dir).ok().flatten();
    let from = checkpoint.as_ref().map_or(0, |c| c.log_end_offset);
    let mut tail = Tail {
        cursors: BTreeMap::new(),
        end: None,
        progress,
        total: files.segment_bytes(),
    };
    for (level, delivered) in checkpoint.iter().flat_map(|c| c.level_cursors.iter()) {
        let cursor = tail.cursors.entry(*level).or_insert(0);
        *cursor = (*cursor).max(*delivered);
    }
    scan_log(fs, &files.segments, from, &mut tail)?;
    let log_end_offset = tail
        .end
        .unwrap_or_else(|| files.segments.last().map_or(0, |s| s.end_offset()));

    let mut out = Overview {
        log_end_offset,
        checkpoint: checkpoint.as_ref().map(|c| CheckpointFacts {
            log_end_offset: c.log_end_offset,
            last_record_offset: c.last_record_offset,
            written_ms: c.written_ms,
            clean_shutdown: c.clean_shutdown,
        }),
        ..Overview::default()
    };
    out.segments = files
        .segments
        .iter()
        .map(|s| SegmentInfo {
            path: s.path.clone(),
            base_offset: s.base_offset,
            len_bytes: s.len_bytes,
            data_end_offset: (s.base_offset <= log_end_offset && log_end_offset < s.end_offset())
                .then_some(log_end_offset),
        })
        .collect();
    let mut topic_ends: BTreeMap<(String, u32), u64> = BTreeMap::new();
    for queue in &files.queues {
        let mut reader = QueueReader::new(queue.clone());
        let entries = reader.written_count(fs)?;
        out.queues.push(QueueInfo {
            key: queue.key.clone(),
            files: queue.files.len() as u64,
            bytes: queue.files.iter().map(|f| f.len_bytes).sum(),
            entries,
        });
        match &queue.key {
            QueueKey::Topic { topic, queue_id } => {
                topic_ends.insert((topic.clone(), *queue_id), entries);
            }
            QueueKey::DelayLevel(level) => {
                let delivered = tail.cursors.get(level).copied().unwrap_or(0);
                let pending = entries.saturating_sub(delivered);
                let mut due = |index: u64| -> Result<Option<u64>> {
                    Ok(match reader.get(fs, index)? {
                        EntryLookup::Entry {
                            entry: Entry { time_ms, .. },
                            ..
                        } => Some(time_ms),
                        EntryLookup::Unwritten { .. } | EntryLookup::NoFile => None,
                    })
                };
                let (next_due_ms, last_due_ms) = if pending > 0 {
                    (due(delivered)?, due(entries - 1)?)
                } else {
                    (None, None)
                };
                out.levels.push(LevelInfo {
                    level: *level,
                    delay_ms: meta
                        .as_ref()
                        .and_then(|m| m.delay_levels_ms.get(usize::from(*level).checked_sub(1)?))
                        .copied(),
                    entries,
                    delivered,
                    pending,
                    next_due_ms,
                    last_due_ms,
                });
            }
        }
    }
    let offsets_path = dir.join(OFFSETS_FILE);
    if fs.exists(&offsets_path) {
        let table = fs
            .read_file(&offsets_path)
            .map_err(|e| e.to_string())
            .and_then(|bytes| decode_offsets(&bytes).map_err(|e| e.to_string()));
        match table {
            Ok(table) => {
                for ((group, topic, queue), committed_offset) in table {
                    let end_offset = topic_ends
                        .get(&(topic.clone(), queue))
                        .copied()
                        .unwrap_or(0);
                    out.consumers.push(ConsumerInfo {
                        lag: end_offset.saturating_sub(committed_offset),
                        group,
                        topic,
                        queue,
                        committed_offset,
                        end_offset,
                    });
                }
            }
            Err(why) => out.consumers_error = Some(why),
        }
    }
    out.disk = DiskUsage {
        commit_log_bytes: files.segment_bytes() + file_lengths(fs, &files.preparing),
        consume_queue_bytes: files.queue_bytes(),
        small_file_bytes: files.small_files.iter().map(|(_, len)| len).sum::<u64>()
            + file_lengths(fs, &files.temporaries),
    };
    out.meta = meta;
    Ok(out)
}

fn file_lengths(fs: &dyn FileSystem, paths: &[PathBuf]) -> u64 {
    paths.iter().filter_map(|p| fs.file_len(p).ok()).sum()
}

/// Follows the log after the checkpoint: deliveries advance their level's cursor; the first
/// zero header or damage is the end.
struct Tail<'a> {
    cursors: BTreeMap<u8, u64>,
    end: Option<u64>,
    progress: &'a mut dyn FnMut(u64, u64),
    total: u64,
}

impl ScanVisitor for Tail<'_> {
    fn record(&mut self, _at: &RecordAt, record: &RecordView<'_>) {
        match record.header.kind {
            RecordKind::Delivery => {
                if let Ok(origin) = OriginRef::decode(record.body) {
                    let cursor = self.cursors.entry(record.header.delay_level).or_insert(0);
                    *cursor = (*cursor).max(origin.level_queue_offset.saturating_add(1));
                }
            }
            RecordKind::Message | RecordKind::Filler => {}
        }
    }

    fn filler(&mut self, _at: &RecordAt, _header: &RecordHeader) {}

    fn damage(&mut self, at: &RecordAt, _kind: DecodeError, _resumed_at: Option<u64>) {
        self.end.get_or_insert(at.log_offset);
    }

    fn end_of_data(&mut self, at: &RecordAt) {
        self.end.get_or_insert(at.log_offset);
    }

    fn progress(&mut self, scanned_bytes: u64) {
        (self.progress)(scanned_bytes, self.total);
    }

    fn done(&self) -> bool {
        self.end.is_some()
    }
}
