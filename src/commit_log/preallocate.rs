//! Creates the next segment off the append path: a background thread zero-fills and maps the
//! file the writer will roll into, so a roll only swaps a pointer.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender};
use parking_lot::{Condvar, Mutex};

use super::segment::Segment;
use crate::error::{Error, Result};
use crate::io::{FileSystem, OpenMode};
use crate::naming::offset_file_name;

/// Creates a segment file of `len_bytes` at `base_offset` and makes its directory entry durable.
pub fn create_segment(
    fs: &dyn FileSystem,
    dir: &Path,
    base_offset: u64,
    len_bytes: u64,
) -> Result<Segment> {
    let path = dir.join(offset_file_name(base_offset));
    let file = fs
        .open_mapped(&path, OpenMode::Create { len_bytes })
        .map_err(|e| Error::io(&path, e))?;
    fs.sync_dir(dir).map_err(|e| Error::io(dir, e))?;
    Ok(Segment {
        base_offset,
        path,
        file,
    })
}

/// A request: (base offset, length in bytes).
type Request = (u64, u64);

/// What the background thread is doing for the writer.
#[derive(Debug, Default)]
enum Slot {
    /// Nothing requested or prepared.
    #[default]
    Empty,
    /// Creating the segment at this base offset.
    InFlight(u64),
    /// Created (or failed to create) the segment at this base offset.
    Ready(u64, Result<Segment>),
}

#[derive(Debug, Default)]
struct Shared {
    slot: Mutex<Slot>,
    changed: Condvar,
}

/// The background segment creator.
#[derive(Debug)]
pub struct Preallocator {
    requests: Option<Sender<Request>>,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Preallocator {
    /// Starts the thread, with `prepared` (a segment made by an earlier run) ready to take.
    pub fn start(fs: Arc<dyn FileSystem>, dir: PathBuf, prepared: Option<Segment>) -> Result<Self> {
        let (tx, rx): (Sender<Request>, Receiver<Request>) = crossbeam_channel::bounded(1);
        let shared = Arc::new(Shared::default());
        if let Some(segment) = prepared {
            *shared.slot.lock() = Slot::Ready(segment.base_offset, Ok(segment));
        }
        let worker = shared.clone();
        let thread = std::thread::Builder::new()
            .name("delaystore-prealloc".into())
            .spawn(move || {
                for (base, len) in rx {
                    let segment = create_segment(fs.as_ref(), &dir, base, len);
                    *worker.slot.lock() = Slot::Ready(base, segment);
                    worker.changed.notify_all();
                }
            })
            .map_err(|e| Error::io("preallocator thread", e))?;
        Ok(Preallocator {
            requests: Some(tx),
            shared,
            thread: Some(thread),
        })
    }

    /// Asks for the segment at `base_offset` to be prepared, unless one is being prepared or
    /// waits unused.
    pub fn request(&self, base_offset: u64, len_bytes: u64) {
        let Some(tx) = &self.requests else { return };
        let mut slot = self.shared.slot.lock();
        if !matches!(*slot, Slot::Empty) {
            return;
        }
        if tx.try_send((base_offset, len_bytes)).is_ok() {
            *slot = Slot::InFlight(base_offset);
        }
    }

    /// Takes the segment prepared at `base_offset`, waiting if it is being created right now
    /// (creating it inline as well would race on the same file name). `None` if no segment of
    /// that base and size was asked for (the slot is then left as it was); a failed preparation
    /// is returned as its error.
    pub fn take(&self, base_offset: u64, len_bytes: u64) -> Option<Result<Segment>> {
        let mut slot = self.shared.slot.lock();
        while matches!(*slot, Slot::InFlight(base) if base == base_offset) {
            self.shared.changed.wait(&mut slot);
        }
        match std::mem::take(&mut *slot) {
            Slot::Ready(base, Ok(segment))
                if base == base_offset && segment.len_bytes() == len_bytes =>
            {
                Some(Ok(segment))
            }
            Slot::Ready(base, Err(err)) if base == base_offset => Some(Err(err)),
            other => {
                *slot = other;
                None
            }
        }
    }

    /// Stops the thread, waiting for a creation in flight.
    pub fn stop(&mut self) {
        self.requests = None;
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                eprintln!("delaystore: preallocator thread panicked");
            }
        }
    }
}

impl Drop for Preallocator {
    fn drop(&mut self) {
        self.stop();
    }
}
