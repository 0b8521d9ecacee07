//! The real file system: `std::fs` for directories and small files, [`MmapFile`] for mapped
//! files.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

use super::mmap::MmapFile;
use super::mmap::MmapSlots;
use super::{FileSystem, LockGuard, MappedFile, OpenMode, SlotFile};

/// The operating system's file system.
#[derive(Debug, Default, Clone, Copy)]
pub struct RealFs;

#[derive(Debug)]
struct FileLock {
    _file: File,
}

impl LockGuard for FileLock {}

impl FileSystem for RealFs {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        fs::create_dir_all(path)
    }

    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(path)? {
            let entry = entry?;
            if let Ok(name) = entry.file_name().into_string() {
                names.push(name);
            }
        }
        Ok(names)
    }

    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }

    fn file_len(&self, path: &Path) -> io::Result<u64> {
        Ok(fs::metadata(path)?.len())
    }

    fn open_mapped(&self, path: &Path, mode: OpenMode) -> io::Result<Box<dyn MappedFile>> {
        let map = match mode {
            // Zero-filling runs in the background: pre-fault the pages there as well.
            OpenMode::Create { len_bytes } => create_mapped(path, len_bytes, zero_fill, true)?,
            // Reserving runs inline: faulting a whole segment in would stall the caller.
            OpenMode::CreateAllocated { len_bytes } => {
                create_mapped(path, len_bytes, reserve, false)?
            }
            OpenMode::Existing => {
                let file = OpenOptions::new().read(true).write(true).open(path)?;
                let len_bytes = file.metadata()?.len();
                MmapFile::map(file, len_bytes, len_bytes, false)?
            }
        };
        Ok(Box::new(map))
    }

    fn open_slots(&self, path: &Path, len_bytes: u64) -> io::Result<Box<dyn SlotFile>> {
        let mut file = open_or_create(path)?;
        let mut len = file.metadata()?.len();
        if len < len_bytes {
            // Reserved, not sparse: a store into a hole on a full disk would raise SIGBUS.
            reserve(&mut file, len_bytes)?;
            file.sync_all()?;
            len = len_bytes;
        }
        Ok(Box::new(MmapSlots::map(&file, len)?))
    }

    fn read_file(&self, path: &Path) -> io::Result<Vec<u8>> {
        fs::read(path)
    }

    fn write_file_synced(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        let mut file = File::create(path)?;
        file.write_all(bytes)?;
        file.sync_all()
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        File::open(path)?.sync_all()
    }

    fn try_lock(&self, path: &Path) -> io::Result<Option<Box<dyn LockGuard>>> {
        let file = open_or_create(path)?;
        match file.try_lock() {
            Ok(()) => Ok(Some(Box::new(FileLock { _file: file }))),
            Err(fs::TryLockError::WouldBlock) => Ok(None),
            Err(fs::TryLockError::Error(err)) => Err(err),
        }
    }
}

/// Opens `path` for reading and writing, creating it empty if missing (never truncating).
fn open_or_create(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
}

/// Creates `path` (which must not exist), gives it `len_bytes` of blocks with `allocate`, syncs
/// it and maps it (pre-faulting the pages with `populate`). On any failure (a full disk...) the
/// half-made file is removed, so a retry can create it again.
fn create_mapped(
    path: &Path,
    len_bytes: u64,
    allocate: fn(&mut File, u64) -> io::Result<()>,
    populate: bool,
) -> io::Result<MmapFile> {
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(path)?;
    let made = allocate(&mut file, len_bytes)
        .and_then(|()| file.sync_all())
        .and_then(|()| MmapFile::map(file, len_bytes, 0, populate));
    if made.is_err() {
        if let Err(err) = fs::remove_file(path) {
            eprintln!("delaystore: cannot remove half-created {path:?}: {err}");
        }
    }
    made
}

/// Reserves `len_bytes` of blocks without writing them (`fallocate`); where the file system
/// cannot, writes zeros instead. Never leaves a hole: see [`OpenMode::CreateAllocated`].
fn reserve(file: &mut File, len_bytes: u64) -> io::Result<()> {
    match rustix::fs::fallocate(&*file, rustix::fs::FallocateFlags::empty(), 0, len_bytes) {
        Ok(()) => Ok(()),
        Err(rustix::io::Errno::OPNOTSUPP) | Err(rustix::io::Errno::NOSYS) => {
            zero_fill(file, len_bytes)
        }
        Err(errno) => Err(errno.into()),
    }
}

/// Writes `len_bytes` of zeros in 4 KiB writes, so the blocks are allocated and a later sync of
/// a few mapped pages writes only those pages. Measured on this project's machines (kernel
/// 6.x, ext4): a sparse file costs ~50 us more per 4 KiB sync (a journal block for the
/// allocation), and zero-filling with large writes makes every msync write back 1 MiB (the page
/// cache keeps large folios and a store through the mapping dirties the whole folio).
fn zero_fill(file: &mut File, len_bytes: u64) -> io::Result<()> {
    const CHUNK_BYTES: usize = 4096;
    let zeros = [0u8; CHUNK_BYTES];
    let mut left = len_bytes;
    while left > 0 {
        let n = usize::try_from(left.min(CHUNK_BYTES as u64)).unwrap_or(CHUNK_BYTES);
        file.write_all(zeros.get(..n).unwrap_or(&zeros))?;
        left -= n as u64;
    }
    Ok(())
}
