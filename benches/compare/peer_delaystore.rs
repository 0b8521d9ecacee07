//! delaystore as a peer: the store itself is the delay queue, its delivery dispatcher the
//! mover, and the target topic the target queue.
//!
//! The store takes delay levels today (`Message::with_delay_level`, `Options::delay_levels`):
//! the adapter builds a one-level table from the workload's delay. When arbitrary delays land,
//! switching is the one line in [`delayed_message`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use delaystore::commit_log::COMMIT_LOG_DIR;
use delaystore::delay_levels::format_delay_levels;
use delaystore::naming::offset_file_name;
use delaystore::{Clock, Message, Options, Store, SyncMode};

use crate::peer::{Class, DelayQueue, OpenCtx, Visit};
use crate::timing::now_us;

const TARGET_TOPIC: &str = "target";
const BULK_TOPIC: &str = "bulk";
const PULL_BATCH: usize = 1024;

/// The message of one delayed put; the one line to change for arbitrary delays:
/// `Message::new(topic, body).with_delay_ms(delay_ms)`.
pub fn delayed_message(topic: &str, body: Vec<u8>, _delay_ms: u64) -> Message {
    Message::new(topic, body).with_delay_level(1)
}

/// Store options for a workload whose delayed messages all wait `delay_ms` (a one-level
/// table while the store takes delay levels).
pub fn store_options(
    class: Class,
    segment_bytes: u64,
    delay_ms: u64,
    clock: Arc<dyn Clock>,
) -> Options {
    Options {
        sync_mode: match class {
            Class::Async => SyncMode::Async,
            Class::Sync => SyncMode::Sync,
        },
        segment_bytes,
        delay_levels: Some(format_delay_levels(&[delay_ms])),
        clock,
        ..Options::default()
    }
}

pub struct DelaystorePeer {
    store: Store,
    delay_ms: u64,
}

impl DelaystorePeer {
    pub fn open(ctx: &OpenCtx) -> Result<DelaystorePeer, String> {
        let segment_bytes = ctx.segment_bytes;
        let options = store_options(ctx.class, segment_bytes, ctx.delay_ms, ctx.clock.clone());
        let store =
            Store::open(ctx.dir, options).map_err(|e| format!("opening delaystore: {e}"))?;
        settle_after_open(ctx.dir, segment_bytes)?;
        Ok(DelaystorePeer {
            store,
            delay_ms: ctx.delay_ms,
        })
    }

    /// Opens an existing store after a crash (recovery runs inside `Store::open`) and waits
    /// until every logged record is indexed, i.e. until delivery can see every pending entry.
    pub fn reopen(ctx: &OpenCtx) -> Result<DelaystorePeer, String> {
        let delay_ms = ctx.delay_ms;
        let options = Options {
            create_if_missing: false,
            ..store_options(ctx.class, ctx.segment_bytes, delay_ms, ctx.clock.clone())
        };
        let dir = ctx.dir;
        let store = Store::open(dir, options).map_err(|e| format!("reopening delaystore: {e}"))?;
        let deadline = Instant::now() + Duration::from_secs(600);
        loop {
            let stats = store.stats();
            if stats.dispatched_end_offset >= stats.written_end_offset {
                break;
            }
            if Instant::now() > deadline {
                return Err("dispatch did not catch up within 600 s after reopening".to_owned());
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        Ok(DelaystorePeer { store, delay_ms })
    }

    fn put_one(&self, seq: u64, delay_ms: u64, payload: &[u8]) -> Result<(), String> {
        if delay_ms != self.delay_ms {
            return Err(format!(
                "delay {delay_ms} ms asked of a store opened for {} ms",
                self.delay_ms
            ));
        }
        let mut body = payload.to_vec();
        if let Some(head) = body.get_mut(..8) {
            head.copy_from_slice(&seq.to_le_bytes());
        }
        self.store
            .put(&delayed_message(TARGET_TOPIC, body, delay_ms))
            .map(|_| ())
            .map_err(|e| format!("put: {e}"))
    }
}

impl DelayQueue for DelaystorePeer {
    fn put(&self, seq: u64, delay_ms: u64, payload: &[u8]) -> Result<(), String> {
        self.put_one(seq, delay_ms, payload)
    }

    fn put_batch(
        &self,
        first_seq: u64,
        count: u64,
        delay_ms: u64,
        payload: &[u8],
    ) -> Result<(), String> {
        (first_seq..first_seq + count).try_for_each(|seq| self.put_one(seq, delay_ms, payload))
    }

    fn append_bulk(&self, payload: &[u8]) -> Result<(), String> {
        self.store
            .put(&Message::new(BULK_TOPIC, payload.to_vec()))
            .map(|_| ())
            .map_err(|e| format!("bulk put: {e}"))
    }

    fn pending(&self) -> Result<u64, String> {
        Ok(self
            .store
            .stats()
            .pending_per_level
            .iter()
            .map(|(_, n)| n)
            .sum())
    }

    /// A consumer pulling the target topic: an entry counts as visible when the consumer has
    /// it in hand (later than the peers' commit time, which favours them).
    fn deliver(&self, expect: u64, timeout: Duration, visit: &mut Visit) -> Result<u64, String> {
        let queues = self
            .store
            .queue_count(TARGET_TOPIC)
            .map_err(|e| format!("queue count: {e}"))?;
        let mut next = vec![0u64; queues as usize];
        let mut received = 0u64;
        let start = Instant::now();
        while received < expect && start.elapsed() < timeout {
            let token = self.store.visibility_token();
            let mut got_any = false;
            for (queue, offset) in (0..queues).zip(next.iter_mut()) {
                let batch = self
                    .store
                    .pull(TARGET_TOPIC, queue, *offset, PULL_BATCH)
                    .map_err(|e| format!("pull: {e}"))?;
                let Some(last) = batch.last() else { continue };
                *offset = last.queue_offset + 1;
                got_any = true;
                let visible_ms = now_us() as f64 / 1000.0;
                for message in &batch {
                    let seq = message
                        .body
                        .get(..8)
                        .and_then(|b| b.try_into().ok())
                        .map_or(u64::MAX, u64::from_le_bytes);
                    visit(seq, message.due_ms.unwrap_or(0), visible_ms);
                    received += 1;
                }
            }
            if !got_any {
                self.store
                    .wait_for_entries(token, Duration::from_millis(100));
            }
        }
        Ok(received)
    }

    fn close(self: Box<Self>) -> Result<(), String> {
        self.store
            .close()
            .map_err(|e| format!("closing delaystore: {e}"))
    }
}

/// Waits until the background preallocator has prepared the second segment, which it starts
/// right after `Store::open`, so this open-time disk work stays out of the measurement (as in
/// benches/append.rs and benches/delivery.rs).
pub fn settle_after_open(store_dir: &std::path::Path, segment_bytes: u64) -> Result<(), String> {
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
            _ => std::thread::sleep(Duration::from_millis(10)),
        }
    }
    std::fs::File::open(&path)
        .and_then(|f| f.sync_all())
        .map_err(|e| format!("syncing {path:?}: {e}"))?;
    std::thread::sleep(Duration::from_millis(100));
    Ok(())
}
