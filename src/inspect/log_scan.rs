//! A sequential scan of the commit log, segment by segment, record by record, that reads in
//! large chunks (one `read_at` per [`CHUNK_BYTES`]) and applies every check recovery applies
//! to a record (`docs/format.md` §2.8, checks 1 to 12) with the same codecs.
//!
//! Unlike recovery, it does not stop at the first bad record: it reports the damage and
//! resumes at the next position in the same segment where a complete, valid record starts (its
//! magic, stored position and CRC all hold), so it can tell what lies after the damage. After
//! the end of a segment's data (a zero magic, as recovery decides), it checks that the rest of
//! the segment is zero and reports any data found there.
//!
//! Never panics and never maps a file: reading goes through [`MappedFile::read_at`] of the
//! file system it is given (an [`crate::io::OverlayFs`] reads with `pread`).

use crate::commit_log::record::{
    checked_bytes, decode_header, decode_record, verify_crc, RecordHeader, RecordKind, RecordView,
    HEADER_BYTES, RECORD_MAGIC,
};
use crate::error::{DecodeError, Error, Result};
use crate::io::{FileSystem, MappedFile, OpenMode};

use super::files::SegmentFile;

/// Bytes read per call: large enough that a call's cost is small next to the copy, small
/// enough that the chunk is still in the CPU cache when its records are checked (8 MiB chunks
/// ran at half the speed of 1 MiB ones on the development machine).
pub const CHUNK_BYTES: usize = 1 << 20;

/// Where a record (or damage) is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordAt {
    /// Index of the segment in the list scanned.
    pub segment: usize,
    /// Byte offset inside the segment file.
    pub file_offset: u64,
    /// Log offset (the segment's base offset plus `file_offset`).
    pub log_offset: u64,
}

/// What a scan reports, in log order. Every method has a default that ignores the event.
pub trait ScanVisitor {
    /// A record other than a filler (message, delivery, hop, cancel or discard) that passed
    /// every check (header, length, position, CRC, topic, key, origin reference).
    fn record(&mut self, _at: &RecordAt, _record: &RecordView<'_>) {}
    /// A filler record that passed its checks (CRC of its header, ends at the segment's end).
    fn filler(&mut self, _at: &RecordAt, _header: &RecordHeader) {}
    /// Bytes at `at` are not a valid record (`kind` is the failed check). The scan resumes at
    /// `resumed_at` (a file offset in the same segment) or, when `None`, no valid record
    /// follows in this segment.
    fn damage(&mut self, _at: &RecordAt, _kind: DecodeError, _resumed_at: Option<u64>) {}
    /// The data of the segment ends here (a zero magic), before the segment's end.
    fn end_of_data(&mut self, _at: &RecordAt) {}
    /// A non-zero byte at `at`, after the end of the segment's data. The scan resumes at
    /// `resumed_at` if a valid record follows.
    fn data_after_end(&mut self, _at: &RecordAt, _resumed_at: Option<u64>) {}
    /// `scanned_bytes` of the segments have been read so far.
    fn progress(&mut self, _scanned_bytes: u64) {}
    /// Whether the visitor has seen enough: the scan stops before the next record.
    fn done(&self) -> bool {
        false
    }
}

/// Totals of a scan.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScanTotals {
    /// Bytes of the segment files read.
    pub scanned_bytes: u64,
}

/// Scans `segments` (sorted), starting at `from_log_offset` (segments that end at or before it
/// are skipped; the scan starts inside the one holding it). Each segment is checked on its
/// own: its records must store its base offset plus their position. Fails only on an I/O
/// error (a file that cannot be opened or read, for example one cut short meanwhile).
pub fn scan_log(
    fs: &dyn FileSystem,
    segments: &[SegmentFile],
    from_log_offset: u64,
    visitor: &mut dyn ScanVisitor,
) -> Result<ScanTotals> {
    let mut totals = ScanTotals::default();
    let mut done_before = 0u64;
    for (index, segment) in segments.iter().enumerate() {
        if visitor.done() {
            break;
        }
        if segment.end_offset() <= from_log_offset {
            done_before += segment.len_bytes;
            continue;
        }
        let start = from_log_offset.saturating_sub(segment.base_offset);
        let file = fs
            .open_mapped(&segment.path, OpenMode::Existing)
            .map_err(|e| Error::io(&segment.path, e))?;
        let mut scan = SegmentScan {
            file: file.as_ref(),
            segment,
            index,
            window: Window::default(),
            done_before,
        };
        scan.run(start, visitor)
            .map_err(|e| Error::io(&segment.path, e))?;
        totals.scanned_bytes += segment.len_bytes.saturating_sub(start);
        done_before += segment.len_bytes;
        visitor.progress(done_before);
    }
    Ok(totals)
}

