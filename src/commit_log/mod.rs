//! The commit log: every record lands here first, appended to memory-mapped segments.
//!
//! Owns the segments, the append position, and the two frontiers every other component reads:
//! `written_end` (records below are complete in the page cache) and `durable_end` (records
//! below are synced). It never interprets records beyond their framing: routing them into
//! consume queues is the dispatcher's job.

pub mod preallocate;
pub mod record;
pub mod segment;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::{Condvar, Mutex, RwLock};

use crate::error::{DecodeError, Error, Result};
use crate::io::{FileSystem, OpenMode};
use crate::naming::offset_file_name;
use crate::options::SegmentFill;
use crate::signal::Signal;
use preallocate::{create_segment, Preallocator, Prepared};
use record::{checked_bytes, decode_header, encode_filler, EncodedRecord, Placement, HEADER_BYTES};
use segment::Segment;

/// Directory of the segments inside the store directory.
pub const COMMIT_LOG_DIR: &str = "commitlog";

#[derive(Debug)]
struct WriterState {
    write_offset: u64,
    active: Arc<Segment>,
}

#[derive(Debug, Default)]
struct GroupCommit {
    syncing: bool,
}

/// Where an appended record landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// Its placement (log offset, queue offset, times).
    pub placement: Placement,
    /// Log offset just past it: the record is durable once `durable_end >= end_offset`.
    pub end_offset: u64,
}

/// The commit log.
#[derive(Debug)]
pub struct CommitLog {
    dir: PathBuf,
    fs: Arc<dyn FileSystem>,
    segment_bytes: u64,
    segments: RwLock<Vec<Arc<Segment>>>,
    writer: Mutex<WriterState>,
    written_end: AtomicU64,
    durable_end: AtomicU64,
    poisoned: AtomicBool,
    group: Mutex<GroupCommit>,
    group_done: Condvar,
    /// Held for the whole of every sync: syncs never overlap, so a sync that starts after a
    /// failed one sees the poison and cannot report the failed range as durable (after a
    /// failed fsync the kernel may have marked the pages clean, so a retry "succeeds").
    sync_lock: Mutex<()>,
    preallocator: Mutex<Preallocator>,
    /// Notified after every append and every sync.
    signal: Arc<Signal>,
}

/// A record boundary is `fits` if the record fills the rest of the segment exactly or leaves
/// room for at least a filler header; otherwise a filler pads the segment first.
fn fits(record_bytes: u64, remaining: u64) -> bool {
    record_bytes == remaining || record_bytes + HEADER_BYTES as u64 <= remaining
}

impl CommitLog {
    /// Builds the log from recovered segments (sorted, tail already cut at `end_offset`, every
    /// segment after the one holding `end_offset` removed; `prepared` is a zero-filled next
    /// segment kept from before, handed to the preallocator). Creates the first or next segment if
    /// `end_offset` is not inside an existing one. Everything below `end_offset` is durable.
    pub fn from_recovered(
        fs: Arc<dyn FileSystem>,
        dir: &Path,
        segments: Vec<Segment>,
        prepared: Option<Segment>,
        end_offset: u64,
        segment_bytes: u64,
        fill: SegmentFill,
    ) -> Result<Self> {
        let mut segments: Vec<Arc<Segment>> = segments.into_iter().map(Arc::new).collect();
        let active = match segments.last() {
            Some(last) if last.contains(end_offset) => last.clone(),
            _ => {
                let segment = Arc::new(create_segment(
                    fs.as_ref(),
                    dir,
                    end_offset,
                    OpenMode::CreateAllocated {
                        len_bytes: segment_bytes,
                    },
                )?);
                segments.push(segment.clone());
                segment
            }
        };
        let preallocator = Preallocator::start(fs.clone(), dir.to_path_buf(), prepared, fill)?;
        preallocator.request(active.end_offset(), segment_bytes);
        Ok(CommitLog {
            dir: dir.to_path_buf(),
            fs,
            segment_bytes,
            segments: RwLock::new(segments),
            writer: Mutex::new(WriterState {
                write_offset: end_offset,
                active,
            }),
            written_end: AtomicU64::new(end_offset),
            durable_end: AtomicU64::new(end_offset),
            poisoned: AtomicBool::new(false),
            group: Mutex::new(GroupCommit::default()),
            group_done: Condvar::new(),
            sync_lock: Mutex::new(()),
            preallocator: Mutex::new(preallocator),
            signal: Arc::new(Signal::new()),
        })
    }

    /// The signal notified after appends and syncs.
    pub fn signal(&self) -> &Arc<Signal> {
        &self.signal
    }

    /// Records below this offset are complete and readable.
    pub fn written_end(&self) -> u64 {
        self.written_end.load(Ordering::Acquire)
    }

    /// Records below this offset are durable.
    pub fn durable_end(&self) -> u64 {
        self.durable_end.load(Ordering::Acquire)
    }

