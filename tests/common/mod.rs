//! Helpers shared by the integration tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use delaystore::{Options, Store, StoredMessage};

/// Options with small files so tests roll segments and queue files quickly.
pub fn small_options() -> Options {
    Options {
        segment_bytes: 64 * 1024,
        consume_queue_file_entries: 64,
        flush_interval_ms: 10,
        checkpoint_interval_ms: 10,
        ..Options::default()
    }
}

/// Opens a store with `options`, panicking on error.
pub fn open(dir: &Path, options: Options) -> Store {
    Store::open(dir, options).expect("open store")
}

/// Pulls every visible message of (topic, queue) from `from`, waiting briefly for dispatch.
pub fn pull_all(store: &Store, topic: &str, queue: u32, from: u64, expected: usize) -> Vec<StoredMessage> {
    let mut out: Vec<StoredMessage> = Vec::new();
    let mut next = from;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while out.len() < expected && std::time::Instant::now() < deadline {
        let batch = store
            .pull_wait(topic, queue, next, 1000, Duration::from_millis(50))
            .expect("pull");
        if let Some(last) = batch.last() {
            next = last.queue_offset + 1;
        }
        out.extend(batch);
    }
    out
}
