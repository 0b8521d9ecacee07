//! A simulated file system for crash tests: everything lives in memory, and the simulator
//! tracks what is durable, so it can build the image a power loss would leave.
//!
//! Model (REFERENCE.md section 5):
//! - every file has its current bytes (the page cache) and its durable bytes (the disk); a
//!   sync of a range copies the current bytes of the touched units into the durable bytes;
//! - units are 4 KiB pages for mapped files and 512-byte sectors for other files;
//! - names (files and directories) have a current namespace and a durable one; a create,
//!   rename or remove reaches the durable namespace only when its directory is synced, and a
//!   file whose directory is not durable is lost with it;
//! - [`SimFs::power_loss`] builds the surviving image: durable names only, and each unsynced
//!   unit independently kept, dropped (old bytes), zeroed, garbage, or torn at a sector;
//!   [`SimFs::process_crash`] keeps everything written (the page cache survives a kill);
//! - [`SimFs::fail_syncs_after`] makes every sync from the n-th on fail with `EIO`.
//!
//! Images are deterministic for a seed.

use std::collections::{BTreeMap, BTreeSet};

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use super::{out_of_bounds, FileSystem, LockGuard, MappedFile, OpenMode, SlotFile};
use crate::seeded::SeededRng;

const PAGE_BYTES: usize = 4096;
const SECTOR_BYTES: usize = 512;

#[derive(Debug, Clone)]
struct Inode {
    data: Vec<u8>,
    durable: Vec<u8>,
    /// Unit size for durability (page or sector).
    unit_bytes: usize,
    /// Units written since their last sync, with the byte ranges written in each (kept apart:
    /// a slot file rewrites scattered slots of one sector, and the synced bytes between them
    /// must not be counted as written): a power loss may damage those bytes only (synced bytes
    /// stay intact, as on media that write 512-byte sectors atomically: REFERENCE.md section 5).
    dirty: BTreeMap<usize, Vec<(usize, usize)>>,
}

impl Inode {
    fn new(data: Vec<u8>, durable: Vec<u8>, unit_bytes: usize) -> Self {
        Inode {
            data,
            durable,
            unit_bytes,
            dirty: BTreeMap::new(),
        }
    }

    fn write(&mut self, offset: usize, bytes: &[u8]) {
        let end = offset + bytes.len();
        if self.data.len() < end {
            self.data.resize(end, 0);
        }
        if let Some(dst) = self.data.get_mut(offset..end) {
            dst.copy_from_slice(bytes);
        }
        if !bytes.is_empty() {
            for unit in offset / self.unit_bytes..=(end - 1) / self.unit_bytes {
                let lo = offset.max(unit * self.unit_bytes);
                let hi = end.min((unit + 1) * self.unit_bytes);
                let ranges = self.dirty.entry(unit).or_default();
                // Merge with a range it overlaps or touches; otherwise keep it apart.
                match ranges.iter_mut().find(|r| lo <= r.1 && r.0 <= hi) {
                    Some(range) => *range = (range.0.min(lo), range.1.max(hi)),
                    None => ranges.push((lo, hi)),
                }
            }
        }
    }

    fn sync(&mut self, offset: usize, len: usize) {
        if self.durable.len() != self.data.len() {
            self.durable.resize(self.data.len(), 0);
        }
        let first = offset / self.unit_bytes;
        let last = (offset + len.max(1) - 1) / self.unit_bytes;
        let units: Vec<usize> = self.dirty.range(first..=last).map(|(u, _)| *u).collect();
        for unit in units {
            let start = unit * self.unit_bytes;
            let end = (start + self.unit_bytes).min(self.data.len());
            if let (Some(src), Some(dst)) =
                (self.data.get(start..end), self.durable.get_mut(start..end))
            {
                dst.copy_from_slice(src);
            }
            self.dirty.remove(&unit);
        }
    }

    fn sync_all(&mut self) {
        self.sync(0, self.data.len());
        self.durable.truncate(self.data.len());
    }

