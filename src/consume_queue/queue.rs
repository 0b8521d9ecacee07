//! One consume queue: the entries of one (topic, queue) or one delay level, in files of a fixed
//! number of entries named by the logical offset of their first entry (20 digits).
//!
//! Appended only by the dispatcher (or recovery, before the store opens). Entries below
//! [`ConsumeQueue::entry_count`] are readable by any thread.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::RwLock;

use super::entry::{Entry, ENTRY_BYTES};
use crate::error::{DecodeError, Error, Result};
use crate::io::{FileSystem, MappedFile, OpenMode};
use crate::naming::{offset_file_name, parse_offset_file_name};
use crate::options::SegmentFill;

/// Queue files must end below this entry index (2^58), so that byte offsets (`index * 20`)
/// always fit in a `u64`, whatever the file names say.
pub const QUEUE_ENTRY_LIMIT: u64 = 1 << 58;

#[derive(Debug)]
struct QueueFile {
    first_entry: u64,
    capacity_entries: u64,
    path: PathBuf,
    file: Box<dyn MappedFile>,
}

impl QueueFile {
    fn end_entry(&self) -> u64 {
        self.first_entry + self.capacity_entries
    }
}

/// A consume queue.
#[derive(Debug)]
pub struct ConsumeQueue {
    dir: PathBuf,
    fs: Arc<dyn FileSystem>,
    file_entries: u64,
    /// How new files are prepared (see `SegmentFill`; the same policy as segments).
    fill: SegmentFill,
    files: RwLock<Vec<QueueFile>>,
    /// Entries `[min_entry, entry_count)` are written and readable.
    entry_count: AtomicU64,
    /// Entries below this are durable.
    synced_count: AtomicU64,
}

impl ConsumeQueue {
    /// Opens (or creates, durably, the directory of) the queue stored in `dir`. The entry count starts at
    /// the end of the files found; recovery then calls [`ConsumeQueue::truncate_to`].
    pub fn open(
        fs: Arc<dyn FileSystem>,
        dir: &Path,
        file_entries: u64,
        fill: SegmentFill,
    ) -> Result<Self> {
        crate::io::create_dir_synced(fs.as_ref(), dir).map_err(|e| Error::io(dir, e))?;
        let mut names: Vec<(u64, String)> = fs
            .list_dir(dir)
            .map_err(|e| Error::io(dir, e))?
            .into_iter()
            .filter_map(|name| parse_offset_file_name(&name).map(|first| (first, name)))
            .collect();
        names.sort();
        let mut files = Vec::with_capacity(names.len());
        for (first_entry, name) in names {
            let path = dir.join(&name);
            let file = fs
                .open_mapped(&path, OpenMode::Existing)
                .map_err(|e| Error::io(&path, e))?;
            let capacity_entries = file.len_bytes() / ENTRY_BYTES as u64;
            let in_range = first_entry
                .checked_add(capacity_entries)
                .is_some_and(|end| end < QUEUE_ENTRY_LIMIT);
            if !in_range {
                // Not a file the store could have written; never read, so it cannot mislead.
                continue;
            }
            files.push(QueueFile {
                first_entry,
                capacity_entries,
                path,
                file,
            });
        }
        let end = files.last().map_or(0, QueueFile::end_entry);
        Ok(ConsumeQueue {
            dir: dir.to_path_buf(),
            fs,
            file_entries,
            fill,
            files: RwLock::new(files),
            entry_count: AtomicU64::new(end),
            synced_count: AtomicU64::new(end),
        })
    }

    /// Directory of the queue.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Number of entries (the next logical offset).
    pub fn entry_count(&self) -> u64 {
        self.entry_count.load(Ordering::Acquire)
    }

    /// Lowest logical offset still stored.
    pub fn min_entry(&self) -> u64 {
        self.files.read().first().map_or(0, |f| f.first_entry)
    }

    /// Reads entry `index`, which must be below the entry count. A missing file or an unwritten
    /// entry is a positioned corruption.
    pub fn get(&self, index: u64) -> Result<Entry> {
        let files = self.files.read();
        let file = find_file(&files, index).ok_or_else(|| Error::Corruption {
            file: self.dir.clone(),
            offset: index.saturating_mul(ENTRY_BYTES as u64),
            kind: DecodeError::Truncated {
                needed: index.saturating_add(1),
                available: index,
            },
        })?;
        let at = (index - file.first_entry) * ENTRY_BYTES as u64;
        let mut buf = [0u8; ENTRY_BYTES];
        file.file
            .read_at(at, &mut buf)
            .map_err(|e| Error::io(&file.path, e))?;
        Entry::decode(&buf).map_err(|kind| Error::Corruption {
            file: file.path.clone(),
            offset: at,
            kind,
        })
    }

    /// Deletes leading files whose entries all lie below `index` (never the last file), then
    /// syncs the directory. Entries below the new [`ConsumeQueue::min_entry`] are gone.
    pub fn retire_before(&self, index: u64) -> Result<usize> {
        let retired: Vec<QueueFile> = {
            let mut files = self.files.write();
            let keep_last = files.len().saturating_sub(1);
            let count = files
                .iter()
                .take(keep_last)
                .take_while(|f| f.end_entry() <= index)
                .count();
            files.drain(..count).collect()
        };
        for file in &retired {
            self.fs
                .remove_file(&file.path)
                .map_err(|e| Error::io(&file.path, e))?;
        }
        if !retired.is_empty() {
            self.fs
                .sync_dir(&self.dir)
                .map_err(|e| Error::io(&self.dir, e))?;
        }
        Ok(retired.len())
    }

