//! A read-only view of a real store directory, for the operator's tools: it never changes a
//! byte, a name or a lock on disk.
//!
//! - **Reads** come from the real files with `pread` (never `mmap`): a file that is shorter
//!   than expected, or cut short while it is read, yields an error, never a SIGBUS.
//! - **Changes** (writes, creates, renames, removes, directories) are kept in memory, page by
//!   page, and listed in a journal ([`OverlayFs::changes`]). Running recovery over this file
//!   system therefore computes exactly what recovery would do, with recovery's own code, and
//!   shows it without doing it (`delaystore recover --dry-run`).
//! - **Locks**: [`FileSystem::try_lock`] takes a *shared* lock on an existing lock file,
//!   opened read-only, and never creates it. It fails (`Ok(None)`) while a live store holds
//!   the exclusive lock, and keeps a store from opening while the view is in use; several
//!   views may coexist.
//!
//! Sync calls succeed without doing anything: nothing here ever needs to be durable.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use super::{out_of_bounds, FileSystem, LockGuard, MappedFile, OpenMode, SlotFile};

/// Granularity of the in-memory copy of changed bytes.
const PAGE_BYTES: u64 = 4096;
/// Reads smaller than this go through a one-block cache, so that a scan reading record by
/// record costs one `pread` per block, not one per record.
const BLOCK_BYTES: u64 = 1 << 20;

/// One change the view kept in memory instead of making it on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A directory would be created.
    CreateDir {
        /// The directory.
        path: PathBuf,
    },
    /// A file would be created with this length.
    CreateFile {
        /// The file.
        path: PathBuf,
        /// Its length.
        len_bytes: u64,
    },
    /// Bytes `[offset, offset + len_bytes)` of a mapped file would be written (consecutive
    /// writes are merged).
    Write {
        /// The file.
        path: PathBuf,
        /// First byte written.
        offset: u64,
        /// Bytes written.
        len_bytes: u64,
    },
    /// Everything after `offset` would be zeroed; `zeroed_bytes` of it (counted by 4 KiB page)
    /// were not zero.
    ZeroTail {
        /// The file.
        path: PathBuf,
        /// Where the kept part ends.
        offset: u64,
        /// Bytes of the pages that held something.
        zeroed_bytes: u64,
    },
    /// An existing file would be extended (with zeros) to this length.
    SetLen {
        /// The file.
        path: PathBuf,
        /// Its new length.
        len_bytes: u64,
    },
    /// A small file would be replaced whole.
    WriteFile {
        /// The file.
        path: PathBuf,
        /// Its new length.
        len_bytes: u64,
    },
    /// A file would be renamed.
    Rename {
        /// Old name.
        from: PathBuf,
        /// New name.
        to: PathBuf,
    },
    /// A file would be removed.
    Remove {
        /// The file.
        path: PathBuf,
    },
}

impl Change {
    /// The file or directory the change is about (the new name of a rename).
    pub fn path(&self) -> &Path {
        match self {
            Change::CreateDir { path }
            | Change::CreateFile { path, .. }
            | Change::Write { path, .. }
            | Change::ZeroTail { path, .. }
            | Change::SetLen { path, .. }
            | Change::WriteFile { path, .. }
            | Change::Remove { path } => path,
            Change::Rename { to, .. } => to,
        }
    }
}

/// Content of a file the view changed.
#[derive(Debug)]
enum Entry {
    /// A mapped file: real bytes (if any) under changed pages.
    Mapped(Arc<PagedFile>),
    /// A small file written whole.
    Small(Vec<u8>),
}

#[derive(Debug, Default)]
struct State {
    /// Files whose current content lives in memory, by current name.
    files: BTreeMap<PathBuf, Entry>,
    /// Real files hidden by a remove or a rename.
    hidden: BTreeSet<PathBuf>,
    /// Directories created in memory.
    dirs: BTreeSet<PathBuf>,
    changes: Vec<Change>,
}

impl State {
    fn record(&mut self, change: Change) {
        // A write that continues a recent write of the same file extends it: replaying
        // dispatch appends entries to several queues in turn.
        if let Change::Write {
            path,
            offset,
            len_bytes,
        } = &change
        {
            for earlier in self.changes.iter_mut().rev().take(64) {
                if let Change::Write {
                    path: p,
                    offset: o,
                    len_bytes: l,
                } = earlier
                {
                    if p == path && *o + *l == *offset {
                        *l += len_bytes;
                        return;
                    }
                }
            }
        }
        self.changes.push(change);
    }
}