    /// The bytes a power loss leaves: durable bytes, with each dirty unit resolved at random.
    fn after_power_loss(&self, rng: &mut SeededRng) -> Vec<u8> {
        let mut out = self.durable.clone();
        // An unsynced size change may revert: keep the durable length unless the new length
        // survives by chance.
        if self.data.len() > out.len() && rng.one_in(2) {
            out.resize(self.data.len(), 0);
        }
        // One fate per unit (a sector is written whole or not at all, or torn), applied to
        // every range written in it.
        for ranges in self.dirty.values() {
            let fate = rng.below(5);
            for &(start, end) in ranges {
                self.resolve_range(&mut out, start, end, fate, rng);
            }
        }
        out
    }

    /// Applies a power-loss fate to the written range `[start, end)` of `out`.
    fn resolve_range(
        &self,
        out: &mut [u8],
        start: usize,
        end: usize,
        fate: u64,
        rng: &mut SeededRng,
    ) {
        {
            let end = end.min(out.len());
            if start >= end {
                return;
            }
            let new = self.data.get(start..end).unwrap_or_default();
            let Some(dst) = out.get_mut(start..end) else {
                return;
            };
            match fate {
                0 => dst.copy_from_slice(new.get(..dst.len()).unwrap_or(new)),
                1 => {} // old bytes stay
                2 => dst.fill(0),
                3 => dst.iter_mut().for_each(|b| *b = rng.next_u64() as u8),
                _ => {
                    // Torn: a prefix of the written bytes is new, the rest old (any byte, a
                    // superset of the sector-granular tears real media produce).
                    let cut = usize::try_from(rng.below(dst.len() as u64 + 1)).unwrap_or(0);
                    if let (Some(d), Some(s)) = (dst.get_mut(..cut), new.get(..cut)) {
                        d.copy_from_slice(s);
                    }
                }
            }
        }
    }
}

#[derive(Debug, Default)]
struct State {
    files: BTreeMap<PathBuf, Arc<Mutex<Inode>>>,
    dirs: BTreeSet<PathBuf>,
    durable_files: BTreeMap<PathBuf, Arc<Mutex<Inode>>>,
    durable_dirs: BTreeSet<PathBuf>,
    locks: BTreeSet<PathBuf>,
}

#[derive(Debug, Default)]
struct Faults {
    syncs: AtomicU64,
    /// Syncs from this count on fail (u64::MAX: never).
    fail_syncs_from: AtomicU64,
    /// Creating or growing files beyond this many bytes in all fails with `StorageFull`.
    capacity_bytes: AtomicU64,
}

impl Faults {
    fn sync(&self) -> io::Result<()> {
        let n = self.syncs.fetch_add(1, Ordering::SeqCst);
        if n >= self.fail_syncs_from.load(Ordering::SeqCst) {
            Err(io::Error::other("simulated sync failure (EIO)"))
        } else {
            Ok(())
        }
    }
}

/// The simulated file system. Clones share the same state.
#[derive(Debug, Clone)]
pub struct SimFs {
    state: Arc<Mutex<State>>,
    faults: Arc<Faults>,
}

impl Default for SimFs {
    fn default() -> Self {
        let mut state = State::default();
        for root in [PathBuf::from("/"), PathBuf::from(".")] {
            state.dirs.insert(root.clone());
            state.durable_dirs.insert(root);
        }
        SimFs {
            state: Arc::new(Mutex::new(state)),
            faults: Arc::new(Faults {
                syncs: AtomicU64::new(0),
                fail_syncs_from: AtomicU64::new(u64::MAX),
                capacity_bytes: AtomicU64::new(u64::MAX),
            }),
        }
    }
}

fn used_bytes(state: &State) -> u64 {
    state
        .files
        .values()
        .map(|inode| inode.lock().data.len() as u64)
        .sum()
}

/// Fails with `StorageFull` if `more` bytes would exceed the capacity.
fn check_space(state: &State, faults: &Faults, more: u64) -> io::Result<()> {
    let capacity = faults.capacity_bytes.load(Ordering::SeqCst);
    if capacity != u64::MAX && used_bytes(state).saturating_add(more) > capacity {
        return Err(io::Error::new(
            io::ErrorKind::StorageFull,
            "simulated full disk (ENOSPC)",
        ));
    }
    Ok(())
}