    /// Lets an empty queue (no files) start at `index`: a queue rebuilt from a log whose first
    /// segments retention deleted begins at its first surviving record's offset.
    pub fn start_at(&self, index: u64) {
        let files = self.files.read();
        if files.is_empty() && self.entry_count() < index {
            self.entry_count.store(index, Ordering::Release);
        }
    }

    /// Appends the entry at logical offset `index`, which must equal the entry count.
    pub fn append(&self, index: u64, entry: &Entry) -> Result<()> {
        let count = self.entry_count();
        if index != count {
            return Err(Error::Corruption {
                file: self.dir.clone(),
                offset: count.saturating_mul(ENTRY_BYTES as u64),
                kind: DecodeError::BadField {
                    field: "queue_offset",
                },
            });
        }
        let needs_file = {
            let files = self.files.read();
            files.last().is_none_or(|f| f.end_entry() <= index)
        };
        if needs_file {
            self.add_file(index)?;
        }
        let files = self.files.read();
        let file = find_file(&files, index).ok_or_else(|| Error::Corruption {
            file: self.dir.clone(),
            offset: 0,
            kind: DecodeError::BadField {
                field: "queue file",
            },
        })?;
        let at = (index - file.first_entry) * ENTRY_BYTES as u64;
        file.file
            .write_at(at, &entry.encode())
            .map_err(|e| Error::io(&file.path, e))?;
        file.file.publish(at + ENTRY_BYTES as u64);
        self.entry_count.store(index + 1, Ordering::Release);
        Ok(())
    }

    fn add_file(&self, first_entry: u64) -> Result<()> {
        let path = self.dir.join(offset_file_name(first_entry));
        let len_bytes = self.file_entries * ENTRY_BYTES as u64;
        let file = self
            .fs
            // The dispatcher creates queue files inline: zero-filling (sync stores) holds up
            // every queue's visibility for the time of one file's write (~20 ms for 6 MB, once
            // per 300k entries), but reserved files made every queue sync also convert extents
            // in the journal, which cut sync-mode throughput by 25-50 % in the append benchmark.
            .open_mapped(
                &path,
                match self.fill {
                    SegmentFill::Zeroed => OpenMode::Create { len_bytes },
                    SegmentFill::Reserved => OpenMode::CreateAllocated { len_bytes },
                },
            )
            .map_err(|e| Error::io(&path, e))?;
        if let Err(err) = self.fs.sync_dir(&self.dir) {
            // Remove the file, or every retry of the dispatcher fails with "File exists". A
            // retry may sync the directory again: a queue file is derived from the log, and one
            // whose entry a power loss drops anyway is rebuilt at open (R12, R19).
            drop(file);
            if let Err(remove) = self.fs.remove_file(&path) {
                eprintln!("delaystore: cannot remove half-created {path:?}: {remove}");
            }
            return Err(Error::io(&self.dir, err));
        }
        self.files.write().push(QueueFile {
            first_entry,
            capacity_entries: self.file_entries,
            path,
            file,
        });
        Ok(())
    }

    /// Makes every entry written so far durable.
    pub fn sync(&self) -> Result<()> {
        let target = self.entry_count();
        let from = self.synced_count.load(Ordering::Acquire);
        if from >= target {
            return Ok(());
        }
        let files = self.files.read();
        for file in files.iter() {
            let lo = from.max(file.first_entry);
            let hi = target.min(file.end_entry());
            if lo < hi {
                let at = (lo - file.first_entry) * ENTRY_BYTES as u64;
                file.file
                    .sync_range(at, (hi - lo) * ENTRY_BYTES as u64)
                    .map_err(|e| Error::io(&file.path, e))?;
            }
        }
        self.synced_count.fetch_max(target, Ordering::AcqRel);
        Ok(())
    }

    /// Recovery only: keeps entries below `count`, removes every file that starts at or after
    /// it (and every file after a gap), and with `zero_tail` zeroes every entry after it (not
    /// needed after a clean close, whose tail is already zero).
    pub fn truncate_to(&mut self, count: u64, zero_tail: bool) -> Result<()> {
        let contiguous = self.contiguous_end();
        let files = self.files.get_mut();
        while files
            .last()
            .is_some_and(|f| f.first_entry >= count || f.first_entry >= contiguous)
        {
            if let Some(file) = files.pop() {
                drop(file.file);
                self.fs
                    .remove_file(&file.path)
                    .map_err(|e| Error::io(&file.path, e))?;
            }
        }
        for file in files.iter_mut() {
            let keep = count.clamp(file.first_entry, file.end_entry()) - file.first_entry;
            if keep < file.capacity_entries {
                file.file
                    .reset_tail(keep * ENTRY_BYTES as u64, zero_tail)
                    .map_err(|e| Error::io(&file.path, e))?;
            }
        }
        self.fs
            .sync_dir(&self.dir)
            .map_err(|e| Error::io(&self.dir, e))?;
        *self.entry_count.get_mut() = count;
        *self.synced_count.get_mut() = count;
        Ok(())
    }

    /// End of the entries the files cover without a gap, from the first file on.
    pub fn contiguous_end(&self) -> u64 {
        let files = self.files.read();
        let mut end = match files.first() {
            Some(f) => f.first_entry,
            None => return 0,
        };
        for file in files.iter() {
            if file.first_entry != end {
                break;
            }
            end = file.end_entry();
        }
        end
    }
}

fn find_file(files: &[QueueFile], index: u64) -> Option<&QueueFile> {
    let at = files.partition_point(|f| f.first_entry <= index);
    let file = files.get(at.checked_sub(1)?)?;
    (index < file.end_entry()).then_some(file)
}