/// The read-only view. Clones share the same in-memory changes.
#[derive(Debug, Clone, Default)]
pub struct OverlayFs {
    state: Arc<Mutex<State>>,
}

impl OverlayFs {
    /// A view of the real file system with no changes yet.
    pub fn new() -> Self {
        OverlayFs::default()
    }

    /// Every change made through the view so far, in order.
    pub fn changes(&self) -> Vec<Change> {
        self.state.lock().changes.clone()
    }

    fn real_visible(state: &State, path: &Path) -> bool {
        !state.hidden.contains(path) && !state.files.contains_key(path)
    }
}

/// A fixed-length file: real bytes (read with `pread`) under pages changed in memory.
#[derive(Debug)]
struct PagedFile {
    path: PathBuf,
    base: Option<File>,
    base_len: u64,
    len_bytes: u64,
    pages: Mutex<BTreeMap<u64, Box<[u8]>>>,
    cache: Mutex<Option<(u64, Vec<u8>)>>,
    state: Arc<Mutex<State>>,
}

impl PagedFile {
    /// Reads real bytes at `offset` (zeros past the real file's end, as in a file created
    /// longer than what was ever written).
    fn read_base(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let available = match &self.base {
            Some(_) => self.base_len.saturating_sub(offset),
            None => 0,
        };
        let want = usize::try_from(available.min(buf.len() as u64)).unwrap_or(buf.len());
        let (target, past_end) = buf.split_at_mut(want.min(buf.len()));
        past_end.fill(0);
        match &self.base {
            // read_exact_at: a file cut short under us is an error, never a SIGBUS.
            Some(base) if !target.is_empty() => base.read_exact_at(target, offset),
            _ => Ok(()),
        }
    }

    /// Reads real bytes through the one-block cache.
    fn read_base_cached(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let len = buf.len() as u64;
        let block = offset / BLOCK_BYTES;
        let end = offset + len;
        if len > BLOCK_BYTES / 4 || end.div_ceil(BLOCK_BYTES) - block > 1 {
            return self.read_base(offset, buf);
        }
        let mut cache = self.cache.lock();
        let fresh = !matches!(&*cache, Some((b, _)) if *b == block);
        if fresh {
            let start = block * BLOCK_BYTES;
            let size = BLOCK_BYTES.min(self.len_bytes.saturating_sub(start));
            let mut data = vec![0u8; usize::try_from(size).unwrap_or(0)];
            self.read_base(start, &mut data)?;
            *cache = Some((block, data));
        }
        let from = usize::try_from(offset - block * BLOCK_BYTES).unwrap_or(usize::MAX);
        let src = cache
            .as_ref()
            .and_then(|(_, data)| data.get(from..from.checked_add(buf.len())?));
        match src {
            Some(src) => {
                buf.copy_from_slice(src);
                Ok(())
            }
            None => self.read_base(offset, buf),
        }
    }

    /// The current content of the page at `index` (changed or real).
    fn page(&self, index: u64, pages: &BTreeMap<u64, Box<[u8]>>) -> io::Result<Box<[u8]>> {
        if let Some(page) = pages.get(&index) {
            return Ok(page.clone());
        }
        let start = index * PAGE_BYTES;
        let size = PAGE_BYTES.min(self.len_bytes.saturating_sub(start));
        let mut data = vec![0u8; usize::try_from(size).unwrap_or(0)];
        self.read_base_cached(start, &mut data)?;
        Ok(data.into_boxed_slice())
    }

    /// Reads `buf.len()` bytes at `offset` of the current content (changed pages over real
    /// bytes), refusing reads past `limit`.
    fn read_paged(&self, offset: u64, buf: &mut [u8], limit: u64) -> io::Result<()> {
        let end = offset
            .checked_add(buf.len() as u64)
            .filter(|end| *end <= limit)
            .ok_or_else(|| out_of_bounds("read", offset, buf.len() as u64, limit))?;
        let pages = self.pages.lock();
        let first = offset / PAGE_BYTES;
        let last = end.saturating_sub(1) / PAGE_BYTES;
        if buf.is_empty() || pages.range(first..=last).next().is_none() {
            drop(pages);
            return self.read_base_cached(offset, buf);
        }
        let mut at = offset;
        let mut out = 0usize;
        while at < end {
            let index = at / PAGE_BYTES;
            let page = self.page(index, &pages)?;
            let within = usize::try_from(at - index * PAGE_BYTES).unwrap_or(0);
            let take = usize::try_from((end - at).min(PAGE_BYTES - (at - index * PAGE_BYTES)))
                .unwrap_or(0);
            let (Some(dst), Some(src)) = (
                buf.get_mut(out..out + take),
                page.get(within..within + take),
            ) else {
                return Err(out_of_bounds("read", at, take as u64, self.len_bytes));
            };
            dst.copy_from_slice(src);
            at += take as u64;
            out += take;
        }
        Ok(())
    }

