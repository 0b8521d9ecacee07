//! The one room where `unsafe` lives: a shared, writable memory map of a fixed-length file.
//!
//! Soundness rests on three rules, argued in full in `docs/safety.md`:
//! 1. **Never past the end.** The mapping covers exactly the file's length when mapped; the
//!    file is never shrunk while mapped (segments are removed whole, after unmapping), so no
//!    access can touch a page beyond the end of the file (which would raise SIGBUS).
//! 2. **Writers and readers never share bytes.** Bytes below the readable boundary are only
//!    read; bytes at or beyond it are only written, by one writer at a time (the `writer`
//!    mutex). The boundary only moves up, under the writer mutex, with release ordering, after
//!    the bytes below it were written; readers load it with acquire ordering before reading.
//! 3. **No outside writers.** The store directory is held under an exclusive lock, so no other
//!    cooperating process maps or truncates these files. A non-cooperating process that does
//!    is outside the model (as for every memory-mapped database).
#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};

use memmap2::{MmapOptions, MmapRaw};
use parking_lot::Mutex;

use super::{out_of_bounds, MappedFile, SlotFile};

/// How a page is checked for zeros before `reset_tail` dirties it.
const PAGE_BYTES: usize = 4096;

/// A memory-mapped file implementing [`MappedFile`].
#[derive(Debug)]
pub(crate) struct MmapFile {
    map: MmapRaw,
    len_bytes: u64,
    readable_bytes: AtomicU64,
    /// Serialises writers and moves of the readable boundary (rule 2).
    writer: Mutex<()>,
}

impl MmapFile {
    /// Maps the whole of `file`, whose current length is `len_bytes`, with the readable boundary
    /// at `readable_bytes`. `populate` pre-faults the pages (done off the append path).
    pub(crate) fn map(
        file: File,
        len_bytes: u64,
        readable_bytes: u64,
        populate: bool,
    ) -> io::Result<Self> {
        let actual = file.metadata()?.len();
        if actual != len_bytes || readable_bytes > len_bytes {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("map of {len_bytes} bytes over a file of {actual} bytes"),
            ));
        }
        let len = usize::try_from(len_bytes)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "file too large to map"))?;
        let mut options = MmapOptions::new();
        options.len(len);
        if populate {
            options.populate();
        }
        // Rule 1: the mapping is exactly the file's current length, checked just above.
        let map = options.map_raw(&file)?;
        Ok(MmapFile {
            map,
            len_bytes,
            readable_bytes: AtomicU64::new(readable_bytes),
            writer: Mutex::new(()),
        })
    }

    /// Byte index of `offset` after checking `[offset, offset + len) <= limit`.
    fn checked_start(&self, what: &str, offset: u64, len: usize, limit: u64) -> io::Result<usize> {
        let len = len as u64;
        match offset.checked_add(len) {
            Some(end) if end <= limit && limit <= self.len_bytes => {
                usize::try_from(offset).map_err(|_| out_of_bounds(what, offset, len, limit))
            }
            _ => Err(out_of_bounds(what, offset, len, limit)),
        }
    }
}

impl MappedFile for MmapFile {
    fn len_bytes(&self) -> u64 {
        self.len_bytes
    }

