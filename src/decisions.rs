//! Decisions: whether each delayed message was delivered or cancelled, found in O(1) by where
//! the message was first indexed (its first timed queue and its offset there).
//!
//! One column of 8-byte slots per timed queue, in slot files of [`DECISION_FILE_SLOTS`] under
//! `decisions/<timed-queue id>/<first slot, 20 digits>`, created on first use ([`SlotFile`]:
//! memory-mapped atomics on the real file system, so a lookup costs no system call). A slot
//! holds `kind << 62 | log offset of the deciding record` (0 = undecided): the deciding record
//! (a delivery or a cancel) is the truth, the slot only finds it. Derived data like the
//! consume queues: written when the decision is taken and again by dispatch from the record
//! (so recovery's replay restores slots a crash lost), synced before each checkpoint. A slot
//! may survive a crash that lost its record, or be damaged: readers ([`crate::store`]) check
//! the record it points at, and when it is not the message's decision search the log after the
//! message for it (undecided if there is none); a file cut short is rebuilt from the log at
//! open ([`Decisions::short_files`], recovery R27).
#![deny(clippy::indexing_slicing, clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::RwLock;

use crate::commit_log::record::{
    decode_header, decode_record, OriginRef, RecordKind, HEADER_BYTES,
};
use crate::commit_log::CommitLog;
use crate::consume_queue::TimedQueue;
use crate::error::{Error, Result};
use crate::io::{FileSystem, SlotFile};
use crate::naming::offset_file_name;

/// Directory of the decision columns inside the store directory.
pub const DECISIONS_DIR: &str = "decisions";
/// Slots per decision file (512 KiB files).
pub const DECISION_FILE_SLOTS: u64 = 64 * 1024;
/// Most decision files kept open (each holds a file descriptor); a file closed to make room
/// is synced first, so closing never loses a write the next checkpoint relies on.
pub const OPEN_FILES_MAX: usize = 64;
const SLOT_BYTES: u64 = 8;
const OFFSET_MASK: u64 = (1 << 62) - 1;

/// What was decided about a delayed message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Re-posted to its target queue by the delivery record at this log offset.
    Delivered(u64),
    /// Cancelled by the cancel record at this log offset.
    Cancelled(u64),
}

impl Decision {
    /// The log offset of the deciding record.
    pub fn record_offset(self) -> u64 {
        match self {
            Decision::Delivered(at) | Decision::Cancelled(at) => at,
        }
    }

    fn encode(self) -> u64 {
        match self {
            Decision::Delivered(at) => 1 << 62 | (at & OFFSET_MASK),
            Decision::Cancelled(at) => 2 << 62 | (at & OFFSET_MASK),
        }
    }

    /// The decision a slot holds (`None`: undecided, or kind bits that name no decision).
    pub fn decode(slot: u64) -> Option<Self> {
        let at = slot & OFFSET_MASK;
        match slot >> 62 {
            1 => Some(Decision::Delivered(at)),
            2 => Some(Decision::Cancelled(at)),
            _ => None,
        }
    }
}

/// Walks the records of `log` from `from` to its written end and calls `visit` with the
/// decision each delivery or cancel record makes and the message it names, until `visit`
/// returns `true`. Stops quietly at the first record it cannot read (a rare path: only for
/// slots that do not check out, and for decision files rebuilt at open).
pub fn scan_log(
    log: &CommitLog,
    from: u64,
    mut visit: impl FnMut(Decision, &OriginRef) -> Result<bool>,
) -> Result<()> {
    let end = log.written_end();
    let mut at = from.max(log.start_offset());
    let mut header = [0u8; HEADER_BYTES];
    while at.saturating_add(HEADER_BYTES as u64) <= end {
        if log.read_at(at, &mut header).is_err() {
            break;
        }
        let Ok(head) = decode_header(&header, at) else {
            break;
        };
        let decision = match head.kind {
            RecordKind::Delivery => Some(Decision::Delivered(at)),
            RecordKind::Cancel => Some(Decision::Cancelled(at)),
            RecordKind::Message | RecordKind::Filler | RecordKind::Hop | RecordKind::Discard => {
                None
            }
        };
        if let Some(decision) = decision {
            let origin = log.read_record(at).ok().and_then(|bytes| {
                decode_record(&bytes, at)
                    .ok()
                    .and_then(|record| OriginRef::decode(record.body).ok())
            });
            if let Some(origin) = origin {
                if visit(decision, &origin)? {
                    return Ok(());
                }
            }
        }
        at = at.saturating_add(u64::from(head.total_bytes.max(1)));
    }
    Ok(())
}

/// Every decision column of a store.
#[derive(Debug)]
pub struct Decisions {
    dir: PathBuf,
    fs: Arc<dyn FileSystem>,
    files: RwLock<HashMap<(TimedQueue, u64), Arc<dyn SlotFile>>>,
    /// Files known not to exist (only this store creates them, through [`Decisions::ensure`]),
    /// so that looking up an undecided message costs no `stat`.
    missing: RwLock<std::collections::HashSet<(TimedQueue, u64)>>,
}