fn parent(path: &Path) -> PathBuf {
    super::parent_dir(path).to_path_buf()
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("{path:?} not found"))
}

impl SimFs {
    /// An empty file system.
    pub fn new() -> Self {
        SimFs::default()
    }

    /// Number of sync calls so far (file ranges, whole files, directories).
    pub fn sync_count(&self) -> u64 {
        self.faults.syncs.load(Ordering::SeqCst)
    }

    /// Every sync from the `n`-th on (counting from now, 0 = the next one) fails with an I/O
    /// error; `None` stops failing.
    pub fn fail_syncs_after(&self, n: Option<u64>) {
        let from = n.map_or(u64::MAX, |n| self.sync_count().saturating_add(n));
        self.faults.fail_syncs_from.store(from, Ordering::SeqCst);
    }

    /// Makes the disk hold at most `capacity_bytes` of file data (`None`: unlimited). Creating
    /// or growing a file beyond it fails with `ErrorKind::StorageFull` (`ENOSPC`); writes into
    /// space a file already has still succeed, as with preallocated files on a real disk.
    pub fn set_capacity_bytes(&self, capacity_bytes: Option<u64>) {
        self.faults
            .capacity_bytes
            .store(capacity_bytes.unwrap_or(u64::MAX), Ordering::SeqCst);
    }

    /// Bytes of file data in the current namespace.
    pub fn used_bytes(&self) -> u64 {
        used_bytes(&self.state.lock())
    }

    /// The file system a process crash leaves: every write is kept (the page cache survives),
    /// locks are released.
    pub fn process_crash(&self) -> SimFs {
        let state = self.state.lock();
        let image = SimFs::new();
        {
            let mut new = image.state.lock();
            for (path, inode) in &state.files {
                let inode = inode.lock().clone();
                new.files.insert(path.clone(), Arc::new(Mutex::new(inode)));
            }
            new.dirs = state.dirs.clone();
            new.durable_files = state
                .durable_files
                .keys()
                .filter_map(|p| new.files.get(p).map(|i| (p.clone(), i.clone())))
                .collect();
            new.durable_dirs = state.durable_dirs.clone();
        }
        image
    }

    /// The file system a power loss leaves, for `seed`: only durable names, and each unsynced
    /// unit of each surviving file independently kept, dropped, zeroed, garbage or torn.
    pub fn power_loss(&self, seed: u64) -> SimFs {
        let state = self.state.lock();
        let mut rng = SeededRng::new(seed);
        let image = SimFs::new();
        {
            let mut new = image.state.lock();
            let dir_survives = |dir: &Path, dirs: &BTreeSet<PathBuf>| {
                dir.ancestors()
                    .filter(|a| !a.as_os_str().is_empty())
                    .all(|a| dirs.contains(a) || a == Path::new("/") || a == Path::new("."))
            };
            new.dirs = state
                .durable_dirs
                .iter()
                .filter(|d| dir_survives(d, &state.durable_dirs))
                .cloned()
                .collect();
            new.durable_dirs = new.dirs.clone();
            for (path, inode) in &state.durable_files {
                if !dir_survives(&parent(path), &state.durable_dirs) {
                    continue;
                }
                let old = inode.lock();
                let data = old.after_power_loss(&mut rng);
                let fresh = Arc::new(Mutex::new(Inode::new(data.clone(), data, old.unit_bytes)));
                new.files.insert(path.clone(), fresh.clone());
                new.durable_files.insert(path.clone(), fresh);
            }
        }
        image
    }

    /// A copy of a file's current bytes (for tests that damage files).
    pub fn read_raw(&self, path: &Path) -> Option<Vec<u8>> {
        let state = self.state.lock();
        state.files.get(path).map(|i| i.lock().data.clone())
    }

