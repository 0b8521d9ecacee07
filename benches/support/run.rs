//! Running workloads against a store, shared by the delivery and timer benches: fresh store
//! directories, opening a store without its open-time disk work landing in a measurement,
//! puts that count and retry transient failures, threads, and wall-clock time.

// Each bench includes this file as its own module and uses only part of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use delaystore::commit_log::COMMIT_LOG_DIR;
use delaystore::naming::offset_file_name;
use delaystore::{Message, Options, Store};

/// Wall-clock time in microseconds since the epoch.
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Milliseconds from `due_ms` to now, with microsecond resolution.
pub fn ms_since(due_ms: u64) -> f64 {
    now_us() as f64 / 1000.0 - due_ms as f64
}

pub fn sleep_until(at: Instant) {
    let now = Instant::now();
    if at > now {
        std::thread::sleep(at - now);
    }
}

/// A fresh, empty store directory `name` under `root` (removed first if it exists).
pub fn fresh_dir(root: &Path, name: &str) -> Result<PathBuf, String> {
    let dir = root.join(name);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(|e| format!("removing {dir:?}: {e}"))?;
    }
    Ok(dir)
}

pub fn remove_dir(dir: &Path) {
    if let Err(e) = std::fs::remove_dir_all(dir) {
        eprintln!("warning: removing {dir:?}: {e}");
    }
}

/// Opens a store and waits for its open-time disk work (see [`settle_after_open`]).
pub fn open_store(dir: &Path, options: Options) -> Result<Store, String> {
    let segment_bytes = options.segment_bytes;
    let store = Store::open(dir, options).map_err(|e| format!("opening {dir:?}: {e}"))?;
    settle_after_open(dir, segment_bytes)?;
    Ok(store)
}

/// Waits until the background preallocator has created, zero-filled and synced the second
/// segment, which it starts right after `Store::open`, so that this open-time disk work does
/// not land inside a measurement. Later segments are prepared while the workload runs.
pub fn settle_after_open(store_dir: &Path, segment_bytes: u64) -> Result<(), String> {
    let path = store_dir
        .join(COMMIT_LOG_DIR)
        .join(offset_file_name(segment_bytes));
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        match std::fs::metadata(&path) {
            Ok(meta) if meta.len() == segment_bytes => break,
            _ if Instant::now() > deadline => {
                return Err(format!("second segment {path:?} not prepared within 120 s"));
            }
            _ => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    std::fs::File::open(&path)
        .and_then(|f| f.sync_all())
        .map_err(|e| format!("syncing {path:?}: {e}"))?;
    std::thread::sleep(Duration::from_millis(300));
    Ok(())
}

/// Closes a store shared with threads that have all been joined.
pub fn close_shared(store: Arc<Store>) -> Result<(), String> {
    match Arc::into_inner(store) {
        Some(store) => store.close().map_err(|e| format!("closing the store: {e}")),
        None => Err("the store is still shared at close".to_owned()),
    }
}

/// Put failures retried by [`put_retrying`].
#[derive(Debug, Default)]
pub struct PutFailures {
    pub count: u64,
    pub first: Option<String>,
}

impl PutFailures {
    /// Reports the failures of `who` in `workload` on stderr, if any.
    pub fn report(&self, workload: &str, who: &str) {
        if let Some(first) = &self.first {
            eprintln!(
                "  {workload}: {} {who} puts failed (retried); first: {first}",
                self.count
            );
        }
    }
}

/// Puts `message`, retrying a failed put (after 1 ms) for up to 30 s, so that a transient store
/// error shows up as a counted failure instead of a lost message. Returns the message id.
pub fn put_retrying(
    store: &Store,
    message: &Message,
    failures: &mut PutFailures,
) -> Result<u64, String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match store.put(message) {
            Ok(receipt) => return Ok(receipt.id.0),
            Err(e) if Instant::now() < deadline => {
                failures.count += 1;
                failures.first.get_or_insert_with(|| e.to_string());
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => return Err(format!("put failed for 30 s: {e}")),
        }
    }
}

pub fn join<T>(handle: JoinHandle<T>, what: &str) -> Result<T, String> {
    handle
        .join()
        .map_err(|_| format!("the {what} thread panicked"))
}

pub fn spawn<T: Send + 'static>(
    name: &str,
    body: impl FnOnce() -> T + Send + 'static,
) -> Result<JoinHandle<T>, String> {
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(body)
        .map_err(|e| format!("spawning {name}: {e}"))
}
