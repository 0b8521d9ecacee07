//! The checkpoint: how far the commit log is known durable *and* fully dispatched into durable
//! consume queues, and whether the last close was clean.
//!
//! Written by atomic replace (never in place), framed with magic, version and CRC. Recovery
//! starts its scan at `log_end_offset`, so after a clean close the scan reads one header and
//! stops; a clean checkpoint also lets recovery skip zeroing the tails of the active segment
//! and queue files.
#![deny(clippy::indexing_slicing, clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use crate::bytes::{get_u16, get_u32, get_u64, get_u8, put_u64, put_u8, split};
use crate::consume_queue::QueueKey;
use crate::dispatch::SegmentRefs;
use crate::error::{DecodeError, Error, Result};
use crate::framed::{frame, unframe};
use crate::io::{write_atomic, FileSystem};

/// File name inside the store directory.
pub const CHECKPOINT_FILE: &str = "checkpoint";
/// `DSCK`.
pub const CHECKPOINT_MAGIC: u32 = u32::from_le_bytes(*b"DSCK");
/// Checkpoint format version.
pub const CHECKPOINT_VERSION: u32 = 2;
const PAYLOAD_BYTES: usize = 32;

/// The checkpoint's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// Every record before this commit-log offset is durable, and every consume-queue entry for
    /// those records is durable. Always a record boundary.
    pub log_end_offset: u64,
    /// Offset of the last record before `log_end_offset` (equal to it when there is none); a
    /// clean reopen re-checks that record's CRC as a cheap sanity check.
    pub last_record_offset: u64,
    /// Store clock when written.
    pub written_ms: u64,
    /// True only when written by a clean close; any open rewrites it as false first.
    pub clean_shutdown: bool,
    /// Entry count of every consume queue for the records below `log_end_offset`; those entries
    /// are durable. A queue found shorter than this is damaged and rebuilt from the log.
    pub queue_counts: Vec<(QueueKey, u64)>,
    /// Consumed count of every timed queue (delay level or timer slot, by
    /// [`crate::consume_queue::TimedQueue::to_id`]) for the records below `log_end_offset`.
    pub cursors: Vec<(u16, u64)>,
    /// Retention references of every segment that has any, for the records below
    /// `log_end_offset` (see [`crate::dispatch::SegmentRefs`]).
    pub segment_refs: Vec<(u64, SegmentRefs)>,
}