    /// Writes every file of the current namespace under `root` on the real file system (to
    /// open an image with the real mmap backend).
    pub fn export(&self, root: &Path) -> io::Result<()> {
        let state = self.state.lock();
        for dir in &state.dirs {
            std::fs::create_dir_all(root.join(dir.strip_prefix("/").unwrap_or(dir)))?;
        }
        for (path, inode) in &state.files {
            let target = root.join(path.strip_prefix("/").unwrap_or(path));
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(target, &inode.lock().data)?;
        }
        Ok(())
    }
}

#[derive(Debug)]
struct SimLock {
    state: Arc<Mutex<State>>,
    path: PathBuf,
}

impl LockGuard for SimLock {}

impl Drop for SimLock {
    fn drop(&mut self) {
        self.state.lock().locks.remove(&self.path);
    }
}

#[derive(Debug)]
struct SimMapped {
    inode: Arc<Mutex<Inode>>,
    faults: Arc<Faults>,
    len_bytes: u64,
    readable_bytes: AtomicU64,
    writer: Mutex<()>,
}

impl MappedFile for SimMapped {
    fn len_bytes(&self) -> u64 {
        self.len_bytes
    }

    fn readable_bytes(&self) -> u64 {
        self.readable_bytes.load(Ordering::Acquire)
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let limit = self.readable_bytes();
        let end = offset.checked_add(buf.len() as u64);
        if end.is_none_or(|end| end > limit) {
            return Err(out_of_bounds("read", offset, buf.len() as u64, limit));
        }
        let inode = self.inode.lock();
        let start = usize::try_from(offset).map_err(|_| out_of_bounds("read", offset, 0, limit))?;
        let src = inode
            .data
            .get(start..start + buf.len())
            .ok_or_else(|| out_of_bounds("read", offset, buf.len() as u64, limit))?;
        buf.copy_from_slice(src);
        Ok(())
    }

    fn write_at(&self, offset: u64, bytes: &[u8]) -> io::Result<()> {
        let _writer = self.writer.lock();
        let readable = self.readable_bytes();
        let end = offset.checked_add(bytes.len() as u64);
        if offset < readable || end.is_none_or(|end| end > self.len_bytes) {
            return Err(out_of_bounds(
                "write",
                offset,
                bytes.len() as u64,
                self.len_bytes,
            ));
        }
        let start = usize::try_from(offset).map_err(|_| out_of_bounds("write", offset, 0, 0))?;
        self.inode.lock().write(start, bytes);
        Ok(())
    }

    fn publish(&self, readable_bytes: u64) {
        let _writer = self.writer.lock();
        self.readable_bytes
            .fetch_max(readable_bytes.min(self.len_bytes), Ordering::Release);
    }

    fn sync_range(&self, offset: u64, len: u64) -> io::Result<()> {
        self.faults.sync()?;
        let start = usize::try_from(offset).map_err(|_| out_of_bounds("sync", offset, len, 0))?;
        let len = usize::try_from(len).map_err(|_| out_of_bounds("sync", offset, len, 0))?;
        self.inode.lock().sync(start, len);
        Ok(())
    }

    fn reset_tail(&mut self, readable_bytes: u64, zero_tail: bool) -> io::Result<u64> {
        let readable = readable_bytes.min(self.len_bytes);
        *self.readable_bytes.get_mut() = readable;
        if !zero_tail {
            return Ok(0);
        }
        let start =
            usize::try_from(readable).map_err(|_| out_of_bounds("reset", readable, 0, 0))?;
        let mut inode = self.inode.lock();
        let len = inode.data.len();
        let nonzero: Vec<usize> = (start..len)
            .step_by(PAGE_BYTES)
            .filter(|&at| {
                let page_end = ((at / PAGE_BYTES) + 1) * PAGE_BYTES;
                inode
                    .data
                    .get(at..page_end.min(len))
                    .is_some_and(|p| p.iter().any(|&b| b != 0))
            })
            .collect();
        let mut zeroed_bytes = 0u64;
        for at in nonzero {
            let page_end = (((at / PAGE_BYTES) + 1) * PAGE_BYTES).min(len);
            let zeros = vec![0u8; page_end - at];
            inode.write(at, &zeros);
            zeroed_bytes += zeros.len() as u64;
        }
        drop(inode);
        self.faults.sync()?;
        self.inode.lock().sync(start, len.saturating_sub(start));
        Ok(zeroed_bytes)
    }
}