/// A buffer holding `[start, start + data.len())` of one file.
#[derive(Default)]
struct Window {
    start: u64,
    data: Vec<u8>,
}

impl Window {
    /// Bytes `[at, at + len)` of `file` (whose length is `file_len`), reading a chunk when
    /// they are not in the buffer.
    fn get(
        &mut self,
        file: &dyn MappedFile,
        file_len: u64,
        at: u64,
        len: usize,
    ) -> std::io::Result<&[u8]> {
        let end = at.saturating_add(len as u64);
        let inside = at >= self.start && end <= self.start + self.data.len() as u64;
        if !inside {
            let size = (CHUNK_BYTES as u64)
                .max(len as u64)
                .min(file_len.saturating_sub(at));
            if size < len as u64 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("read of {len} bytes at {at} past the end {file_len}"),
                ));
            }
            let size = usize::try_from(size).map_err(|_| std::io::ErrorKind::InvalidInput)?;
            self.data.resize(size, 0);
            self.start = at;
            file.read_at(at, &mut self.data)?;
        }
        let from =
            usize::try_from(at - self.start).map_err(|_| std::io::ErrorKind::InvalidInput)?;
        self.data
            .get(from..from + len)
            .ok_or_else(|| std::io::ErrorKind::InvalidInput.into())
    }
}

struct SegmentScan<'a> {
    file: &'a dyn MappedFile,
    segment: &'a SegmentFile,
    index: usize,
    window: Window,
    done_before: u64,
}

/// What a check of one position found.
enum Found {
    /// A valid record of this length.
    Valid(u64),
    /// Not a valid record.
    Invalid(DecodeError),
}