impl Decisions {
    /// The columns of the store in `store_dir` (files are opened on first use).
    pub fn new(fs: Arc<dyn FileSystem>, store_dir: &Path) -> Self {
        Decisions {
            dir: store_dir.join(DECISIONS_DIR),
            fs,
            files: RwLock::new(HashMap::new()),
            missing: RwLock::new(std::collections::HashSet::new()),
        }
    }

    fn column_dir(&self, queue: TimedQueue) -> PathBuf {
        self.dir.join(queue.to_id().to_string())
    }

    /// The file holding `index`, opened (or created, durably named) when `create`.
    fn file(
        &self,
        queue: TimedQueue,
        index: u64,
        create: bool,
    ) -> Result<Option<Arc<dyn SlotFile>>> {
        let first = index - index % DECISION_FILE_SLOTS;
        if let Some(file) = self.files.read().get(&(queue, first)) {
            return Ok(Some(file.clone()));
        }
        if !create && self.missing.read().contains(&(queue, first)) {
            return Ok(None);
        }
        // The existence check, the note that a file is missing and its creation all happen
        // under the write lock: otherwise a lookup could note a file missing just after another
        // thread created it, and once that file was closed (to stay under OPEN_FILES_MAX) every
        // lookup would take its decisions for undecided: a cancelled message got delivered.
        let mut files = self.files.write();
        if let Some(file) = files.get(&(queue, first)) {
            return Ok(Some(file.clone()));
        }
        let dir = self.column_dir(queue);
        let path = dir.join(offset_file_name(first));
        let exists = self.fs.exists(&path);
        if !exists && !create {
            self.missing.write().insert((queue, first));
            return Ok(None);
        }
        self.missing.write().remove(&(queue, first));
        if !exists {
            crate::io::create_dir_synced(self.fs.as_ref(), &dir).map_err(|e| Error::io(&dir, e))?;
        }
        let file: Arc<dyn SlotFile> = Arc::from(
            self.fs
                .open_slots(&path, DECISION_FILE_SLOTS * SLOT_BYTES)
                .map_err(|e| Error::io(&path, e))?,
        );
        if !exists {
            self.fs.sync_dir(&dir).map_err(|e| Error::io(&dir, e))?;
        }
        if files.len() >= OPEN_FILES_MAX {
            self.close_one(&mut files, (queue, first))?;
        }
        files.insert((queue, first), file.clone());
        Ok(Some(file))
    }

    /// Closes one open file other than `keep`, after syncing it. A failed sync keeps the file
    /// open and is returned: the next checkpoint's sync then fails too and poisons the store.
    fn close_one(
        &self,
        files: &mut HashMap<(TimedQueue, u64), Arc<dyn SlotFile>>,
        keep: (TimedQueue, u64),
    ) -> Result<()> {
        let Some(key) = files.keys().copied().find(|key| *key != keep) else {
            return Ok(());
        };
        if let Some(file) = files.get(&key) {
            file.sync()
                .map_err(|e| Error::io(self.slot_path(key.0, key.1), e))?;
        }
        files.remove(&key);
        Ok(())
    }

    /// Deletes the files of `queue` whose slots all lie below `index`: the messages first
    /// indexed there are gone from the log (retention), so no one asks for their decisions.
    pub fn retire_below(&self, queue: TimedQueue, index: u64) -> Result<()> {
        let dir = self.column_dir(queue);
        if !self.fs.exists(&dir) {
            return Ok(());
        }
        let names = self.fs.list_dir(&dir).map_err(|e| Error::io(&dir, e))?;
        let mut removed = false;
        for name in names {
            let Some(first) = crate::naming::parse_offset_file_name(&name) else {
                continue;
            };
            if first.saturating_add(DECISION_FILE_SLOTS) > index {
                continue;
            }
            self.files.write().remove(&(queue, first));
            let path = dir.join(&name);
            self.fs
                .remove_file(&path)
                .map_err(|e| Error::io(&path, e))?;
            removed = true;
        }
        if removed {
            self.fs.sync_dir(&dir).map_err(|e| Error::io(&dir, e))?;
        }
        Ok(())
    }

    fn slot_path(&self, queue: TimedQueue, index: u64) -> PathBuf {
        self.column_dir(queue)
            .join(offset_file_name(index - index % DECISION_FILE_SLOTS))
    }

    /// Runs `op` on the file holding entry `index`'s slot (opened, or created when `create`),
    /// under the read lock of the open files: a file is closed only under the write lock, after
    /// a sync, so no store can land in a file after the sync that closed it (the next
    /// checkpoint's `sync_all` would not see it). `None` when the file does not exist.
    fn with_file<T>(
        &self,
        queue: TimedQueue,
        index: u64,
        create: bool,
        op: impl Fn(&dyn SlotFile) -> std::io::Result<T>,
    ) -> Result<Option<T>> {
        let first = index - index % DECISION_FILE_SLOTS;
        // Opening may close another file; it takes a storm of 64 other opens in between to
        // close this one again before we use it, so a few attempts are plenty.
        for _ in 0..8 {
            if let Some(file) = self.files.read().get(&(queue, first)) {
                return op(file.as_ref())
                    .map(Some)
                    .map_err(|e| Error::io(self.slot_path(queue, index), e));
            }
            if self.file(queue, index, create)?.is_none() {
                return Ok(None);
            }
        }
        Err(Error::io(
            self.slot_path(queue, index),
            std::io::Error::other("decision file closed repeatedly while opening it"),
        ))
    }