#[derive(Debug)]
struct SimSlots {
    inode: Arc<Mutex<Inode>>,
    faults: Arc<Faults>,
    len_bytes: u64,
}

impl SimSlots {
    fn start(&self, index: u64) -> io::Result<usize> {
        let limit = self.len_bytes / 8;
        if index >= limit {
            return Err(out_of_bounds("slot", index, 8, limit));
        }
        usize::try_from(index * 8).map_err(|_| out_of_bounds("slot", index, 8, limit))
    }
}

impl SlotFile for SimSlots {
    fn slot_count(&self) -> u64 {
        self.len_bytes / 8
    }

    fn load(&self, index: u64) -> io::Result<u64> {
        let start = self.start(index)?;
        let inode = self.inode.lock();
        let mut slot = [0u8; 8];
        if let Some(src) = inode.data.get(start..start + 8) {
            slot.copy_from_slice(src);
        }
        Ok(u64::from_le_bytes(slot))
    }

    fn store(&self, index: u64, value: u64) -> io::Result<()> {
        let start = self.start(index)?;
        self.inode.lock().write(start, &value.to_le_bytes());
        Ok(())
    }

    fn sync(&self) -> io::Result<()> {
        self.faults.sync()?;
        self.inode.lock().sync_all();
        Ok(())
    }
}