impl SegmentScan<'_> {
    fn len(&self) -> u64 {
        self.file.len_bytes()
    }

    fn at(&self, file_offset: u64) -> RecordAt {
        RecordAt {
            segment: self.index,
            file_offset,
            log_offset: self.segment.base_offset.saturating_add(file_offset),
        }
    }

    fn run(&mut self, start: u64, visitor: &mut dyn ScanVisitor) -> std::io::Result<()> {
        let mut pos = start;
        let mut last_progress = pos;
        while pos < self.len() && !visitor.done() {
            if pos - last_progress >= CHUNK_BYTES as u64 {
                visitor.progress(self.done_before + pos);
                last_progress = pos;
            }
            let remaining = self.len() - pos;
            let magic_is_zero = remaining < 4 || {
                let head = self.window.get(self.file, self.len(), pos, 4)?;
                head.iter().all(|&b| b == 0)
            };
            if magic_is_zero {
                // The end of this segment's data, as recovery decides (§2.8 check 2); the rest
                // must be zero.
                visitor.end_of_data(&self.at(pos));
                let Some(nonzero) = self.first_nonzero(pos)? else {
                    return Ok(());
                };
                let resumed = self.resync(nonzero)?;
                visitor.data_after_end(&self.at(nonzero), resumed);
                match resumed {
                    Some(next) => {
                        pos = next;
                        continue;
                    }
                    None => return Ok(()),
                }
            }
            match self.check(pos, Some(&mut *visitor))? {
                Found::Valid(total) => pos += total,
                Found::Invalid(kind) => {
                    let resumed = self.resync(pos + 1)?;
                    visitor.damage(&self.at(pos), kind, resumed);
                    match resumed {
                        Some(next) => pos = next,
                        None => return Ok(()),
                    }
                }
            }
        }
        Ok(())
    }

    /// Checks the record at `pos` (§2.8 checks 1 to 12) and, if valid and a visitor is given,
    /// reports it.
    fn check(&mut self, pos: u64, visitor: Option<&mut dyn ScanVisitor>) -> std::io::Result<Found> {
        let len = self.len();
        let remaining = len - pos;
        if remaining < HEADER_BYTES as u64 {
            return Ok(Found::Invalid(DecodeError::Truncated {
                needed: HEADER_BYTES as u64,
                available: remaining,
            }));
        }
        let log_offset = self.segment.base_offset.saturating_add(pos);
        let head = self.window.get(self.file, len, pos, HEADER_BYTES)?;
        let header = match decode_header(head, log_offset) {
            Ok(header) => header,
            Err(kind) => return Ok(Found::Invalid(kind)),
        };
        let total = u64::from(header.total_bytes);
        if total > remaining {
            return Ok(Found::Invalid(DecodeError::BadLength { length: total }));
        }
        let checked = usize::try_from(checked_bytes(&header)).unwrap_or(usize::MAX);
        let at = self.at(pos);
        let bytes = self.window.get(self.file, len, pos, checked)?;
        match header.kind {
            RecordKind::Filler => {
                if let Err(kind) = verify_crc(bytes, header.crc) {
                    return Ok(Found::Invalid(kind));
                }
                if pos + total != len {
                    return Ok(Found::Invalid(DecodeError::BadLength { length: total }));
                }
                if let Some(visitor) = visitor {
                    visitor.filler(&at, &header);
                }
            }
            RecordKind::Message
            | RecordKind::Delivery
            | RecordKind::Hop
            | RecordKind::Cancel
            | RecordKind::Discard => match decode_record(bytes, log_offset) {
                Ok(record) => {
                    if let Some(visitor) = visitor {
                        visitor.record(&at, &record);
                    }
                }
                Err(kind) => return Ok(Found::Invalid(kind)),
            },
        }
        Ok(Found::Valid(total))
    }

    /// The next position at or after `from` where a valid record starts, if any.
    fn resync(&mut self, from: u64) -> std::io::Result<Option<u64>> {
        let len = self.len();
        let magic = RECORD_MAGIC.to_le_bytes();
        let mut at = from;
        while at + HEADER_BYTES as u64 <= len {
            let size = usize::try_from((CHUNK_BYTES as u64).min(len - at)).unwrap_or(0);
            let chunk = self.window.get(self.file, len, at, size)?;
            let candidates: Vec<u64> = chunk
                .windows(magic.len())
                .enumerate()
                .filter(|(_, w)| *w == magic)
                .map(|(i, _)| at + i as u64)
                .collect();
            for candidate in candidates {
                if let Found::Valid(_) = self.check(candidate, None)? {
                    return Ok(Some(candidate));
                }
            }
            // Overlap by the magic's length, so a magic across two chunks is seen.
            at += (size as u64).saturating_sub(magic.len() as u64 - 1).max(1);
        }
        Ok(None)
    }

    /// The first non-zero byte at or after `from`.
    fn first_nonzero(&mut self, from: u64) -> std::io::Result<Option<u64>> {
        let len = self.len();
        let mut at = from;
        while at < len {
            let size = usize::try_from((CHUNK_BYTES as u64).min(len - at)).unwrap_or(0);
            let chunk = self.window.get(self.file, len, at, size)?;
            if let Some(i) = first_nonzero(chunk) {
                return Ok(Some(at + i as u64));
            }
            at += size as u64;
        }
        Ok(None)
    }
}

/// Index of the first non-zero byte. Tests 64-byte blocks with an OR that the compiler
/// vectorises, so checking a zero tail runs at memory speed.
pub fn first_nonzero(bytes: &[u8]) -> Option<usize> {
    const BLOCK: usize = 64;
    let mut base = 0;
    for block in bytes.chunks(BLOCK) {
        if block.iter().fold(0u8, |acc, &b| acc | b) != 0 {
            return block.iter().position(|&b| b != 0).map(|i| base + i);
        }
        base += block.len();
    }
    None
}
