//! Reads the entries of one consume queue from its files, in blocks: a check that walks a
//! queue in index order costs one read per block, and keeps no file open between blocks (a
//! store may have thousands of queues).

use std::path::PathBuf;

use crate::consume_queue::entry::{Entry, ENTRY_BYTES};
use crate::error::{Error, Result};
use crate::io::{FileSystem, OpenMode};

use super::files::{QueueFile, QueueFiles};

/// Entries read per block.
const BLOCK_ENTRIES: u64 = 1024;

/// What a queue holds at an index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryLookup {
    /// A written entry, at `offset` in `file`.
    Entry {
        /// The entry.
        entry: Entry,
        /// Its file.
        file: PathBuf,
        /// Its byte offset there.
        offset: u64,
    },
    /// The entry's bytes are there but were never written (its length field is 0).
    Unwritten {
        /// Its file.
        file: PathBuf,
        /// Its byte offset there.
        offset: u64,
    },
    /// No file covers the index.
    NoFile,
}

/// A written entry's place: its file, byte offset there, and index in the queue.
pub type EntryPlace = (PathBuf, u64, u64);

/// Capacity of a queue file in entries.
pub fn capacity_entries(file: &QueueFile) -> u64 {
    file.len_bytes / ENTRY_BYTES as u64
}

/// A block reader over one queue's files.
#[derive(Debug)]
pub struct QueueReader {
    files: QueueFiles,
    /// (file index, first entry of the block, bytes).
    block: Option<(usize, u64, Vec<u8>)>,
}

impl QueueReader {
    /// A reader of the queue whose files are `files`.
    pub fn new(files: QueueFiles) -> Self {
        QueueReader { files, block: None }
    }

    /// The queue's files.
    pub fn files(&self) -> &QueueFiles {
        &self.files
    }

    /// The file holding `index`: the last one starting at or before it, if it reaches it.
    fn file_for(&self, index: u64) -> Option<usize> {
        let files = &self.files.files;
        let at = files.partition_point(|f| f.first_entry <= index);
        let i = at.checked_sub(1)?;
        let file = files.get(i)?;
        (index - file.first_entry < capacity_entries(file)).then_some(i)
    }

    /// The entry at `index` if it is written (the fast path of a check: no allocation).
    pub fn entry_at(&mut self, fs: &dyn FileSystem, index: u64) -> Result<Option<Entry>> {
        let Some(file_index) = self.file_for(index) else {
            return Ok(None);
        };
        let Some(file) = self.files.files.get(file_index) else {
            return Ok(None);
        };
        let within = index - file.first_entry;
        let block_first = within - within % BLOCK_ENTRIES;
        let cached =
            matches!(&self.block, Some((f, b, _)) if *f == file_index && *b == block_first);
        if !cached {
            return Ok(match self.get(fs, index)? {
                EntryLookup::Entry { entry, .. } => Some(entry),
                EntryLookup::Unwritten { .. } | EntryLookup::NoFile => None,
            });
        }
        let from = usize::try_from((within - block_first) * ENTRY_BYTES as u64).unwrap_or(0);
        let bytes = self
            .block
            .as_ref()
            .and_then(|(_, _, b)| b.get(from..from + ENTRY_BYTES))
            .unwrap_or_default();
        Ok(Entry::decode(bytes).ok())
    }