    /// The decision recorded for entry `index` of `queue`, unchecked (see the module docs).
    pub fn get(&self, queue: TimedQueue, index: u64) -> Result<Option<Decision>> {
        Ok(Decision::decode(self.slot(queue, index)?))
    }

    /// The raw slot of entry `index` of `queue` (0 when undecided or its file does not exist).
    pub fn slot(&self, queue: TimedQueue, index: u64) -> Result<u64> {
        let slot = self.with_file(queue, index, false, |file| {
            file.load(index % DECISION_FILE_SLOTS)
        })?;
        Ok(slot.unwrap_or(0))
    }

    /// Makes sure the file holding entry `index`'s slot exists, so that a following
    /// [`Decisions::set`] cannot fail for want of space: callers ensure it before they append
    /// the deciding record.
    pub fn ensure(&self, queue: TimedQueue, index: u64) -> Result<()> {
        self.file(queue, index, true).map(|_| ())
    }

    /// Records a decision for entry `index` of `queue`.
    pub fn set(&self, queue: TimedQueue, index: u64, decision: Decision) -> Result<()> {
        self.with_file(queue, index, true, |file| {
            file.store(index % DECISION_FILE_SLOTS, decision.encode())
        })
        .map(|_| ())
    }

    /// Decision files shorter than their fixed length, as (queue, first slot, path): cut by
    /// damage, or left by a crash while being created (then they hold no decision). Recovery
    /// rebuilds their slots from the log ([`crate::recovery`]).
    pub fn short_files(&self) -> Result<Vec<(TimedQueue, u64, PathBuf)>> {
        let mut out = Vec::new();
        if !self.fs.exists(&self.dir) {
            return Ok(out);
        }
        let columns = self
            .fs
            .list_dir(&self.dir)
            .map_err(|e| Error::io(&self.dir, e))?;
        for column in columns {
            let Some(queue) = column.parse::<u16>().ok().and_then(TimedQueue::from_id) else {
                continue;
            };
            let dir = self.column_dir(queue);
            let Ok(names) = self.fs.list_dir(&dir) else {
                continue;
            };
            for name in names {
                let Some(first) = crate::naming::parse_offset_file_name(&name) else {
                    continue;
                };
                let path = dir.join(&name);
                let len = self.fs.file_len(&path).map_err(|e| Error::io(&path, e))?;
                if len < DECISION_FILE_SLOTS * SLOT_BYTES {
                    out.push((queue, first, path));
                }
            }
        }
        Ok(out)
    }

    /// Clears the slot of entry `index` of `queue` (undecided), if its file exists: for a slot
    /// that named no decision of its message (see the module docs).
    pub fn clear(&self, queue: TimedQueue, index: u64) -> Result<()> {
        self.with_file(queue, index, false, |file| {
            file.store(index % DECISION_FILE_SLOTS, 0)
        })
        .map(|_| ())
    }

    /// Makes every decision recorded so far durable.
    pub fn sync_all(&self) -> Result<()> {
        let files: Vec<((TimedQueue, u64), Arc<dyn SlotFile>)> = self
            .files
            .read()
            .iter()
            .map(|(key, file)| (*key, file.clone()))
            .collect();
        for ((queue, first), file) in files {
            file.sync()
                .map_err(|e| Error::io(self.slot_path(queue, first), e))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::SimFs;

    #[test]
    fn slots_round_trip_and_default_to_undecided() {
        let fs: Arc<dyn FileSystem> = Arc::new(SimFs::new());
        let decisions = Decisions::new(fs, Path::new("/store"));
        let queue = TimedQueue::TimerSlot(7);
        assert_eq!(decisions.get(queue, 5).ok(), Some(None));
        let far = DECISION_FILE_SLOTS * 3 + 1;
        assert!(decisions.set(queue, 5, Decision::Cancelled(1234)).is_ok());
        assert!(decisions.set(queue, far, Decision::Delivered(99)).is_ok());
        assert_eq!(
            decisions.get(queue, 5).ok(),
            Some(Some(Decision::Cancelled(1234)))
        );
        assert_eq!(
            decisions.get(queue, far).ok(),
            Some(Some(Decision::Delivered(99)))
        );
        assert_eq!(decisions.get(queue, 6).ok(), Some(None));
        assert_eq!(decisions.get(TimedQueue::Level(1), 5).ok(), Some(None));
        assert!(decisions.sync_all().is_ok());
    }
}
