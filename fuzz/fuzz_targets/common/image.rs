//! Helpers shared by the targets that open stores on a simulated file system.

use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use delaystore::consume_queue::QueueKey;
use delaystore::io::{FileSystem, SimFs};
use delaystore::topic::validate_topic;
use delaystore::{ManualClock, Options, Store, StoredMessage};

/// The store directory inside the simulated file system.
pub const STORE_DIR: &str = "/store";
/// Segment size of every image (the smallest the store accepts).
pub const SEGMENT_BYTES: u64 = 64 * 1024;
/// Entries per consume-queue file.
pub const QUEUE_FILE_ENTRIES: u64 = 64;
/// The delay-level table.
pub const DELAY_LEVELS: &str = "1s 5s 10s";
/// Most messages read from one queue, so a run stays short whatever the image holds.
const PULL_MAX_TOTAL: u64 = 4096;

/// Options for an image in `fs`, on `clock`: small files, and background flushes and
/// checkpoints that never tick (a run is far shorter than their intervals), so only open,
/// `flush` and `close` write the checkpoint.
pub fn options(fs: &SimFs, clock: &ManualClock) -> Options {
    Options {
        fs: Arc::new(fs.clone()),
        clock: Arc::new(clock.clone()),
        segment_bytes: SEGMENT_BYTES,
        consume_queue_file_entries: QUEUE_FILE_ENTRIES,
        flush_interval_ms: 60_000,
        checkpoint_interval_ms: 600_000,
        delay_levels: Some(DELAY_LEVELS.into()),
        default_queue_count: Some(2),
        ..Options::default()
    }
}

/// Every file under `dir`, sorted (directories are recursed into, not listed).
pub fn list_files(fs: &SimFs, dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(names) = fs.list_dir(&dir) else {
            continue;
        };
        for name in names {
            let path = dir.join(name);
            if fs.file_len(&path).is_ok() {
                out.push(path);
            } else {
                pending.push(path);
            }
        }
    }
    out.sort();
    out
}

/// Asserts that the store created no file outside its directory (a path that leaves it
/// through `..` counts as outside): every file is under it or was there before (`before`).
pub fn assert_contained(fs: &SimFs, before: &[PathBuf]) {
    for path in list_files(fs, Path::new("/")) {
        if before.contains(&path) {
            continue;
        }
        let escapes = path
            .components()
            .any(|c| matches!(c, Component::ParentDir | Component::CurDir));
        assert!(
            path.starts_with(STORE_DIR) && !escapes,
            "the store wrote {path:?}, outside its directory {STORE_DIR}"
        );
    }
}

/// Gives the delivery thread a moment (at most about 20 ms) to re-post the delayed messages
/// that are due at `now_ms`, so that a run exercises delivery whatever the thread timing.
/// (A message whose record is corrupt is skipped, not delivered, and keeps counting as due:
/// the wait then runs out.)
pub fn settle_deliveries(store: &Store, now_ms: u64) {
    for _ in 0..20 {
        let due = store.stats().next_due_ms.is_some_and(|due| due <= now_ms);
        if !due {
            return;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Pulls every topic queue the store lists, from its start until a pull returns nothing or
/// fails, handing each message to `seen` with the (topic, queue) it was pulled from. Also reads
/// the other read-only views (stats, queue ends, committed offsets, the recovery report).
pub fn pull_everything(store: &Store, mut seen: impl FnMut(&str, u32, &StoredMessage)) {
    let stats = store.stats();
    let _ = store.recovery_report().lost_anything();
    for consumer in &stats.consumers {
        let _ = store.committed_offset(&consumer.group, &consumer.topic, consumer.queue);
    }
    for (key, _) in &stats.queues {
        let QueueKey::Topic { topic, queue_id } = key else {
            continue;
        };
        assert!(
            validate_topic(topic).is_ok(),
            "the store has a queue for topic {topic:?}, which is not a valid name (its \
             directory may lie outside the store)"
        );
        let queue = *queue_id;
        let _ = store.queue_end_offset(topic, queue);
        let _ = store.queue_count(topic);
        let mut from = 0u64;
        let mut pulled = 0u64;
        while pulled < PULL_MAX_TOTAL {
            let batch = match store.pull(topic, queue, from, 64) {
                Ok(batch) if !batch.is_empty() => batch,
                _ => break,
            };
            for message in &batch {
                assert!(
                    message.queue_offset >= from,
                    "pull from {from} returned queue offset {}",
                    message.queue_offset
                );
                seen(topic, queue, message);
            }
            pulled += batch.len() as u64;
            from = batch
                .last()
                .map_or(from, |m| m.queue_offset.saturating_add(1));
        }
    }
    let _ = store.stats();
}
