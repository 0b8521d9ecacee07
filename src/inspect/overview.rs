//! `inspect`: what a store holds, from its files alone (read-only, no recovery): segments and
//! their offset ranges, queues and their entry counts, pending messages per delay level with
//! the next and the last due time, pending messages per timer tier (arbitrary delays, by delay
//! horizon), consumer groups and their lag, disk usage.
//!
//! Delivery progress is the checkpoint's timed-queue cursors advanced by the delivery, hop and
//! discard records found after the checkpoint's end (the same derivation recovery makes);
//! queue entry counts are what the files hold (after a crash, entries not yet dispatched are
//! missing until the next open).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::checkpoint::Checkpoint;
use crate::commit_log::record::{
    decode_header, OriginRef, RecordHeader, RecordKind, RecordView, HEADER_BYTES,
};
use crate::consume_queue::entry::Entry;
use crate::consume_queue::{QueueKey, TimedQueue};
use crate::consumer_offsets::{decode_offsets, OFFSETS_FILE};
use crate::error::{DecodeError, Result};
use crate::io::{FileSystem, OpenMode};
use crate::meta::StoreMeta;
use crate::timer::{slot_tier, TIER_BITS};

use super::files::{SegmentFile, StoreFiles};
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

/// One tier of the timer wheel (messages with arbitrary delays): tier `t` holds messages with
/// `[32^t, 32^(t+1))` ms to go when they entered it, in 32 slot queues.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TierInfo {
    /// The tier (0..8).
    pub tier: u32,
    /// Its granule in ms (32^t): its slots release entries at granule starts.
    pub granule_ms: u64,
    /// Slots of the tier with a queue on disk.
    pub slots: u64,
    /// Entries of its slot queues (messages put into it and hops into it).
    pub entries: u64,
    /// Of which consumed (delivered, hopped down or discarded).
    pub consumed: u64,
    /// Entries minus consumed: messages waiting in this tier.
    pub pending: u64,
    /// Earliest release time among its slots' heads (no message of the tier is due earlier).
    pub next_release_ms: Option<u64>,
    /// The latest due time among the last entries of its slots (entries of one granule are
    /// not sorted by due time: a message of the same granule may be due later, by less than
    /// `granule_ms`).
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
    /// Decision slot files (their length: they are sparse, so they may take less).
    pub decision_bytes: u64,
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
    /// Timer tiers with a slot queue.
    pub tiers: Vec<TierInfo>,
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
    /// Earliest due time among pending messages (for arbitrary delays, the release time of
    /// their granule: never later than the true due time, as the store's own statistics).
    pub fn next_due_ms(&self) -> Option<u64> {
        let levels = self.levels.iter().filter_map(|l| l.next_due_ms);
        let tiers = self.tiers.iter().filter_map(|t| t.next_release_ms);
        levels.chain(tiers).min()
    }

    /// Latest due time among pending messages (see [`TierInfo::last_due_ms`]).
    pub fn horizon_ms(&self) -> Option<u64> {
        let levels = self.levels.iter().filter_map(|l| l.last_due_ms);
        let tiers = self.tiers.iter().filter_map(|t| t.last_due_ms);
        levels.chain(tiers).max()
    }

    /// Pending delayed messages, delay levels and timer tiers together.
    pub fn pending_delayed(&self) -> u64 {
        self.levels.iter().map(|l| l.pending).sum::<u64>()
            + self.tiers.iter().map(|t| t.pending).sum::<u64>()
    }

    /// First log offset still stored (retention deletes the oldest segments).
    pub fn log_start_offset(&self) -> u64 {
        self.segments.first().map_or(0, |s| s.base_offset)
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
    for (queue, consumed) in checkpoint.iter().flat_map(|c| c.cursors.iter()) {
        let cursor = tail.cursors.entry(*queue).or_insert(0);
        *cursor = (*cursor).max(*consumed);
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
    let mut tiers: BTreeMap<u32, TierInfo> = BTreeMap::new();
    for queue in &files.queues {
        let mut reader = QueueReader::new(queue.clone());
        let entries = reader.written_count(fs)?;
        let mut entry_time = |index: u64| -> Result<Option<Entry>> {
            Ok(match reader.get(fs, index)? {
                EntryLookup::Entry { entry, .. } => Some(entry),
                EntryLookup::Unwritten { .. } | EntryLookup::NoFile => None,
            })
        };
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
                let delivered = tail.cursor(TimedQueue::Level(*level));
                let pending = entries.saturating_sub(delivered);
                let (next_due_ms, last_due_ms) = if pending > 0 {
                    (
                        entry_time(delivered)?.map(|e| e.time_ms),
                        entry_time(entries - 1)?.map(|e| e.time_ms),
                    )
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
            QueueKey::TimerSlot(slot) => {
                let consumed = tail.cursor(TimedQueue::TimerSlot(*slot));
                let pending = entries.saturating_sub(consumed);
                let tier = slot_tier(*slot);
                let (head, last) = if pending > 0 {
                    (entry_time(consumed)?, entry_time(entries - 1)?)
                } else {
                    (None, None)
                };
                // A slot entry's time is its granule's start; the due time is in the record
                // (the message, or the hop that moved it here).
                let last_due_ms = last.and_then(|e| read_header(fs, &files.segments, e.log_offset));
                let info = tiers.entry(tier).or_insert_with(|| TierInfo {
                    tier,
                    granule_ms: 1 << (tier * TIER_BITS),
                    slots: 0,
                    entries: 0,
                    consumed: 0,
                    pending: 0,
                    next_release_ms: None,
                    last_due_ms: None,
                });
                info.slots += 1;
                info.entries += entries;
                info.consumed += consumed.min(entries);
                info.pending += pending;
                if let Some(head) = head {
                    let next = info
                        .next_release_ms
                        .map_or(head.time_ms, |t| t.min(head.time_ms));
                    info.next_release_ms = Some(next);
                }
                if let Some(due) = last_due_ms.map(|h| h.due_ms) {
                    info.last_due_ms = Some(info.last_due_ms.map_or(due, |d| d.max(due)));
                }
            }
        }
    }
    out.tiers = tiers.into_values().collect();
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
        decision_bytes: files.decision_bytes(),
        small_file_bytes: files.small_files.iter().map(|(_, len)| len).sum::<u64>()
            + file_lengths(fs, &files.temporaries),
    };
    out.meta = meta;
    Ok(out)
}