impl FileSystem for SimFs {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut state = self.state.lock();
        for ancestor in path.ancestors().filter(|a| !a.as_os_str().is_empty()) {
            if state.files.contains_key(ancestor) {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    "a file is in the way",
                ));
            }
            state.dirs.insert(ancestor.to_path_buf());
        }
        Ok(())
    }

    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        let state = self.state.lock();
        if !state.dirs.contains(path) {
            return Err(not_found(path));
        }
        let names = state
            .files
            .keys()
            .chain(state.dirs.iter())
            .filter(|p| p.parent() == Some(path) && p.as_path() != path)
            .filter_map(|p| p.file_name().and_then(|n| n.to_str()).map(str::to_owned))
            .collect();
        Ok(names)
    }

    fn exists(&self, path: &Path) -> bool {
        let state = self.state.lock();
        state.files.contains_key(path) || state.dirs.contains(path)
    }

    fn file_len(&self, path: &Path) -> io::Result<u64> {
        let state = self.state.lock();
        let inode = state.files.get(path).ok_or_else(|| not_found(path))?;
        let len = inode.lock().data.len() as u64;
        Ok(len)
    }

    fn open_mapped(&self, path: &Path, mode: OpenMode) -> io::Result<Box<dyn MappedFile>> {
        let mut state = self.state.lock();
        if !state.dirs.contains(&parent(path)) {
            return Err(not_found(&parent(path)));
        }
        let (inode, readable) = match mode {
            OpenMode::Create { len_bytes } | OpenMode::CreateAllocated { len_bytes } => {
                if state.files.contains_key(path) {
                    return Err(io::Error::new(io::ErrorKind::AlreadyExists, "file exists"));
                }
                check_space(&state, &self.faults, len_bytes)?;
                self.faults.sync()?;
                let len = usize::try_from(len_bytes)
                    .map_err(|_| out_of_bounds("create", 0, len_bytes, 0))?;
                // Zero-filled and synced at creation, as the real file system does.
                let inode = Arc::new(Mutex::new(Inode::new(
                    vec![0; len],
                    vec![0; len],
                    PAGE_BYTES,
                )));
                state.files.insert(path.to_path_buf(), inode.clone());
                (inode, 0)
            }
            OpenMode::Existing => {
                let inode = state
                    .files
                    .get(path)
                    .ok_or_else(|| not_found(path))?
                    .clone();
                let len = inode.lock().data.len() as u64;
                inode.lock().unit_bytes = PAGE_BYTES;
                (inode, len)
            }
        };
        let len_bytes = inode.lock().data.len() as u64;
        Ok(Box::new(SimMapped {
            inode,
            faults: self.faults.clone(),
            len_bytes,
            readable_bytes: AtomicU64::new(readable),
            writer: Mutex::new(()),
        }))
    }

    fn open_slots(&self, path: &Path, len_bytes: u64) -> io::Result<Box<dyn SlotFile>> {
        let mut state = self.state.lock();
        if !state.dirs.contains(&parent(path)) {
            return Err(not_found(&parent(path)));
        }
        let inode = match state.files.get(path) {
            Some(inode) => inode.clone(),
            None => {
                let len = usize::try_from(len_bytes)
                    .map_err(|_| out_of_bounds("create", 0, len_bytes, 0))?;
                check_space(&state, &self.faults, len_bytes)?;
                // Sparse: the length is a size change like any other until synced.
                let inode = Arc::new(Mutex::new(Inode::new(
                    vec![0; len],
                    Vec::new(),
                    SECTOR_BYTES,
                )));
                state.files.insert(path.to_path_buf(), inode.clone());
                inode
            }
        };
        let len_bytes = {
            let mut inode = inode.lock();
            inode.unit_bytes = SECTOR_BYTES;
            let len =
                usize::try_from(len_bytes).map_err(|_| out_of_bounds("create", 0, len_bytes, 0))?;
            if inode.data.len() < len {
                inode.data.resize(len, 0);
            }
            inode.data.len() as u64
        };
        Ok(Box::new(SimSlots {
            inode,
            faults: self.faults.clone(),
            len_bytes,
        }))
    }

    fn read_file(&self, path: &Path) -> io::Result<Vec<u8>> {
        let state = self.state.lock();
        let inode = state.files.get(path).ok_or_else(|| not_found(path))?;
        let data = inode.lock().data.clone();
        Ok(data)
    }

    fn write_file_synced(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        let mut state = self.state.lock();
        if !state.dirs.contains(&parent(path)) {
            return Err(not_found(&parent(path)));
        }
        let inode = state
            .files
            .entry(path.to_path_buf())
            .or_insert_with(|| {
                Arc::new(Mutex::new(Inode::new(Vec::new(), Vec::new(), SECTOR_BYTES)))
            })
            .clone();
        let old_len = inode.lock().data.len() as u64;
        check_space(
            &state,
            &self.faults,
            (bytes.len() as u64).saturating_sub(old_len),
        )?;
        drop(state);
        let mut inode = inode.lock();
        inode.data.clear();
        inode.write(0, bytes);
        self.faults.sync()?;
        inode.sync_all();
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut state = self.state.lock();
        let inode = state.files.remove(from).ok_or_else(|| not_found(from))?;
        state.files.insert(to.to_path_buf(), inode);
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut state = self.state.lock();
        state
            .files
            .remove(path)
            .map(|_| ())
            .ok_or_else(|| not_found(path))
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        self.faults.sync()?;
        let mut state = self.state.lock();
        let in_dir = |p: &PathBuf| p.parent() == Some(path) && p.as_path() != path;
        let files: Vec<(PathBuf, Arc<Mutex<Inode>>)> = state
            .files
            .iter()
            .filter(|(p, _)| in_dir(p))
            .map(|(p, i)| (p.clone(), i.clone()))
            .collect();
        state.durable_files.retain(|p, _| !in_dir(p));
        state.durable_files.extend(files);
        let dirs: Vec<PathBuf> = state.dirs.iter().filter(|p| in_dir(p)).cloned().collect();
        state.durable_dirs.retain(|p| !in_dir(p));
        state.durable_dirs.extend(dirs);
        Ok(())
    }

    fn try_lock(&self, path: &Path) -> io::Result<Option<Box<dyn LockGuard>>> {
        let mut state = self.state.lock();
        if !state.locks.insert(path.to_path_buf()) {
            return Ok(None);
        }
        if !state.files.contains_key(path) {
            state.files.insert(
                path.to_path_buf(),
                Arc::new(Mutex::new(Inode::new(Vec::new(), Vec::new(), SECTOR_BYTES))),
            );
        }
        Ok(Some(Box::new(SimLock {
            state: self.state.clone(),
            path: path.to_path_buf(),
        })))
    }
}