    fn readable_bytes(&self) -> u64 {
        self.readable_bytes.load(Ordering::Acquire)
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let limit = self.readable_bytes.load(Ordering::Acquire);
        let start = self.checked_start("read", offset, buf.len(), limit)?;
        // SAFETY: `start + buf.len() <= readable_bytes <= len_bytes`, the mapped length, so the
        // source lies inside the mapping (rule 1). Those bytes are below the readable boundary,
        // which we loaded with acquire ordering: their writes happened before and no writer
        // touches them any more (rule 2). `buf` is a distinct exclusive borrow, so the ranges
        // cannot overlap.
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.map.as_ptr().add(start),
                buf.as_mut_ptr(),
                buf.len(),
            );
        }
        Ok(())
    }

    fn write_at(&self, offset: u64, bytes: &[u8]) -> io::Result<()> {
        let _writer = self.writer.lock();
        let readable = self.readable_bytes.load(Ordering::Acquire);
        if offset < readable {
            return Err(out_of_bounds("write below readable", offset, 0, readable));
        }
        let start = self.checked_start("write", offset, bytes.len(), self.len_bytes)?;
        // SAFETY: the range lies inside the mapping (checked against `len_bytes`, rule 1). It is
        // at or beyond the readable boundary, which cannot move while we hold `writer`, so no
        // reader reads it and no other writer writes it concurrently (rule 2). `bytes` cannot alias
        // the mapping: no API of this module hands out a reference into it.
        unsafe {
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                self.map.as_mut_ptr().add(start),
                bytes.len(),
            );
        }
        Ok(())
    }

    fn publish(&self, readable_bytes: u64) {
        let _writer = self.writer.lock();
        let capped = readable_bytes.min(self.len_bytes);
        self.readable_bytes.fetch_max(capped, Ordering::Release);
    }

    fn sync_range(&self, offset: u64, len: u64) -> io::Result<()> {
        failpoint!("fs.sync_range");
        if len == 0 {
            return Ok(());
        }
        let start = self.checked_start("sync", offset, 0, self.len_bytes)?;
        let end = offset.saturating_add(len).min(self.len_bytes);
        let len = usize::try_from(end - offset)
            .map_err(|_| out_of_bounds("sync", offset, end - offset, self.len_bytes))?;
        // msync(MS_SYNC) over the touched pages; memmap2 aligns the start down to a page.
        self.map.flush_range(start, len)
    }

    fn reset_tail(&mut self, readable_bytes: u64, zero_tail: bool) -> io::Result<u64> {
        let readable = readable_bytes.min(self.len_bytes);
        *self.readable_bytes.get_mut() = readable;
        if !zero_tail {
            return Ok(0);
        }
        let start = usize::try_from(readable)
            .map_err(|_| out_of_bounds("reset", readable, 0, self.len_bytes))?;
        let len = usize::try_from(self.len_bytes)
            .map_err(|_| out_of_bounds("reset", readable, 0, self.len_bytes))?;
        let base = self.map.as_mut_ptr();
        let mut at = start;
        let mut dirty_from: Option<usize> = None;
        let mut zeroed_bytes = 0u64;
        while at < len {
            let page_end = ((at / PAGE_BYTES) + 1) * PAGE_BYTES;
            let chunk = page_end.min(len) - at;
            // SAFETY: `&mut self` proves no reader or writer holds this file (rule 2), and
            // `at + chunk <= len`, the mapped length (rule 1).
            let bytes = unsafe { std::slice::from_raw_parts_mut(base.add(at), chunk) };
            if bytes.iter().any(|&b| b != 0) {
                bytes.fill(0);
                dirty_from.get_or_insert(at);
                zeroed_bytes += chunk as u64;
            }
            at += chunk;
        }
        if let Some(from) = dirty_from {
            self.map.flush_range(from, len - from)?;
        }
        Ok(zeroed_bytes)
    }
}

/// A memory-mapped file of 8-byte slots implementing [`SlotFile`]: any thread may load or
/// store any slot at any time, because every access is an atomic operation on an aligned
/// `u64` (rule 2 does not apply to slot files; see `docs/safety.md`, "Slot files").
#[derive(Debug)]
pub(crate) struct MmapSlots {
    map: MmapRaw,
    slot_count: u64,
}

impl MmapSlots {
    /// Maps the whole of `file`, whose length is `len_bytes`, a multiple of 8.
    pub(crate) fn map(file: &File, len_bytes: u64) -> io::Result<Self> {
        let actual = file.metadata()?.len();
        if actual != len_bytes || !len_bytes.is_multiple_of(8) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("slot map of {len_bytes} bytes over a file of {actual} bytes"),
            ));
        }
        let len = usize::try_from(len_bytes)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "file too large to map"))?;
        // Rule 1: the mapping is exactly the file's current length, checked just above.
        let map = MmapOptions::new().len(len).map_raw(file)?;
        Ok(MmapSlots {
            map,
            slot_count: len_bytes / 8,
        })
    }

    /// The slot `index` as an atomic, or an error past the end.
    fn slot(&self, index: u64) -> io::Result<&AtomicU64> {
        if index >= self.slot_count {
            return Err(out_of_bounds("slot", index, 8, self.slot_count));
        }
        let at = usize::try_from(index * 8)
            .map_err(|_| out_of_bounds("slot", index, 8, self.slot_count))?;
        // SAFETY: `at + 8 <= slot_count * 8`, the mapped length (rule 1), and the mapping
        // starts on a page boundary, so the address is 8-aligned as `AtomicU64` requires. The
        // mapping lives as long as `self`, which bounds the returned reference. Every access to
        // slot bytes goes through such atomics (this type hands out nothing else), so
        // concurrent loads and stores from several threads are data-race free; no other
        // cooperating process maps the file (rule 3).
        Ok(unsafe { &*self.map.as_ptr().add(at).cast::<AtomicU64>() })
    }
}

impl SlotFile for MmapSlots {
    fn slot_count(&self) -> u64 {
        self.slot_count
    }

    fn load(&self, index: u64) -> io::Result<u64> {
        Ok(u64::from_le(self.slot(index)?.load(Ordering::Acquire)))
    }

    fn store(&self, index: u64, value: u64) -> io::Result<()> {
        self.slot(index)?.store(value.to_le(), Ordering::Release);
        Ok(())
    }

    fn sync(&self) -> io::Result<()> {
        self.map.flush()
    }
}
