//! The I/O seam: every byte the store reads or writes goes through [`FileSystem`] and
//! [`MappedFile`]. The real implementation ([`RealFs`]) uses `std::fs` and memory maps; a
//! simulated one can track what is durable and build the image a power loss would leave.
//!
//! Two kinds of file exist:
//! - **mapped files** of a fixed length (commit-log segments, consume-queue files), appended in
//!   place and synced by range;
//! - **slot files** (delayed messages' decisions): 8-byte slots loaded and stored in place, by
//!   any thread at any time (atomic operations on a mapping in the real implementation);
//! - **small files** (checkpoint, meta, consumer offsets), always replaced whole and atomically
//!   with [`write_atomic`].
//!
//! Three implementations: [`RealFs`] (the store's), [`SimFs`] (crash tests) and [`OverlayFs`]
//! (the operator's tools: a read-only view of a real directory that keeps changes in memory).
//!
//! This module never decides *what* to write; it only moves bytes and reports errors.

mod mmap;
mod overlay_fs;
mod real_fs;
mod sim_fs;

use std::fmt::Debug;
use std::io;
use std::path::{Path, PathBuf};

pub use overlay_fs::{Change, OverlayFs};
pub use real_fs::RealFs;
pub use sim_fs::SimFs;

/// A fixed-length file mapped for appending, shared by one writer and many readers.
///
/// The file is split at the *readable boundary*: bytes below it may be read and are never
/// written again (except through [`MappedFile::reset_tail`], which needs exclusive access);
/// bytes at or beyond it may be written and are never read. Implementations enforce this split
/// so that safe callers cannot race a reader against a writer on the same bytes.
pub trait MappedFile: Send + Sync + Debug {
    /// Length of the file in bytes (fixed while open).
    fn len_bytes(&self) -> u64;

    /// The readable boundary.
    fn readable_bytes(&self) -> u64;

    /// Copies `buf.len()` bytes at `offset` into `buf`. Fails with `InvalidInput` if the range
    /// reaches past the readable boundary.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()>;

    /// Copies `bytes` into the file at `offset`. Fails with `InvalidInput` if `offset` is below
    /// the readable boundary or the range reaches past the end of the file.
    fn write_at(&self, offset: u64, bytes: &[u8]) -> io::Result<()>;

    /// Moves the readable boundary up to `readable_bytes` (never down; never past the end).
    fn publish(&self, readable_bytes: u64);

    /// Makes bytes `[offset, offset + len)` durable. A failure must be treated as fatal by
    /// the caller (the store poisons itself).
    fn sync_range(&self, offset: u64, len: u64) -> io::Result<()>;

    /// Sets the readable boundary to `readable_bytes` (up or down). With `zero_tail`, also
    /// zeroes everything after it and syncs what it changed (pages that are already zero are
    /// left untouched), and returns the bytes of the 4 KiB pages it had to zero. Only recovery
    /// calls it, before the file is shared.
    fn reset_tail(&mut self, readable_bytes: u64, zero_tail: bool) -> io::Result<u64>;
}

/// A fixed-length file of 8-byte little-endian slots, each loaded and stored in place, by any
/// thread at any time (a slot is rewritten while others are read). Created with its blocks
/// reserved, never sparse: a full disk fails the creation with `ENOSPC`, never a later store
/// with `SIGBUS`. Slots never stored read as 0.
pub trait SlotFile: Send + Sync + Debug {
    /// Number of slots (fixed while open).
    fn slot_count(&self) -> u64;
    /// The value of slot `index` (`InvalidInput` past the end).
    fn load(&self, index: u64) -> io::Result<u64>;
    /// Stores `value` in slot `index` (`InvalidInput` past the end).
    fn store(&self, index: u64, value: u64) -> io::Result<()>;
    /// Makes every store so far durable. A failure must be treated as fatal by the caller.
    fn sync(&self) -> io::Result<()>;
}

