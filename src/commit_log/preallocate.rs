//! Prepares the next segment off the append path: a background thread creates the file the
//! writer will roll into (zero-filled or with reserved blocks, see
//! [`crate::options::SegmentFill`]), under a temporary name, and renames it into place only if
//! the writer still wants it.
//!
//! A roll never waits for it: if the next segment is not ready, the writer abandons it and
//! creates a sparse segment inline (instant; its syncs also write block allocations), so a
//! producer faster than the disk can zero-fill sees no stall on the append lock.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender};
use parking_lot::{Condvar, Mutex};

use super::segment::Segment;
use crate::error::{Error, Result};
use crate::io::{FileSystem, OpenMode};
use crate::naming::offset_file_name;
use crate::options::SegmentFill;

/// Suffix of a segment being prepared; recovery removes such files.
pub const PREPARING_SUFFIX: &str = ".prealloc";

/// Creates a segment file at `base_offset` under its final name, with `mode`
/// ([`OpenMode::Create`] or [`OpenMode::CreateAllocated`]), and makes its directory entry durable.
pub fn create_segment(
    fs: &dyn FileSystem,
    dir: &Path,
    base_offset: u64,
    mode: OpenMode,
) -> Result<Segment> {
    let path = dir.join(offset_file_name(base_offset));
    let file = fs
        .open_mapped(&path, mode)
        .map_err(|e| Error::io(&path, e))?;
    fs.sync_dir(dir).map_err(|e| Error::io(dir, e))?;
    Ok(Segment {
        base_offset,
        path,
        file,
    })
}

/// What the writer finds when it wants the next segment.
#[derive(Debug)]
pub enum Prepared {
    /// The prepared segment, or the error its preparation met.
    Ready(Result<Segment>),
    /// It was still being prepared: abandoned (the thread removes it), create it inline.
    Abandoned,
    /// Never asked for (or already taken): create it inline.
    Absent,
}

/// A request: (base offset, length in bytes).
type Request = (u64, u64);

#[derive(Debug, Default)]
struct State {
    /// Base offset the thread is preparing or will prepare next.
    in_flight: Option<u64>,
    /// Base offsets the writer stopped waiting for: the thread discards them.
    abandoned: Vec<u64>,
    /// A prepared segment (or a failed preparation), waiting for the writer.
    ready: Option<(u64, Result<Segment>)>,
}

#[derive(Debug, Default)]
struct Shared {
    state: Mutex<State>,
    /// Notified when the thread has removed an abandoned segment.
    discarded: Condvar,
}

/// The background segment preparer.
#[derive(Debug)]
pub struct Preallocator {
    requests: Option<Sender<Request>>,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Preallocator {
    /// Starts the thread, with `prepared` (a segment made by an earlier run) ready to take;
    /// segments are prepared with `fill`.
    pub fn start(
        fs: Arc<dyn FileSystem>,
        dir: PathBuf,
        prepared: Option<Segment>,
        fill: SegmentFill,
    ) -> Result<Self> {
        let (tx, rx): (Sender<Request>, Receiver<Request>) = crossbeam_channel::bounded(2);
        let shared = Arc::new(Shared::default());
        if let Some(segment) = prepared {
            shared.state.lock().ready = Some((segment.base_offset, Ok(segment)));
        }
        let worker = shared.clone();
        let thread = std::thread::Builder::new()
            .name("delaystore-prealloc".into())
            .spawn(move || {
                for (base, len) in rx {
                    let mode = match fill {
                        SegmentFill::Zeroed => OpenMode::Create { len_bytes: len },
                        SegmentFill::Reserved => OpenMode::CreateAllocated { len_bytes: len },
                    };
                    prepare(fs.as_ref(), &dir, &worker, base, mode);
                }
            })
            .map_err(|e| Error::io("preallocator thread", e))?;
        Ok(Preallocator {
            requests: Some(tx),
            shared,
            thread: Some(thread),
        })
    }

    /// Asks for the segment at `base_offset` to be prepared, unless it already is or will be.
    pub fn request(&self, base_offset: u64, len_bytes: u64) {
        let Some(tx) = &self.requests else { return };
        let mut state = self.shared.state.lock();
        let ready = state.ready.as_ref().is_some_and(|(b, _)| *b == base_offset);
        if state.in_flight == Some(base_offset) || ready {
            return;
        }
        if tx.try_send((base_offset, len_bytes)).is_ok() {
            state.in_flight = Some(base_offset);
        }
    }

    /// Takes the segment prepared at `base_offset`, if it is ready (a failed preparation is
    /// its error). If it is still being prepared, it is abandoned (the thread discards it): the
    /// writer creates it inline rather than wait.
    pub fn take(&self, base_offset: u64, len_bytes: u64) -> Prepared {
        let mut state = self.shared.state.lock();
        let ready = state.ready.as_ref().is_some_and(|(b, r)| {
            *b == base_offset && r.as_ref().map_or(true, |s| s.len_bytes() == len_bytes)
        });
        if ready {
            if let Some((_, segment)) = state.ready.take() {
                return Prepared::Ready(segment);
            }
        }
        if state.in_flight == Some(base_offset) {
            state.in_flight = None;
            state.abandoned.push(base_offset);
            return Prepared::Abandoned;
        }
        Prepared::Absent
    }

    /// Waits until the thread has discarded every abandoned segment, releasing its space. A
    /// writer whose inline creation found the disk full after abandoning a preparation calls
    /// it before its one retry: the space may have been held by the very segment it abandoned.
    pub fn wait_discarded(&self) {
        let mut state = self.shared.state.lock();
        while !state.abandoned.is_empty() && self.thread.is_some() {
            self.shared.discarded.wait(&mut state);
        }
    }

    /// Stops the thread, waiting for a preparation in flight.
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

/// Zero-fills the segment at `base` under a temporary name, then, under the state lock (so the
/// writer cannot be creating the same name inline at that moment), renames it into place if
/// still wanted, or removes it if abandoned.
fn prepare(fs: &dyn FileSystem, dir: &Path, shared: &Shared, base: u64, mode: OpenMode) {
    let temp = dir.join(format!("{}{PREPARING_SUFFIX}", offset_file_name(base)));
    let made = fs.open_mapped(&temp, mode).map_err(|e| Error::io(&temp, e));
    let mut state = shared.state.lock();
    if state.in_flight == Some(base) {
        state.in_flight = None;
    }
    let abandoned = state.abandoned.iter().position(|b| *b == base);
    match (made, abandoned) {
        (Ok(file), None) => {
            let path = dir.join(offset_file_name(base));
            let placed = fs
                .rename(&temp, &path)
                .and_then(|()| fs.sync_dir(dir))
                .map_err(|e| Error::io(&path, e));
            state.ready = Some((
                base,
                placed.map(|()| Segment {
                    base_offset: base,
                    path,
                    file,
                }),
            ));
        }
        (Err(err), None) => state.ready = Some((base, Err(err))),
        (made, Some(index)) => {
            state.abandoned.swap_remove(index);
            drop(made);
            if fs.exists(&temp) {
                if let Err(err) = fs.remove_file(&temp) {
                    eprintln!("delaystore: cannot remove abandoned {temp:?}: {err}");
                }
            }
            shared.discarded.notify_all();
        }
    }
}
