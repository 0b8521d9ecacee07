//! The operator's read-only view of a store directory: what is on disk, whether it is sound,
//! and what recovery would do to it.
//!
//! Everything here reads through a [`crate::io::FileSystem`] and writes nothing. The command
//! line uses an [`crate::io::OverlayFs`], which reads real files with `pread` (no SIGBUS on a
//! file cut short) and refuses to run while a live store holds the directory's lock
//! ([`probe_lock`]). One concept per file:
//!
//! - [`files`]: the survey of the directory (segments, queue files, small files, strangers);
//! - [`log_scan`]: a sequential, chunked scan of every segment, record by record, that resumes
//!   after damage at the next valid record;
//! - [`queue_reader`]: buffered reading of one consume queue's entries;
//! - [`problem`]: a problem found, positioned by file and byte offset;
//! - [`verify`]: the whole-store check (`delaystore verify`);
//! - [`delay_state`]: whether a delayed message is pending, delivered, cancelled or discarded;
//! - [`delay_ledger`]: what `verify` keeps of every timed-queue entry and delayed message;
//! - [`dump`]: records selected by a filter (`delaystore dump`);
//! - [`overview`]: segments, queues, levels, consumers and disk usage (`delaystore inspect`);
//! - [`recovery_plan`]: recovery's own code run over a read-only view (`recover --dry-run`);
//! - [`replay`]: re-posting chosen messages with an idempotency key (`delaystore replay`).

pub mod delay_ledger;
pub mod delay_state;
pub mod dump;
pub mod files;
pub mod log_scan;
pub mod overview;
pub mod problem;
pub mod queue_reader;
pub mod recovery_plan;
pub mod replay;
pub mod verify;

use std::path::Path;

use crate::error::{Error, Result};
use crate::io::{FileSystem, LockGuard};
use crate::store::LOCK_FILE;

/// Takes the directory's lock in the way `fs` allows (an [`crate::io::OverlayFs`] takes a
/// shared lock and never creates the file), or fails with [`Error::Locked`] when a live store
/// holds it. Hold the guard for as long as the files are read: no store can open meanwhile.
pub fn probe_lock(fs: &dyn FileSystem, dir: &Path) -> Result<Box<dyn LockGuard>> {
    let path = dir.join(LOCK_FILE);
    fs.try_lock(&path)
        .map_err(|e| Error::io(&path, e))?
        .ok_or_else(|| Error::Locked {
            dir: dir.to_path_buf(),
        })
}