/// How to open a mapped file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// Create a new zero-filled file of this many bytes (fails if it exists); readable boundary 0.
    /// Its blocks are written (allocated) and synced at creation, so later syncs of a few pages
    /// write only those pages; creation costs a write of the whole length.
    Create {
        /// File length in bytes.
        len_bytes: u64,
    },
    /// Like [`OpenMode::Create`], but the blocks are only reserved (`fallocate`), not written:
    /// creation is nearly instant, and a later sync also records the blocks as written. Never a
    /// sparse file: a store through a mapping into a hole on a full disk raises SIGBUS, while a
    /// reservation fails at creation with a clean `ENOSPC`.
    CreateAllocated {
        /// File length in bytes.
        len_bytes: u64,
    },
    /// Open an existing file at its current length; the whole file is readable.
    Existing,
}

/// File-system operations the store needs. Paths are absolute or relative to the process.
pub trait FileSystem: Send + Sync + Debug {
    /// Creates a directory and its parents.
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;

    /// Names of the entries of a directory (files and directories), unsorted.
    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>>;

    /// Whether a file or directory exists.
    fn exists(&self, path: &Path) -> bool;

    /// Length of a file in bytes.
    fn file_len(&self, path: &Path) -> io::Result<u64>;

    /// Opens a mapped file.
    fn open_mapped(&self, path: &Path, mode: OpenMode) -> io::Result<Box<dyn MappedFile>>;
    /// Opens the slot file at `path`, creating it with `len_bytes` (blocks reserved) if it is
    /// missing; an existing shorter file (a size change lost in a power loss) is extended with
    /// zeros. The new name is durable only after
    /// [`FileSystem::sync_dir`].
    fn open_slots(&self, path: &Path, len_bytes: u64) -> io::Result<Box<dyn SlotFile>>;

    /// Reads a whole small file.
    fn read_file(&self, path: &Path) -> io::Result<Vec<u8>>;

    /// Creates or truncates `path`, writes `bytes`, and syncs the file's data.
    fn write_file_synced(&self, path: &Path, bytes: &[u8]) -> io::Result<()>;

    /// Renames `from` to `to`, replacing `to`. Durable only after [`FileSystem::sync_dir`].
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;

    /// Removes a file. Durable only after [`FileSystem::sync_dir`].
    fn remove_file(&self, path: &Path) -> io::Result<()>;

    /// Makes the directory's entries (creates, renames, removes) durable.
    fn sync_dir(&self, path: &Path) -> io::Result<()>;

    /// Takes an exclusive lock on `path` (created if missing), held until the returned guard
    /// is dropped. Returns `Ok(None)` if another holder has it, in this process or another.
    fn try_lock(&self, path: &Path) -> io::Result<Option<Box<dyn LockGuard>>>;
}

/// Holds a lock taken by [`FileSystem::try_lock`] until dropped.
pub trait LockGuard: Send + Sync + Debug {}

/// Replaces `path` atomically: write a temporary sibling, sync it, rename it over `path`, sync
/// the directory. After a crash `path` holds either the old or the new bytes, never a mix.
pub fn write_atomic(fs: &dyn FileSystem, path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = temp_sibling(path);
    fs.write_file_synced(&tmp, bytes)?;
    fs.rename(&tmp, path)?;
    fs.sync_dir(parent_dir(path))
}

/// Creates a directory (and its parents) and makes each newly created one durable by syncing
/// the directory that holds it: an unsynced new directory may vanish in a power loss, with
/// every file in it.
pub fn create_dir_synced(fs: &dyn FileSystem, path: &Path) -> io::Result<()> {
    let missing: Vec<PathBuf> = path
        .ancestors()
        .filter(|a| !a.as_os_str().is_empty())
        .take_while(|a| !fs.exists(a))
        .map(Path::to_path_buf)
        .collect();
    fs.create_dir_all(path)?;
    for dir in missing.iter().rev() {
        fs.sync_dir(parent_dir(dir))?;
    }
    Ok(())
}

/// The temporary name [`write_atomic`] writes before renaming (`NAME.tmp`).
pub fn temp_sibling(path: &Path) -> PathBuf {
    let mut name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".tmp");
    path.with_file_name(name)
}

/// The directory holding `path` (`.` for a bare name).
pub fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}

/// Error for a range check that a caller got wrong (a bug, never a disk fault).
pub(crate) fn out_of_bounds(what: &str, offset: u64, len: u64, limit: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("{what} of {len} bytes at {offset} crosses boundary {limit}"),
    )
}
