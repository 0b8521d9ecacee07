//! Running workloads against a store, shared by the delivery, timer and compare benches: fresh
//! store directories, opening a store without its open-time disk work landing in a measurement,
//! puts that count and retry transient failures, and threads.

// Each bench includes this file as its own module and uses only part of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use delaystore::commit_log::COMMIT_LOG_DIR;
use delaystore::naming::offset_file_name;
use delaystore::{Message, Options, Store};

/// The directory a bench run keeps its stores in, created: `bench-{name}-{pid}` under `dir`
/// (the bench's `--dir`), else under `$DELAYSTORE_BENCH_DIR`, else under the crate's `target/`.
pub fn run_dir(dir: Option<&Path>, name: &str) -> Result<PathBuf, String> {
    let root = dir
        .map(Path::to_path_buf)
        .or_else(|| std::env::var_os("DELAYSTORE_BENCH_DIR").map(PathBuf::from))
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    let dir = root.join(format!("bench-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {dir:?}: {e}"))?;
    Ok(dir)
}

/// A fresh, empty store directory `name` under `root` (removed first if it exists; the store
/// creates it).
pub fn fresh_dir(root: &Path, name: &str) -> Result<PathBuf, String> {
    let dir = root.join(name);
    clear_dir(&dir)?;
    Ok(dir)
}

/// An empty directory at `dir` (removing what was there).
pub fn empty_dir(dir: &Path) -> Result<(), String> {
    clear_dir(dir)?;
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {dir:?}: {e}"))
}

/// Removes `dir` and everything under it, if it exists.
fn clear_dir(dir: &Path) -> Result<(), String> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(|e| format!("removing {dir:?}: {e}"))?;
    }
    Ok(())
}

/// Removes `dir` if it exists, warning (not failing) if that does not work.
pub fn remove_dir(dir: &Path) {
    if dir.exists() {
        if let Err(e) = std::fs::remove_dir_all(dir) {
            eprintln!("warning: removing {dir:?}: {e}");
        }
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

/// Opens a fresh store at `dir` with `options`, runs `body` on it, then closes the store and
/// removes `dir` (also when `body` failed; its error is returned).
pub fn with_store<T>(
    dir: &Path,
    options: Options,
    body: impl FnOnce(&Store) -> Result<T, String>,
) -> Result<T, String> {
    let store = open_store(dir, options)?;
    let result = body(&store);
    store
        .close()
        .map_err(|e| format!("closing the store: {e}"))?;
    remove_dir(dir);
    result
}

/// Opens a fresh store at `dir` with `options`, times `count` puts of `message` (its first 8
/// body bytes set to each put's number, little-endian), then closes and removes the store.
/// Returns the puts per second and the failures retried.
pub fn put_rate(
    dir: &Path,
    options: Options,
    mut message: Message,
    count: u64,
) -> Result<(f64, PutFailures), String> {
    with_store(dir, options, |store| {
        let mut failures = PutFailures::default();
        let start = Instant::now();
        for seq in 0..count {
            if let Some(number) = message.body.get_mut(..8) {
                number.copy_from_slice(&seq.to_le_bytes());
            }
            put_retrying(store, &message, &mut failures)?;
        }
        Ok((count as f64 / start.elapsed().as_secs_f64(), failures))
    })
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