    /// Writes `bytes` at `offset` into changed pages (never to disk) and journals the write.
    fn write_paged(self: &Arc<Self>, offset: u64, bytes: &[u8]) -> io::Result<()> {
        let end = offset
            .checked_add(bytes.len() as u64)
            .filter(|end| *end <= self.len_bytes)
            .ok_or_else(|| out_of_bounds("write", offset, bytes.len() as u64, self.len_bytes))?;
        let mut current = vec![0u8; bytes.len()];
        self.read_paged(offset, &mut current, self.len_bytes)?;
        if current == bytes {
            // Writing what is already there changes nothing: not a change to list (recovery's
            // replay rewrites decision slots that are already on disk).
            return Ok(());
        }
        let mut pages = self.pages.lock();
        let mut at = offset;
        let mut from = 0usize;
        while at < end {
            let index = at / PAGE_BYTES;
            let mut page = self.page(index, &pages)?;
            let within = usize::try_from(at - index * PAGE_BYTES).unwrap_or(0);
            let take = usize::try_from((end - at).min(PAGE_BYTES - (at - index * PAGE_BYTES)))
                .unwrap_or(0);
            if let (Some(dst), Some(src)) = (
                page.get_mut(within..within + take),
                bytes.get(from..from + take),
            ) {
                dst.copy_from_slice(src);
            }
            pages.insert(index, page);
            at += take as u64;
            from += take;
        }
        drop(pages);
        let mut state = self.state.lock();
        remember(&mut state, self);
        state.record(Change::Write {
            path: self.path.clone(),
            offset,
            len_bytes: bytes.len() as u64,
        });
        Ok(())
    }
}

/// A [`PagedFile`] as the store sees a mapped file.
#[derive(Debug)]
struct OverlayMapped {
    file: Arc<PagedFile>,
    readable_bytes: AtomicU64,
}

impl MappedFile for OverlayMapped {
    fn len_bytes(&self) -> u64 {
        self.file.len_bytes
    }

    fn readable_bytes(&self) -> u64 {
        self.readable_bytes.load(Ordering::Acquire)
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.file.read_paged(offset, buf, self.readable_bytes())
    }

    fn write_at(&self, offset: u64, bytes: &[u8]) -> io::Result<()> {
        self.file.write_paged(offset, bytes)
    }

    fn publish(&self, readable_bytes: u64) {
        self.readable_bytes
            .fetch_max(readable_bytes.min(self.file.len_bytes), Ordering::AcqRel);
    }

    fn sync_range(&self, _offset: u64, _len: u64) -> io::Result<()> {
        Ok(())
    }

    fn reset_tail(&mut self, readable_bytes: u64, zero_tail: bool) -> io::Result<u64> {
        let file = &self.file;
        let readable = readable_bytes.min(file.len_bytes);
        *self.readable_bytes.get_mut() = readable;
        if !zero_tail {
            return Ok(0);
        }
        let mut pages = file.pages.lock();
        let mut zeroed_bytes = 0u64;
        let mut at = readable;
        while at < file.len_bytes {
            let index = at / PAGE_BYTES;
            let mut page = file.page(index, &pages)?;
            let within = usize::try_from(at - index * PAGE_BYTES).unwrap_or(0);
            if let Some(tail) = page.get_mut(within..) {
                if tail.iter().any(|&b| b != 0) {
                    zeroed_bytes += tail.len() as u64;
                    tail.fill(0);
                    pages.insert(index, page);
                }
            }
            at = (index + 1) * PAGE_BYTES;
        }
        drop(pages);
        let mut state = file.state.lock();
        remember(&mut state, file);
        state.record(Change::ZeroTail {
            path: file.path.clone(),
            offset: readable,
            zeroed_bytes,
        });
        Ok(zeroed_bytes)
    }
}

/// A [`PagedFile`] as the store sees a slot file (decisions): the same in-memory pages, read
/// and written in place.
#[derive(Debug)]
struct OverlaySlots {
    file: Arc<PagedFile>,
}

/// Bytes of a slot (little-endian `u64`).
const SLOT_BYTES: u64 = 8;

