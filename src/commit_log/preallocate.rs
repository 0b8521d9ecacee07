//! Creates the next segment off the append path: a background thread zero-fills and maps the
//! file the writer will roll into, so a roll only swaps a pointer.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender};
use parking_lot::Mutex;

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

/// Result of one background creation.
type Prepared = (u64, Result<Segment>);

/// The background segment creator.
#[derive(Debug)]
pub struct Preallocator {
    requests: Option<Sender<Request>>,
    ready: Arc<Mutex<Option<Prepared>>>,
    thread: Option<JoinHandle<()>>,
}

impl Preallocator {
    /// Starts the thread.
    pub fn start(fs: Arc<dyn FileSystem>, dir: PathBuf) -> Result<Self> {
        let (tx, rx): (Sender<Request>, Receiver<Request>) = crossbeam_channel::bounded(1);
        let ready: Arc<Mutex<Option<Prepared>>> = Arc::new(Mutex::new(None));
        let slot = ready.clone();
        let thread = std::thread::Builder::new()
            .name("delaystore-prealloc".into())
            .spawn(move || {
                for (base, len) in rx {
                    let segment = create_segment(fs.as_ref(), &dir, base, len);
                    *slot.lock() = Some((base, segment));
                }
            })
            .map_err(|e| Error::io("preallocator thread", e))?;
        Ok(Preallocator {
            requests: Some(tx),
            ready,
            thread: Some(thread),
        })
    }

    /// Asks for the segment at `base_offset` to be prepared (no-op if a request is pending).
    pub fn request(&self, base_offset: u64, len_bytes: u64) {
        if let Some(tx) = &self.requests {
            // A full channel means a request is already in flight; the writer falls back to
            // creating inline if the prepared segment is not the one it needs.
            if tx.try_send((base_offset, len_bytes)).is_err() {}
        }
    }

    /// Takes the prepared segment if it is the one at `base_offset` and has the right size.
    /// A failed preparation is returned as its error.
    pub fn take(&self, base_offset: u64, len_bytes: u64) -> Option<Result<Segment>> {
        let mut slot = self.ready.lock();
        match slot.take() {
            Some((base, Ok(segment)))
                if base == base_offset && segment.len_bytes() == len_bytes =>
            {
                Some(Ok(segment))
            }
            Some((base, Err(err))) if base == base_offset => Some(Err(err)),
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