    /// Offset of the first byte still stored.
    pub fn start_offset(&self) -> u64 {
        self.segments.read().first().map_or(0, |s| s.base_offset)
    }

    /// Whether a failed sync poisoned the log.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned.load(Ordering::Acquire)
    }

    /// Deletes the oldest `count` segments (never the one being written): they leave the
    /// segment list at once (readers holding one keep its mapping until they drop it), then
    /// their files are removed and the directory synced. Returns the new start offset.
    pub fn retire_oldest(&self, count: usize) -> Result<u64> {
        let retired: Vec<Arc<Segment>> = {
            let writer = self.writer.lock();
            let mut segments = self.segments.write();
            let active = segments
                .iter()
                .position(|s| s.base_offset == writer.active.base_offset)
                .unwrap_or(segments.len());
            let count = count.min(active);
            segments.drain(..count).collect()
        };
        for segment in &retired {
            self.fs
                .remove_file(&segment.path)
                .map_err(|e| Error::io(&segment.path, e))?;
        }
        if !retired.is_empty() {
            self.fs
                .sync_dir(&self.dir)
                .map_err(|e| Error::io(&self.dir, e))?;
        }
        Ok(self.start_offset())
    }

    /// Base offset of the segment holding `log_offset`, if it is still stored.
    pub fn segment_base_for(&self, log_offset: u64) -> Option<u64> {
        self.segment_for(log_offset).map(|s| s.base_offset)
    }

    /// Snapshot of the segments.
    pub fn segments(&self) -> Vec<Arc<Segment>> {
        self.segments.read().clone()
    }

    /// Appends a record. `place` is called under the append lock with the record's log offset
    /// and returns its placement (queue offset and times); a failure there appends nothing.
    pub fn append(
        &self,
        record: &mut EncodedRecord,
        now_ms: u64,
        place: impl FnOnce(u64) -> Result<Placement>,
    ) -> Result<Appended> {
        if self.is_poisoned() {
            return Err(Error::Poisoned);
        }
        let len = record.len_bytes();
        let mut writer = self.writer.lock();
        let mut pos = writer.write_offset - writer.active.base_offset;
        let remaining = writer.active.len_bytes() - pos;
        if !fits(len, remaining) {
            self.roll(&mut writer, now_ms)?;
            pos = 0;
        }
        let placement = place(writer.write_offset)?;
        let bytes = record.seal(placement);
        let active = &writer.active;
        active
            .file
            .write_at(pos, bytes)
            .map_err(|e| Error::io(&active.path, e))?;
        failpoint!("log.after_write");
        active.file.publish(pos + len);
        writer.write_offset += len;
        let end_offset = writer.write_offset;
        self.written_end.store(end_offset, Ordering::Release);
        drop(writer);
        self.signal.notify();
        Ok(Appended {
            placement,
            end_offset,
        })
    }

    /// Pads the active segment with a filler and switches to the next segment.
    fn roll(&self, writer: &mut WriterState, now_ms: u64) -> Result<()> {
        let active = writer.active.clone();
        let pos = writer.write_offset - active.base_offset;
        let remaining = active.len_bytes() - pos;
        if remaining > 0 {
            let total = u32::try_from(remaining).map_err(|_| Error::Corruption {
                file: active.path.clone(),
                offset: pos,
                kind: DecodeError::BadLength { length: remaining },
            })?;
            let filler = encode_filler(writer.write_offset, total, now_ms);
            active
                .file
                .write_at(pos, &filler)
                .map_err(|e| Error::io(&active.path, e))?;
            active.file.publish(active.len_bytes());
        }
        // The filler is in place: if creating the next segment fails, a retry starts here
        // with nothing left to pad.
        let base = active.end_offset();
        writer.write_offset = base;
        self.written_end.store(base, Ordering::Release);
        failpoint!("log.roll.after_filler");
        let next = match self.next_segment(base) {
            Ok(next) => next,
            Err(err) => {
                // Creating a file that fails removes it; one left under its final name had
                // its directory sync fail (or failed after it). A retry cannot create it
                // again, and the directory's state is unknown after a failed sync: poison,
                // as for any failed sync of the log (recovery reopens such an empty segment).
                if self.fs.exists(&self.dir.join(offset_file_name(base))) {
                    self.poison();
                    eprintln!("delaystore: segment roll at {base} failed, log poisoned: {err}");
                }
                return Err(err);
            }
        };
        let next = Arc::new(next);
        self.segments.write().push(next.clone());
        self.preallocator
            .lock()
            .request(next.end_offset(), self.segment_bytes);
        writer.active = next;
        Ok(())
    }

    /// The segment that starts at `base`: the preallocated one, or one created inline.
    fn next_segment(&self, base: u64) -> Result<Segment> {
        let preallocator = self.preallocator.lock();
        let next = match preallocator.take(base, self.segment_bytes) {
            Prepared::Ready(segment) => segment?,
            // Not ready: do not hold the append lock while the disk zero-fills; reserving the
            // blocks is nearly instant.
            prepared => {
                let mode = OpenMode::CreateAllocated {
                    len_bytes: self.segment_bytes,
                };
                match create_segment(self.fs.as_ref(), &self.dir, base, mode) {
                    // The disk may be full only of the segment just abandoned: once the
                    // preallocator has removed it, one retry decides.
                    Err(Error::DiskFull { .. }) if matches!(prepared, Prepared::Abandoned) => {
                        preallocator.wait_discarded();
                        create_segment(self.fs.as_ref(), &self.dir, base, mode)?
                    }
                    made => made?,
                }
            }
        };
        drop(preallocator);
        failpoint!("log.roll.after_create");
        Ok(next)
    }

    /// The segment holding `log_offset`.
    pub fn segment_for(&self, log_offset: u64) -> Option<Arc<Segment>> {
        let segments = self.segments.read();
        let at = segments.partition_point(|s| s.base_offset <= log_offset);
        let segment = segments.get(at.checked_sub(1)?)?;
        segment.contains(log_offset).then(|| segment.clone())
    }

    /// A corruption error positioned at a log offset (file and in-file offset when known).
    pub fn corruption(&self, log_offset: u64, kind: DecodeError) -> Error {
        match self.segment_for(log_offset) {
            Some(segment) => Error::Corruption {
                file: segment.path.clone(),
                offset: log_offset - segment.base_offset,
                kind,
            },
            None => Error::Corruption {
                file: self.dir.clone(),
                offset: log_offset,
                kind,
            },
        }
    }

    /// Copies `buf.len()` bytes at `log_offset`, which must lie inside one segment and below the
    /// written end.
    pub fn read_at(&self, log_offset: u64, buf: &mut [u8]) -> Result<()> {
        let segment = self.segment_for(log_offset).ok_or_else(|| {
            self.corruption(
                log_offset,
                DecodeError::Truncated {
                    needed: buf.len() as u64,
                    available: 0,
                },
            )
        })?;
        segment
            .file
            .read_at(log_offset - segment.base_offset, buf)
            .map_err(|e| Error::io(&segment.path, e))
    }

    /// Reads the checked bytes of the record at `log_offset` (the whole record for a message,
    /// the header for a filler), after checking its header. The CRC is checked by the caller's
    /// decode ([`record::decode_record`]).
    pub fn read_record(&self, log_offset: u64) -> Result<Vec<u8>> {
        let mut header = [0u8; HEADER_BYTES];
        self.read_at(log_offset, &mut header)?;
        let decoded =
            decode_header(&header, log_offset).map_err(|kind| self.corruption(log_offset, kind))?;
        let len = checked_bytes(&decoded);
        let mut buf = vec![0u8; usize::try_from(len).unwrap_or(usize::MAX)];
        self.read_at(log_offset, &mut buf)?;
        Ok(buf)
    }

    /// Makes every record below `target` durable. Safe to call from several threads (syncs run
    /// one at a time); a failure poisons the log for good.
    pub fn sync_to(&self, target: u64) -> Result<()> {
        let _one_at_a_time = self.sync_lock.lock();
        if self.is_poisoned() {
            return Err(Error::Poisoned);
        }
        let from = self.durable_end();
        if from >= target {
            return Ok(());
        }
        failpoint!("log.before_sync");
        let segments = self.segments();
        for segment in segments.iter() {
            let lo = from.max(segment.base_offset);
            let hi = target.min(segment.end_offset());
            if lo >= hi {
                continue;
            }
            if let Err(err) = segment.file.sync_range(lo - segment.base_offset, hi - lo) {
                self.poisoned.store(true, Ordering::Release);
                self.signal.notify();
                return Err(Error::io(&segment.path, err));
            }
        }
        failpoint!("log.after_sync");
        self.durable_end.fetch_max(target, Ordering::AcqRel);
        self.signal.notify();
        Ok(())
    }

    /// Group commit: returns once everything below `target` is durable. The first caller to
    /// arrive syncs all that is written at that moment; callers arriving during its sync wait
    /// and are covered by it or by the next one.
    pub fn wait_durable(&self, target: u64) -> Result<()> {
        loop {
            if self.durable_end() >= target {
                return Ok(());
            }
            if self.is_poisoned() {
                return Err(Error::Poisoned);
            }
            let mut group = self.group.lock();
            if self.durable_end() >= target {
                return Ok(());
            }
            if group.syncing {
                self.group_done.wait(&mut group);
                continue;
            }
            group.syncing = true;
            drop(group);
            let result = self.sync_to(self.written_end());
            self.group.lock().syncing = false;
            self.group_done.notify_all();
            result?;
        }
    }

    /// Marks the log poisoned: a sync elsewhere (a consume queue) failed.
    pub fn poison(&self) {
        self.poisoned.store(true, Ordering::Release);
        self.signal.notify();
    }

    /// Stops the background segment creator.
    pub fn stop(&self) {
        self.preallocator.lock().stop();
    }
}