impl OverlaySlots {
    fn offset(&self, index: u64) -> io::Result<u64> {
        index
            .checked_mul(SLOT_BYTES)
            .filter(|at| at.saturating_add(SLOT_BYTES) <= self.file.len_bytes)
            .ok_or_else(|| out_of_bounds("slot", index, 1, self.slot_count()))
    }
}

impl SlotFile for OverlaySlots {
    fn slot_count(&self) -> u64 {
        self.file.len_bytes / SLOT_BYTES
    }

    fn load(&self, index: u64) -> io::Result<u64> {
        let mut bytes = [0u8; SLOT_BYTES as usize];
        self.file
            .read_paged(self.offset(index)?, &mut bytes, self.file.len_bytes)?;
        Ok(u64::from_le_bytes(bytes))
    }

    fn store(&self, index: u64, value: u64) -> io::Result<()> {
        self.file
            .write_paged(self.offset(index)?, &value.to_le_bytes())
    }

    fn sync(&self) -> io::Result<()> {
        Ok(())
    }
}

/// Registers a changed file by name, so that a later open of the same name sees the changes
/// (unless it was removed or renamed meanwhile).
fn remember(state: &mut State, file: &Arc<PagedFile>) {
    if !state.hidden.contains(&file.path) {
        state
            .files
            .entry(file.path.clone())
            .or_insert_with(|| Entry::Mapped(file.clone()));
    }
}

#[derive(Debug)]
struct SharedLock {
    _file: Option<File>,
}

impl LockGuard for SharedLock {}