/// The header of the record at `log_offset`, if a segment holds a valid one there.
fn read_header(
    fs: &dyn FileSystem,
    segments: &[SegmentFile],
    log_offset: u64,
) -> Option<RecordHeader> {
    let at = segments.partition_point(|s| s.base_offset <= log_offset);
    let segment = segments.get(at.checked_sub(1)?)?;
    let file = fs.open_mapped(&segment.path, OpenMode::Existing).ok()?;
    let mut bytes = [0u8; HEADER_BYTES];
    file.read_at(log_offset - segment.base_offset, &mut bytes)
        .ok()?;
    decode_header(&bytes, log_offset).ok()
}

fn file_lengths(fs: &dyn FileSystem, paths: &[PathBuf]) -> u64 {
    paths.iter().filter_map(|p| fs.file_len(p).ok()).sum()
}

/// Follows the log after the checkpoint: delivery, hop and discard records advance the
/// cursor of the timed queue whose entry they consume; the first zero header or damage is the
/// end.
struct Tail<'a> {
    /// By timed-queue id.
    cursors: BTreeMap<u16, u64>,
    end: Option<u64>,
    progress: &'a mut dyn FnMut(u64, u64),
    total: u64,
}

impl Tail<'_> {
    fn cursor(&self, queue: TimedQueue) -> u64 {
        self.cursors.get(&queue.to_id()).copied().unwrap_or(0)
    }
}

impl ScanVisitor for Tail<'_> {
    fn record(&mut self, _at: &RecordAt, record: &RecordView<'_>) {
        match record.header.kind {
            RecordKind::Delivery | RecordKind::Hop | RecordKind::Discard => {
                if let Ok(origin) = OriginRef::decode(record.body) {
                    let cursor = self.cursors.entry(origin.source.to_id()).or_insert(0);
                    *cursor = (*cursor).max(origin.source_offset.saturating_add(1));
                }
            }
            // A cancel consumes no entry: the discard that follows when it falls due does.
            RecordKind::Cancel | RecordKind::Message | RecordKind::Filler => {}
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