    /// The entry at `index`.
    pub fn get(&mut self, fs: &dyn FileSystem, index: u64) -> Result<EntryLookup> {
        let Some(file_index) = self.file_for(index) else {
            return Ok(EntryLookup::NoFile);
        };
        let Some(file) = self.files.files.get(file_index) else {
            return Ok(EntryLookup::NoFile);
        };
        let within = index - file.first_entry;
        let block_first = within - within % BLOCK_ENTRIES;
        let cached =
            matches!(&self.block, Some((f, b, _)) if *f == file_index && *b == block_first);
        if !cached {
            let count = BLOCK_ENTRIES.min(capacity_entries(file) - block_first);
            let mut bytes = vec![0u8; usize::try_from(count * ENTRY_BYTES as u64).unwrap_or(0)];
            let mapped = fs
                .open_mapped(&file.path, OpenMode::Existing)
                .map_err(|e| Error::io(&file.path, e))?;
            mapped
                .read_at(block_first * ENTRY_BYTES as u64, &mut bytes)
                .map_err(|e| Error::io(&file.path, e))?;
            self.block = Some((file_index, block_first, bytes));
        }
        let offset = within * ENTRY_BYTES as u64;
        let from = usize::try_from((within - block_first) * ENTRY_BYTES as u64).unwrap_or(0);
        let bytes = self
            .block
            .as_ref()
            .and_then(|(_, _, b)| b.get(from..from + ENTRY_BYTES))
            .unwrap_or_default();
        Ok(match Entry::decode(bytes) {
            Ok(entry) => EntryLookup::Entry {
                entry,
                file: file.path.clone(),
                offset,
            },
            Err(_) => EntryLookup::Unwritten {
                file: file.path.clone(),
                offset,
            },
        })
    }

    /// Number of entries written, counted as the index of the first unwritten entry after the
    /// files' contiguous start (entries are written in order, so a binary search per file
    /// finds it). Entries written after a hole are not counted.
    pub fn written_count(&mut self, fs: &dyn FileSystem) -> Result<u64> {
        let files = self.files.files.clone();
        let mut next = files.first().map_or(0, |f| f.first_entry);
        for file in &files {
            if file.first_entry != next {
                break;
            }
            let capacity = capacity_entries(file);
            let written = |reader: &mut Self, i: u64| -> Result<bool> {
                Ok(matches!(
                    reader.get(fs, file.first_entry + i)?,
                    EntryLookup::Entry { .. }
                ))
            };
            let (mut lo, mut hi) = (0, capacity);
            while lo < hi {
                let mid = lo + (hi - lo) / 2;
                if written(self, mid)? {
                    lo = mid + 1;
                } else {
                    hi = mid;
                }
            }
            next = file.first_entry + lo;
            if lo < capacity {
                break;
            }
        }
        Ok(next)
    }

    /// Written entries (length field not 0) at or after `from` that point at or after
    /// `min_log_offset` (entries into segments retention deleted are left out), read in large
    /// blocks: how many, and the first one's file, byte offset and index.
    pub fn written_from(
        &mut self,
        fs: &dyn FileSystem,
        from: u64,
        min_log_offset: u64,
    ) -> Result<(u64, Option<EntryPlace>)> {
        const SCAN_ENTRIES: u64 = 64 * 1024;
        let mut count = 0u64;
        let mut first = None;
        for file in &self.files.files {
            let capacity = capacity_entries(file);
            let mut within = from.saturating_sub(file.first_entry);
            if within >= capacity {
                continue;
            }
            let mapped = fs
                .open_mapped(&file.path, OpenMode::Existing)
                .map_err(|e| Error::io(&file.path, e))?;
            let mut bytes = Vec::new();
            while within < capacity {
                let n = SCAN_ENTRIES.min(capacity - within);
                bytes.resize(usize::try_from(n * ENTRY_BYTES as u64).unwrap_or(0), 0);
                mapped
                    .read_at(within * ENTRY_BYTES as u64, &mut bytes)
                    .map_err(|e| Error::io(&file.path, e))?;
                for (i, entry) in bytes.chunks_exact(ENTRY_BYTES).enumerate() {
                    if Entry::decode(entry).is_ok_and(|e| e.log_offset >= min_log_offset) {
                        count += 1;
                        if first.is_none() {
                            let at = within + i as u64;
                            first = Some((
                                file.path.clone(),
                                at * ENTRY_BYTES as u64,
                                file.first_entry + at,
                            ));
                        }
                    }
                }
                within += n;
            }
        }
        Ok((count, first))
    }
}