impl FileSystem for OverlayFs {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        if self.exists(path) {
            return Ok(());
        }
        let mut state = self.state.lock();
        for dir in path.ancestors().filter(|a| !a.as_os_str().is_empty()) {
            if dir.is_dir() || state.dirs.contains(dir) {
                break;
            }
            state.dirs.insert(dir.to_path_buf());
            state.record(Change::CreateDir {
                path: dir.to_path_buf(),
            });
        }
        Ok(())
    }

    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        let state = self.state.lock();
        let mut names = BTreeSet::new();
        let real = !state.dirs.contains(path);
        if real {
            for entry in fs::read_dir(path)? {
                let entry = entry?;
                let full = entry.path();
                if state.hidden.contains(&full) {
                    continue;
                }
                if let Ok(name) = entry.file_name().into_string() {
                    names.insert(name);
                }
            }
        }
        let children = state.files.keys().chain(state.dirs.iter());
        for child in children.filter(|c| c.parent() == Some(path)) {
            if let Some(name) = child.file_name().and_then(|n| n.to_str()) {
                names.insert(name.to_owned());
            }
        }
        Ok(names.into_iter().collect())
    }

    fn exists(&self, path: &Path) -> bool {
        let state = self.state.lock();
        state.files.contains_key(path)
            || state.dirs.contains(path)
            || (!state.hidden.contains(path) && path.exists())
    }

    fn file_len(&self, path: &Path) -> io::Result<u64> {
        let state = self.state.lock();
        match state.files.get(path) {
            Some(Entry::Mapped(file)) => Ok(file.len_bytes),
            Some(Entry::Small(bytes)) => Ok(bytes.len() as u64),
            None if state.hidden.contains(path) => Err(io::ErrorKind::NotFound.into()),
            None => Ok(fs::metadata(path)?.len()),
        }
    }

    fn open_mapped(&self, path: &Path, mode: OpenMode) -> io::Result<Box<dyn MappedFile>> {
        let mut state = self.state.lock();
        let (file, readable) = match mode {
            OpenMode::Existing => match state.files.get(path) {
                Some(Entry::Mapped(file)) => (file.clone(), file.len_bytes),
                Some(Entry::Small(_)) => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("{path:?} was written as a small file"),
                    ))
                }
                None if state.hidden.contains(path) => return Err(io::ErrorKind::NotFound.into()),
                None => {
                    let base = File::open(path)?;
                    let len_bytes = base.metadata()?.len();
                    let file = Arc::new(PagedFile {
                        path: path.to_path_buf(),
                        base: Some(base),
                        base_len: len_bytes,
                        len_bytes,
                        pages: Mutex::new(BTreeMap::new()),
                        cache: Mutex::new(None),
                        state: self.state.clone(),
                    });
                    // Registered by name only once changed (`remember`): a scan that opens
                    // thousands of files keeps none of them open.
                    (file, len_bytes)
                }
            },
            OpenMode::Create { len_bytes } | OpenMode::CreateAllocated { len_bytes } => {
                let taken = state.files.contains_key(path)
                    || (OverlayFs::real_visible(&state, path) && path.exists());
                if taken {
                    return Err(io::ErrorKind::AlreadyExists.into());
                }
                let file = Arc::new(PagedFile {
                    path: path.to_path_buf(),
                    base: None,
                    base_len: 0,
                    len_bytes,
                    pages: Mutex::new(BTreeMap::new()),
                    cache: Mutex::new(None),
                    state: self.state.clone(),
                });
                state
                    .files
                    .insert(path.to_path_buf(), Entry::Mapped(file.clone()));
                state.record(Change::CreateFile {
                    path: path.to_path_buf(),
                    len_bytes,
                });
                (file, 0)
            }
        };
        Ok(Box::new(OverlayMapped {
            file,
            readable_bytes: AtomicU64::new(readable),
        }))
    }

    fn open_slots(&self, path: &Path, len_bytes: u64) -> io::Result<Box<dyn SlotFile>> {
        let mut state = self.state.lock();
        let file = match state.files.get(path) {
            Some(Entry::Mapped(file)) => file.clone(),
            Some(Entry::Small(_)) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{path:?} was written as a small file"),
                ))
            }
            None if OverlayFs::real_visible(&state, path) && path.exists() => {
                let base = File::open(path)?;
                let base_len = base.metadata()?.len();
                let file = Arc::new(PagedFile {
                    path: path.to_path_buf(),
                    base: Some(base),
                    base_len,
                    len_bytes: base_len.max(len_bytes),
                    pages: Mutex::new(BTreeMap::new()),
                    cache: Mutex::new(None),
                    state: self.state.clone(),
                });
                if base_len < len_bytes {
                    // As the real file system would: a size change lost in a power loss is
                    // redone (in memory here).
                    state
                        .files
                        .insert(path.to_path_buf(), Entry::Mapped(file.clone()));
                    state.record(Change::SetLen {
                        path: path.to_path_buf(),
                        len_bytes,
                    });
                }
                file
            }
            None => {
                let file = Arc::new(PagedFile {
                    path: path.to_path_buf(),
                    base: None,
                    base_len: 0,
                    len_bytes,
                    pages: Mutex::new(BTreeMap::new()),
                    cache: Mutex::new(None),
                    state: self.state.clone(),
                });
                state
                    .files
                    .insert(path.to_path_buf(), Entry::Mapped(file.clone()));
                state.record(Change::CreateFile {
                    path: path.to_path_buf(),
                    len_bytes,
                });
                file
            }
        };
        Ok(Box::new(OverlaySlots { file }))
    }

    fn read_file(&self, path: &Path) -> io::Result<Vec<u8>> {
        let state = self.state.lock();
        match state.files.get(path) {
            Some(Entry::Small(bytes)) => Ok(bytes.clone()),
            Some(Entry::Mapped(file)) => {
                let mut out = vec![0u8; usize::try_from(file.len_bytes).unwrap_or(0)];
                let pages = file.pages.lock();
                for (index, chunk) in out.chunks_mut(PAGE_BYTES as usize).enumerate() {
                    let page = file.page(index as u64, &pages)?;
                    let n = chunk.len().min(page.len());
                    if let (Some(dst), Some(src)) = (chunk.get_mut(..n), page.get(..n)) {
                        dst.copy_from_slice(src);
                    }
                }
                Ok(out)
            }
            None if state.hidden.contains(path) => Err(io::ErrorKind::NotFound.into()),
            None => fs::read(path),
        }
    }

    fn write_file_synced(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        let mut state = self.state.lock();
        state
            .files
            .insert(path.to_path_buf(), Entry::Small(bytes.to_vec()));
        state.record(Change::WriteFile {
            path: path.to_path_buf(),
            len_bytes: bytes.len() as u64,
        });
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut state = self.state.lock();
        let entry = match state.files.remove(from) {
            Some(entry) => entry,
            None if OverlayFs::real_visible(&state, from) && from.exists() => {
                // A real file renamed: its bytes come along as a small file (the store only
                // renames files it has just written, so this path is not taken in practice).
                Entry::Small(fs::read(from)?)
            }
            None => return Err(io::ErrorKind::NotFound.into()),
        };
        state.hidden.insert(from.to_path_buf());
        state.files.insert(to.to_path_buf(), entry);
        state.record(Change::Rename {
            from: from.to_path_buf(),
            to: to.to_path_buf(),
        });
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut state = self.state.lock();
        let in_memory = state.files.remove(path).is_some();
        let real = OverlayFs::real_visible(&state, path) && path.exists();
        if !in_memory && !real {
            return Err(io::ErrorKind::NotFound.into());
        }
        state.hidden.insert(path.to_path_buf());
        state.record(Change::Remove {
            path: path.to_path_buf(),
        });
        Ok(())
    }

    fn sync_dir(&self, _path: &Path) -> io::Result<()> {
        Ok(())
    }

    fn try_lock(&self, path: &Path) -> io::Result<Option<Box<dyn LockGuard>>> {
        let file = match OpenOptions::new().read(true).open(path) {
            Ok(file) => file,
            // No lock file: no store ever opened here, so none is live.
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                return Ok(Some(Box::new(SharedLock { _file: None })))
            }
            Err(err) => return Err(err),
        };
        match file.try_lock_shared() {
            Ok(()) => Ok(Some(Box::new(SharedLock { _file: Some(file) }))),
            Err(fs::TryLockError::WouldBlock) => Ok(None),
            Err(fs::TryLockError::Error(err)) => Err(err),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn changes_stay_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("seg");
        std::fs::write(&real, vec![7u8; 10_000]).unwrap();
        let fs = OverlayFs::new();
        let mut file = fs.open_mapped(&real, OpenMode::Existing).unwrap();
        let mut buf = [0u8; 4];
        file.read_at(4094, &mut buf).unwrap();
        assert_eq!(buf, [7; 4]);
        assert_eq!(file.reset_tail(5000, true).unwrap(), 5000);
        file.write_at(5000, &[1, 2, 3]).unwrap();
        file.publish(5003);
        file.read_at(4998, &mut buf).unwrap();
        assert_eq!(buf, [7, 7, 1, 2]);
        fs.write_file_synced(&dir.path().join("x.tmp"), b"new")
            .unwrap();
        fs.rename(&dir.path().join("x.tmp"), &dir.path().join("x"))
            .unwrap();
        fs.remove_file(&real).unwrap();
        assert!(!fs.exists(&real));
        assert_eq!(fs.read_file(&dir.path().join("x")).unwrap(), b"new");
        assert_eq!(fs.list_dir(dir.path()).unwrap(), vec!["x".to_owned()]);
        // Nothing on disk changed.
        assert_eq!(std::fs::read(&real).unwrap(), vec![7u8; 10_000]);
        assert!(!dir.path().join("x").exists());
        assert_eq!(fs.changes().len(), 5);
    }

    #[test]
    fn slot_files_stay_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("slots");
        std::fs::write(&real, vec![0u8; 16]).unwrap();
        let fs = OverlayFs::new();
        let slots = fs.open_slots(&real, 64).unwrap();
        assert_eq!(slots.slot_count(), 8);
        slots.store(5, 0x0909_0909_0909_0909).unwrap();
        // Storing what is there already is not a change.
        slots.store(0, 0).unwrap();
        let again = fs.open_slots(&real, 64).unwrap();
        assert_eq!(again.load(5).unwrap(), 0x0909_0909_0909_0909);
        assert!(again.load(8).is_err());
        let fresh = fs.open_slots(&dir.path().join("new"), 32).unwrap();
        assert_eq!(fresh.slot_count(), 4);
        assert!(fs.exists(&dir.path().join("new")));
        // Nothing on disk changed.
        assert_eq!(std::fs::read(&real).unwrap(), vec![0u8; 16]);
        assert!(!dir.path().join("new").exists());
        let changes = fs.changes();
        assert_eq!(changes.len(), 3, "{changes:?}");
        assert!(matches!(changes[0], Change::SetLen { len_bytes: 64, .. }));
        assert!(matches!(
            changes[1],
            Change::Write {
                offset: 40,
                len_bytes: 8,
                ..
            }
        ));
        assert!(matches!(
            changes[2],
            Change::CreateFile { len_bytes: 32, .. }
        ));
    }

    #[test]
    fn lock_probe_creates_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let lock = dir.path().join("LOCK");
        let fs = OverlayFs::new();
        assert!(fs.try_lock(&lock).unwrap().is_some());
        assert!(!lock.exists());
        let held = super::super::RealFs.try_lock(&lock).unwrap().unwrap();
        assert!(fs.try_lock(&lock).unwrap().is_none());
        drop(held);
        let shared = fs.try_lock(&lock).unwrap();
        assert!(shared.is_some());
        assert!(super::super::RealFs.try_lock(&lock).unwrap().is_none());
    }
}