impl Checkpoint {
    /// Encodes the checkpoint into its framed bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut payload = [0u8; PAYLOAD_BYTES];
        put_u64(&mut payload, 0, self.log_end_offset);
        put_u64(&mut payload, 8, self.last_record_offset);
        put_u64(&mut payload, 16, self.written_ms);
        put_u8(&mut payload, 24, u8::from(self.clean_shutdown));
        let mut payload = payload.to_vec();
        let count = u32::try_from(self.queue_counts.len()).unwrap_or(u32::MAX);
        payload.extend_from_slice(&count.to_le_bytes());
        for (key, entries) in self.queue_counts.iter().take(count as usize) {
            let (kind, topic, id) = match key {
                QueueKey::Topic { topic, queue_id } => (1u8, topic.as_str(), *queue_id),
                QueueKey::DelayLevel(level) => (2u8, "", u32::from(*level)),
                QueueKey::TimerSlot(slot) => (3u8, "", u32::from(*slot)),
            };
            payload.push(kind);
            let topic_len = u16::try_from(topic.len()).unwrap_or(0);
            payload.extend_from_slice(&topic_len.to_le_bytes());
            payload.extend_from_slice(
                topic
                    .as_bytes()
                    .get(..usize::from(topic_len))
                    .unwrap_or_default(),
            );
            payload.extend_from_slice(&id.to_le_bytes());
            payload.extend_from_slice(&entries.to_le_bytes());
        }
        let cursors = self.cursors.len().min(usize::from(u16::MAX));
        payload.extend_from_slice(&u16::try_from(cursors).unwrap_or(u16::MAX).to_le_bytes());
        for (queue, delivered) in self.cursors.iter().take(cursors) {
            payload.extend_from_slice(&queue.to_le_bytes());
            payload.extend_from_slice(&delivered.to_le_bytes());
        }
        let segments = u32::try_from(self.segment_refs.len()).unwrap_or(u32::MAX);
        payload.extend_from_slice(&segments.to_le_bytes());
        for (base, refs) in self.segment_refs.iter().take(segments as usize) {
            payload.extend_from_slice(&base.to_le_bytes());
            payload.extend_from_slice(&refs.pending.to_le_bytes());
            payload.extend_from_slice(&refs.last_delivery_offset.to_le_bytes());
        }
        frame(CHECKPOINT_MAGIC, CHECKPOINT_VERSION, &payload)
    }

    /// Decodes framed checkpoint bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let payload = unframe(bytes, CHECKPOINT_MAGIC, CHECKPOINT_VERSION)?;
        let (fixed, mut rest) = split(payload, PAYLOAD_BYTES)?;
        let payload = fixed;
        let clean = match get_u8(payload, 24) {
            0 => false,
            1 => true,
            _ => return Err(DecodeError::BadField { field: "clean" }),
        };
        let checkpoint = Checkpoint {
            log_end_offset: get_u64(payload, 0),
            last_record_offset: get_u64(payload, 8),
            written_ms: get_u64(payload, 16),
            clean_shutdown: clean,
            queue_counts: Vec::new(),
            cursors: Vec::new(),
            segment_refs: Vec::new(),
        };
        let (count, tail) = split(rest, 4)?;
        rest = tail;
        let mut checkpoint = checkpoint;
        for _ in 0..get_u32(count, 0) {
            let (head, tail) = split(rest, 3)?;
            let kind = get_u8(head, 0);
            let (topic, tail) = split(tail, usize::from(get_u16(head, 1)))?;
            let (nums, tail) = split(tail, 12)?;
            rest = tail;
            let id = get_u32(nums, 0);
            let key = match kind {
                1 => {
                    let topic = std::str::from_utf8(topic)
                        .ok()
                        .filter(|t| crate::topic::topic_name_problem(t).is_none())
                        .ok_or(DecodeError::BadField { field: "topic" })?;
                    if id >= crate::options::QUEUE_COUNT_MAX {
                        return Err(DecodeError::BadField { field: "queue_id" });
                    }
                    QueueKey::Topic {
                        topic: topic.to_owned(),
                        queue_id: id,
                    }
                }
                2 => QueueKey::DelayLevel(
                    u8::try_from(id).map_err(|_| DecodeError::BadField { field: "level" })?,
                ),
                3 => QueueKey::TimerSlot(
                    u8::try_from(id).map_err(|_| DecodeError::BadField { field: "slot" })?,
                ),
                _ => {
                    return Err(DecodeError::BadField {
                        field: "queue kind",
                    })
                }
            };
            checkpoint.queue_counts.push((key, get_u64(nums, 4)));
        }
        let (cursors, tail) = split(rest, 2)?;
        rest = tail;
        for _ in 0..get_u16(cursors, 0) {
            let (cursor, tail) = split(rest, 10)?;
            rest = tail;
            checkpoint
                .cursors
                .push((get_u16(cursor, 0), get_u64(cursor, 2)));
        }
        let (segments, tail) = split(rest, 4)?;
        rest = tail;
        for _ in 0..get_u32(segments, 0) {
            let (refs, tail) = split(rest, 24)?;
            rest = tail;
            checkpoint.segment_refs.push((
                get_u64(refs, 0),
                SegmentRefs {
                    pending: get_u64(refs, 8),
                    last_delivery_offset: get_u64(refs, 16),
                },
            ));
        }
        if !rest.is_empty() {
            return Err(DecodeError::BadLength {
                length: rest.len() as u64,
            });
        }
        if checkpoint.last_record_offset > checkpoint.log_end_offset {
            return Err(DecodeError::BadField {
                field: "last_record_offset",
            });
        }
        Ok(checkpoint)
    }

    /// Reads the checkpoint of `dir`: `Ok(None)` if there is none, a positioned
    /// `Error::Corruption` if it does not decode.
    pub fn load(fs: &dyn FileSystem, dir: &Path) -> Result<Option<Self>> {
        let path = dir.join(CHECKPOINT_FILE);
        if !fs.exists(&path) {
            return Ok(None);
        }
        let bytes = fs.read_file(&path).map_err(|e| Error::io(&path, e))?;
        Checkpoint::decode(&bytes)
            .map(Some)
            .map_err(|kind| Error::Corruption {
                file: path,
                offset: 0,
                kind,
            })
    }

    /// Replaces the checkpoint of `dir` atomically.
    pub fn store(&self, fs: &dyn FileSystem, dir: &Path) -> Result<()> {
        let path = dir.join(CHECKPOINT_FILE);
        write_atomic(fs, &path, &self.encode()).map_err(|e| Error::io(path, e))
    }
}
