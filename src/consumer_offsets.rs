//! Consumer-group offsets: the next logical offset each group will read from each queue.
//!
//! Kept in memory and persisted whole, framed with magic, version and CRC, by atomic replace:
//! at every flush tick when changed, on `flush`/`close`, and at once for a synced commit.
#![deny(clippy::indexing_slicing)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::bytes::{get_u16, get_u32, get_u64, split};
use crate::error::{DecodeError, Error, Result};
use crate::framed::{frame, unframe};
use crate::io::{write_atomic, FileSystem};

/// File name inside the store directory.
pub const OFFSETS_FILE: &str = "consumer_offsets";
/// `DSCO`.
pub const OFFSETS_MAGIC: u32 = u32::from_le_bytes(*b"DSCO");
/// Format version.
pub const OFFSETS_VERSION: u32 = 1;

/// (group, topic, queue id).
pub type OffsetKey = (String, String, u32);

/// Encodes the table: `u32 count`, then per entry `u16 group_len, group, u16 topic_len, topic,
/// u32 queue, u64 offset`.
pub fn encode_offsets(table: &BTreeMap<OffsetKey, u64>) -> Vec<u8> {
    let mut payload = Vec::new();
    let count = u32::try_from(table.len()).unwrap_or(u32::MAX);
    payload.extend_from_slice(&count.to_le_bytes());
    for ((group, topic, queue), offset) in table.iter().take(count as usize) {
        for name in [group, topic] {
            let len = u16::try_from(name.len()).unwrap_or(0);
            payload.extend_from_slice(&len.to_le_bytes());
            payload.extend_from_slice(name.as_bytes().get(..usize::from(len)).unwrap_or_default());
        }
        payload.extend_from_slice(&queue.to_le_bytes());
        payload.extend_from_slice(&offset.to_le_bytes());
    }
    frame(OFFSETS_MAGIC, OFFSETS_VERSION, &payload)
}

/// Decodes what [`encode_offsets`] wrote.
pub fn decode_offsets(bytes: &[u8]) -> Result<BTreeMap<OffsetKey, u64>, DecodeError> {
    let payload = unframe(bytes, OFFSETS_MAGIC, OFFSETS_VERSION)?;
    let (count, mut rest) = split(payload, 4)?;
    let mut table = BTreeMap::new();
    for _ in 0..get_u32(count, 0) {
        let mut names = Vec::with_capacity(2);
        for _ in 0..2 {
            let (len, tail) = split(rest, 2)?;
            let (name, tail) = split(tail, usize::from(get_u16(len, 0)))?;
            rest = tail;
            let name = std::str::from_utf8(name).map_err(|_| DecodeError::BadField {
                field: "offsets name",
            })?;
            names.push(name.to_owned());
        }
        let (nums, tail) = split(rest, 12)?;
        rest = tail;
        let topic = names.pop().unwrap_or_default();
        let group = names.pop().unwrap_or_default();
        table.insert((group, topic, get_u32(nums, 0)), get_u64(nums, 4));
    }
    if !rest.is_empty() {
        return Err(DecodeError::BadLength {
            length: rest.len() as u64,
        });
    }
    Ok(table)
}

#[derive(Debug, Default)]
struct Table {
    offsets: BTreeMap<OffsetKey, u64>,
    dirty: bool,
}

/// The offsets of every consumer group.
#[derive(Debug)]
pub struct ConsumerOffsets {
    path: PathBuf,
    fs: Arc<dyn FileSystem>,
    table: Mutex<Table>,
    /// Serialises writers of the file so an older table never replaces a newer one.
    persist: Mutex<()>,
}

impl ConsumerOffsets {
    /// Loads the offsets of the store in `dir` (none if the file does not exist).
    pub fn load(fs: Arc<dyn FileSystem>, dir: &Path) -> Result<Self> {
        let path = dir.join(OFFSETS_FILE);
        let offsets = if fs.exists(&path) {
            let bytes = fs.read_file(&path).map_err(|e| Error::io(&path, e))?;
            decode_offsets(&bytes).map_err(|kind| Error::Corruption {
                file: path.clone(),
                offset: 0,
                kind,
            })?
        } else {
            BTreeMap::new()
        };
        Ok(ConsumerOffsets {
            path,
            fs,
            table: Mutex::new(Table {
                offsets,
                dirty: false,
            }),
            persist: Mutex::new(()),
        })
    }

    /// The committed offset, if any.
    pub fn get(&self, group: &str, topic: &str, queue: u32) -> Option<u64> {
        let key = (group.to_owned(), topic.to_owned(), queue);
        self.table.lock().offsets.get(&key).copied()
    }

    /// Every committed offset.
    pub fn snapshot(&self) -> BTreeMap<OffsetKey, u64> {
        self.table.lock().offsets.clone()
    }

    /// Records an offset in memory; durable at the next [`ConsumerOffsets::persist`].
    pub fn set(&self, group: &str, topic: &str, queue: u32, offset: u64) {
        let mut table = self.table.lock();
        table
            .offsets
            .insert((group.to_owned(), topic.to_owned(), queue), offset);
        table.dirty = true;
    }

    /// Writes the table if it changed since the last write. The table is snapshot first, then
    /// `before_write` runs (the caller syncs the commit log there), then the snapshot is
    /// written: every offset written was committed for messages that were visible at snapshot
    /// time, so the log is durable past them and a power loss cannot leave an offset pointing
    /// beyond the recovered queue.
    pub fn persist_after(&self, before_write: impl FnOnce() -> Result<()>) -> Result<()> {
        let _writing = self.persist.lock();
        let bytes = {
            let mut table = self.table.lock();
            let bytes = table.dirty.then(|| encode_offsets(&table.offsets));
            table.dirty = false;
            bytes
        };
        let synced = before_write();
        let Some(bytes) = bytes else { return synced };
        let result = synced.and_then(|()| {
            write_atomic(self.fs.as_ref(), &self.path, &bytes).map_err(|e| Error::io(&self.path, e))
        });
        if result.is_err() {
            self.table.lock().dirty = true;
        }
        result
    }

    /// Lowers every offset of (topic, queue) that lies past `end` (after recovery cut the
    /// queue) to `end`; returns what it changed as (group, topic, queue, from, to).
    pub fn clamp(&self, topic: &str, queue: u32, end: u64) -> Vec<(String, String, u32, u64, u64)> {
        let mut table = self.table.lock();
        let mut changed = Vec::new();
        for ((group, t, q), offset) in table.offsets.iter_mut() {
            if t == topic && *q == queue && *offset > end {
                changed.push((group.clone(), t.clone(), *q, *offset, end));
                *offset = end;
            }
        }
        if !changed.is_empty() {
            table.dirty = true;
        }
        changed
    }
}
