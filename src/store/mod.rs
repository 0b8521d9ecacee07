//! The public store: opens (recovering), accepts puts, serves pulls, keeps consumer offsets,
//! and runs three background threads: the dispatcher (commit log -> consume queues), the
//! delivery dispatcher (due delayed messages -> their target queues) and the flusher
//! (time-bounded sync, consumer offsets, checkpoint); the commit log runs a fourth, the
//! segment preallocator.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};

use crate::checkpoint::Checkpoint;
use crate::clock::Clock;
use crate::commit_log::record::{
    decode_header, decode_properties, decode_record, encode_message, encode_properties,
    message_bytes, MessageFields, OriginRef, Placement, RecordKind, RecordView, HEADER_BYTES,
    KEY_BYTES_MAX,
};
use crate::commit_log::CommitLog;
use crate::consume_queue::{ConsumeQueues, QueueKey, QueueRef, TimedQueue};
use crate::consumer_offsets::ConsumerOffsets;
use crate::decisions::{Decision, Decisions};
use crate::delivery::run_delivery;
use crate::dispatch::{dispatch_target, DispatchProgress};
use crate::error::{DecodeError, Error, Result};
use crate::io::{FileSystem, LockGuard};
use crate::message::{CancelOutcome, Message, MessageId, PutReceipt, StoredMessage};
use crate::meta::StoreMeta;
use crate::options::{Durability, Options, SyncMode};
use crate::recovery::{recover, RecoveryConfig, RecoveryReport};
use crate::signal::Signal;
use crate::timer::{slot_for, slot_tier};
use crate::topic::{queue_for_key, validate_topic};

pub use due_outlook::DueOutlook;

mod delivery_host;
mod due_outlook;
mod retention;

/// Name of the lock file inside the store directory.
pub const LOCK_FILE: &str = "LOCK";

/// How long a background thread sleeps at most before re-checking for work or a stop.
const IDLE_WAIT: Duration = Duration::from_millis(100);

/// Next queue offset of every queue, and the last store time handed out. Locked only inside
/// the commit-log append lock, so offsets and times follow log order.
#[derive(Debug)]
struct Placements {
    topics: HashMap<String, Vec<u64>>,
    /// Next offset of each timed queue (index = [`TimedQueue::to_id`]).
    timed: Vec<u64>,
}

impl Placements {
    /// Takes the next offset of a topic queue, growing the table to `queue_count` queues.
    fn next_topic_offset(&mut self, topic: &str, queue: u32, queue_count: u32) -> Result<u64> {
        let next = match self.topics.get_mut(topic) {
            Some(next) => next,
            None => self.topics.entry(topic.to_owned()).or_default(),
        };
        if next.len() < queue_count as usize {
            next.resize(queue_count as usize, 0);
        }
        let slot = next.get_mut(queue as usize).ok_or(Error::UnknownQueue {
            topic: topic.to_owned(),
            queue,
            queue_count,
        })?;
        let offset = *slot;
        *slot += 1;
        Ok(offset)
    }

    /// Takes the next offset of a timed queue.
    fn next_timed_offset(&mut self, queue: TimedQueue) -> u64 {
        match self.timed.get_mut(usize::from(queue.to_id())) {
            Some(slot) => {
                let offset = *slot;
                *slot += 1;
                offset
            }
            None => 0,
        }
    }
}

/// What an id names, for [`Store::cancel`].
#[derive(Debug, Clone, Copy)]
enum Lookup {
    NotFound,
    NotDelayed,
    Delayed(OriginRef),
}

/// When a message put now falls due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DueRule {
    /// Not delayed.
    Now,
    /// A delay level's delay from the store time.
    Level { delay_ms: u64 },
    /// An arbitrary delay from the store time.
    After { delay_ms: u64 },
    /// An absolute time.
    At { due_ms: u64 },
}

impl DueRule {
    /// The due time of a message stored at `store_ms` (0 = not delayed).
    fn due_ms(self, store_ms: u64) -> u64 {
        match self {
            DueRule::Now => 0,
            DueRule::Level { delay_ms } | DueRule::After { delay_ms } => {
                store_ms.saturating_add(delay_ms).max(1)
            }
            DueRule::At { due_ms } => due_ms,
        }
    }
}

/// A snapshot of the store's state, for monitoring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stats {
    /// First log offset still stored.
    pub log_start_offset: u64,
    /// Records below are written (page cache).
    pub written_end_offset: u64,
    /// Records below are durable.
    pub durable_end_offset: u64,
    /// Records below are indexed in consume queues.
    pub dispatched_end_offset: u64,
    /// Number of commit-log segment files.
    pub segment_count: u64,
    /// Bytes of commit-log segment files.
    pub segment_bytes_total: u64,
    /// Entry count of every consume queue.
    pub queues: Vec<(QueueKey, u64)>,
    /// Committed offset and lag (entries not yet consumed) of every (group, topic, queue).
    pub consumers: Vec<ConsumerLag>,
    /// Pending (not yet delivered) messages per delay level: (level, count).
    pub pending_per_level: Vec<(u8, u64)>,
    /// Pending messages with arbitrary delays per timer tier (index = tier; tier `t` holds
    /// messages due in `[32^t, 32^(t+1))` ms from when they entered it, see [`crate::timer`]).
    pub pending_per_tier: Vec<u64>,
    /// Due time of the earliest pending delayed message, in ms (for arbitrary delays: to the
    /// granule of the timer tier it waits in, never later than the true due time).
    pub next_due_ms: Option<u64>,
    /// Delayed messages found corrupt at delivery time and skipped since open (each is also
    /// reported on stderr with its file and offset); never silent.
    pub undeliverable: u64,
    /// Delayed messages cancelled since open.
    pub cancelled: u64,
    /// Pending or unconsumed messages deleted since open because the segments exceeded
    /// `Options::disk_usage_hard_bytes` (each forced deletion is also reported on stderr).
    pub forced_deleted_messages: u64,
    /// Whether a failed sync poisoned the store.
    pub poisoned: bool,
}

/// One consumer group's position in one queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerLag {
    /// Group.
    pub group: String,
    /// Topic.
    pub topic: String,
    /// Queue.
    pub queue: u32,
    /// Next offset the group will read.
    pub committed_offset: u64,
    /// Entries after it.
    pub lag: u64,
}

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    options: Options,
    fs: Arc<dyn FileSystem>,
    clock: Arc<dyn Clock>,
    meta: RwLock<StoreMeta>,
    log: CommitLog,
    queues: ConsumeQueues,
    decisions: Decisions,
    /// Held while a delayed message's fate is decided (a delivery or a hop checks, a cancel
    /// checks and records), so a cancel racing a delivery gets exactly one outcome.
    decide: Mutex<()>,
    progress: DispatchProgress,
    offsets: ConsumerOffsets,
    placements: Mutex<Placements>,
    round_robin: AtomicU32,
    /// Delayed messages skipped because their record is corrupt (since open).
    undeliverable: AtomicU64,
    /// Delayed messages cancelled (since open).
    cancelled: AtomicU64,
    /// Messages lost to forced deletions under `disk_usage_hard_bytes` (since open).
    forced_deleted: AtomicU64,
    /// Newest store time handed out (or found in the log at open): see
    /// [`DeliveryHost::newest_store_ms`].
    newest_store_ms: AtomicU64,
    /// The queues the delivery dispatcher walks: every delay level that may hold entries (the
    /// table's, or more from an older table), then every timer slot.
    timed_queues: Vec<TimedQueue>,
    stopping: AtomicBool,
    stop_signal: Signal,
    /// Time of the last checkpoint; also held while one is written, so that `flush` and the
    /// flusher never write the checkpoint's temporary file at the same time.
    last_checkpoint: Mutex<Instant>,
    /// `last_record_offset` of the last checkpoint written: retention never deletes the
    /// segment holding it or any later one, so the checkpoint a crash falls back to never
    /// names a deleted record.
    checkpointed_last_record: AtomicU64,
    recovery: RecoveryReport,
}

/// An open store. `Send + Sync`: share it (e.g. in an `Arc`) between producer and consumer
/// threads. Dropping it closes it cleanly.
#[derive(Debug)]
pub struct Store {
    inner: Arc<Inner>,
    threads: Vec<JoinHandle<()>>,
    closed: bool,
    _lock: Box<dyn LockGuard>,
}

impl Store {
    /// Opens the store in `dir`, creating it if needed, and runs recovery.
    ///
    /// Fails with [`Error::Locked`] if another `Store` holds the directory, and with
    /// [`Error::InvalidOptions`] if an option is out of bounds.
    pub fn open(dir: impl AsRef<Path>, options: Options) -> Result<Store> {
        options.validate()?;
        let dir = dir.as_ref().to_path_buf();
        let fs = options.fs.clone();
        crate::io::create_dir_synced(fs.as_ref(), &dir).map_err(|e| Error::io(&dir, e))?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = fs
            .try_lock(&lock_path)
            .map_err(|e| Error::io(&lock_path, e))?
            .ok_or_else(|| Error::Locked { dir: dir.clone() })?;

        let meta = match StoreMeta::load(fs.as_ref(), &dir)? {
            Some(mut meta) => {
                if meta.merge(&options)? {
                    meta.store(fs.as_ref(), &dir)?;
                }
                meta
            }
            None if options.create_if_missing => {
                let meta = StoreMeta::for_new_store(&options)?;
                meta.store(fs.as_ref(), &dir)?;
                meta
            }
            None => return Err(Error::StoreNotFound { dir }),
        };

        let recovered = recover(&RecoveryConfig {
            dir: dir.clone(),
            fs: fs.clone(),
            segment_bytes: options.segment_bytes,
            queue_file_entries: options.consume_queue_file_entries,
            segment_fill: options.segment_fill(),
        })?;
        let mut placements = Placements {
            topics: HashMap::new(),
            timed: vec![0; 512],
        };
        let mut level_count = u8::try_from(meta.delay_levels_ms.len()).unwrap_or(u8::MAX);
        for (key, queue) in recovered.queues.all() {
            match key {
                QueueKey::Topic { topic, queue_id } => {
                    let count = meta.queue_count(&topic).max(queue_id.saturating_add(1)) as usize;
                    let next = placements.topics.entry(topic).or_default();
                    if next.len() < count {
                        next.resize(count, 0);
                    }
                    if let Some(slot) = next.get_mut(queue_id as usize) {
                        *slot = queue.entry_count();
                    }
                }
                QueueKey::DelayLevel(_) | QueueKey::TimerSlot(_) => {
                    if let QueueKey::DelayLevel(level) = key {
                        level_count = level_count.max(level);
                    }
                    let timed = key.as_ref().timed().map(TimedQueue::to_id);
                    if let Some(slot) =
                        timed.and_then(|id| placements.timed.get_mut(usize::from(id)))
                    {
                        *slot = queue.entry_count();
                    }
                }
            }
        }
        let offsets = ConsumerOffsets::load(fs.clone(), &dir)?;
        let mut recovery = recovered.report;
        for (key, queue) in recovered.queues.all() {
            if let QueueKey::Topic { topic, queue_id } = key {
                recovery.consumer_offsets_clamped.extend(offsets.clamp(
                    &topic,
                    queue_id,
                    queue.entry_count(),
                ));
            }
        }
        if recovery.lost_anything() {
            eprintln!("delaystore: recovery of {dir:?} cut or repaired data: {recovery:?}");
        }
        let clock = options.clock.clone();
        let inner = Arc::new(Inner {
            dir,
            fs,
            clock,
            meta: RwLock::new(meta),
            log: recovered.log,
            queues: recovered.queues,
            decisions: recovered.decisions,
            decide: Mutex::new(()),
            progress: recovered.progress,
            offsets,
            placements: Mutex::new(placements),
            round_robin: AtomicU32::new(0),
            undeliverable: AtomicU64::new(0),
            cancelled: AtomicU64::new(0),
            forced_deleted: AtomicU64::new(0),
            newest_store_ms: AtomicU64::new(0),
            timed_queues: (1..=level_count)
                .map(TimedQueue::Level)
                .chain((0..=u8::MAX).map(TimedQueue::TimerSlot))
                .collect(),
            stopping: AtomicBool::new(false),
            stop_signal: Signal::new(),
            last_checkpoint: Mutex::new(Instant::now()),
            checkpointed_last_record: AtomicU64::new(0),
            recovery,
            options,
        });
        inner
            .newest_store_ms
            .store(inner.last_record_store_ms(), Ordering::Release);
        // From here on a crash is not a clean shutdown.
        inner.write_checkpoint(false)?;
        inner.clock.register_waker(inner.progress.signal.clone());
        let threads = vec![
            spawn("delaystore-dispatch", inner.clone(), Inner::run_dispatcher)?,
            spawn("delaystore-flush", inner.clone(), Inner::run_flusher)?,
            spawn("delaystore-deliver", inner.clone(), |inner| {
                run_delivery(inner)
            })?,
        ];
        Ok(Store {
            inner,
            threads,
            closed: false,
            _lock: lock,
        })
    }

    /// The store directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// What recovery found and did when this store was opened.
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.inner.recovery
    }

    /// Puts a message with the store's default durability.
    pub fn put(&self, message: &Message) -> Result<PutReceipt> {
        self.put_with(message, Durability::Default)
    }

    /// Puts a message. With [`Durability::Sync`] (or the default in [`SyncMode::Sync`]) it
    /// returns only once the record is durable; concurrent callers share syncs.
    pub fn put_with(&self, message: &Message, durability: Durability) -> Result<PutReceipt> {
        let inner = &self.inner;
        if self.closed {
            return Err(Error::Closed);
        }
        validate_topic(&message.topic)?;
        let queue_count = inner.meta.read().queue_count(&message.topic);
        let queue = match (message.queue, &message.key) {
            (Some(queue), _) if queue < queue_count => queue,
            (Some(queue), _) => {
                return Err(Error::UnknownQueue {
                    topic: message.topic.clone(),
                    queue,
                    queue_count,
                })
            }
            (None, Some(key)) => queue_for_key(key, queue_count),
            (None, None) => inner
                .round_robin
                .fetch_add(1, Ordering::Relaxed)
                .checked_rem(queue_count)
                .unwrap_or(0),
        };
        let key = message.key.as_deref().unwrap_or("");
        if key.len() > KEY_BYTES_MAX {
            return Err(Error::InvalidMessage {
                reason: format!("key of {} bytes exceeds {KEY_BYTES_MAX}", key.len()),
            });
        }
        let properties =
            encode_properties(&message.properties).map_err(|_| Error::InvalidMessage {
                reason: "a property key is longer than 65535 bytes".into(),
            })?;
        let level = message.delay_level;
        let due = inner.due_rule(message)?;
        let bytes_max = inner.options.message_bytes_max();
        let bytes = message_bytes(
            message.topic.len(),
            key.len(),
            properties.len(),
            message.body.len(),
        )
        .unwrap_or(u64::MAX);
        if bytes > bytes_max {
            return Err(Error::MessageTooLarge { bytes, bytes_max });
        }
        let mut record = encode_message(&MessageFields {
            kind: RecordKind::Message,
            topic: &message.topic,
            queue_id: queue,
            key,
            properties: &properties,
            body: &message.body,
            delay_level: level,
        })
        .map_err(|kind| Error::InvalidMessage {
            reason: kind.to_string(),
        })?;

        // Store time is read under the append lock, so that within a level, queue order is
        // due order, and within a timer slot release order, whenever the clock does not go
        // back. The queue (level, timer slot or topic) follows from the due time and the
        // store time exactly as `dispatch_target` derives it from the record.
        let appended = inner
            .log
            .append(&mut record, inner.clock.now_ms(), |log_offset| {
                let mut placements = inner.placements.lock();
                let store_ms = inner.stamp_store_time();
                let due_ms = due.due_ms(store_ms);
                let queue_offset = match due {
                    DueRule::Level { .. } => placements.next_timed_offset(TimedQueue::Level(level)),
                    DueRule::Now | DueRule::After { .. } | DueRule::At { .. } => {
                        match slot_for(due_ms, store_ms) {
                            Some(slot) => placements.next_timed_offset(TimedQueue::TimerSlot(slot)),
                            None => {
                                placements.next_topic_offset(&message.topic, queue, queue_count)?
                            }
                        }
                    }
                };
                Ok(Placement {
                    queue_id: queue,
                    log_offset,
                    store_ms,
                    due_ms,
                    queue_offset,
                })
            })?;
        if inner.syncs(durability) {
            inner.log.wait_durable(appended.end_offset)?;
        }
        Ok(PutReceipt {
            id: MessageId(appended.placement.log_offset),
            topic: message.topic.clone(),
            queue,
            queue_offset: appended.placement.queue_offset,
            store_ms: appended.placement.store_ms,
            due_ms: (!matches!(due, DueRule::Now)).then_some(appended.placement.due_ms),
        })
    }

    /// Cancels a delayed message with the store's default durability.
    pub fn cancel(&self, id: MessageId) -> Result<CancelOutcome> {
        self.cancel_with(id, Durability::Default)
    }

    /// Cancels a delayed message: one definite outcome, decided against delivery under one
    /// lock, so a cancel racing the message's delivery is either `Cancelled` (it is never
    /// delivered) or `AlreadyDelivered` (consumers get it), never both or neither. A
    /// `Cancelled` acknowledged with [`Durability::Sync`] (or the default in
    /// [`SyncMode::Sync`]) holds through any crash. Costs one record read, one slot read and
    /// one small record append, whatever the number of pending messages.
    pub fn cancel_with(&self, id: MessageId, durability: Durability) -> Result<CancelOutcome> {
        if self.closed {
            return Err(Error::Closed);
        }
        let inner = &self.inner;
        let origin = match inner.delayed_origin(id.0)? {
            Lookup::NotFound => return Ok(CancelOutcome::NotFound),
            Lookup::NotDelayed => return Ok(CancelOutcome::AlreadyDelivered),
            Lookup::Delayed(origin) => origin,
        };
        let outcome = {
            let _decide = inner.decide.lock();
            match inner.decision(&origin)? {
                Some(Decision::Delivered(_)) => CancelOutcome::AlreadyDelivered,
                Some(Decision::Cancelled(_)) => CancelOutcome::Cancelled,
                None => {
                    inner.cancel_pending(&origin)?;
                    CancelOutcome::Cancelled
                }
            }
        };
        if inner.syncs(durability) {
            // The deciding record (this cancel, or an earlier delivery or cancel) is below
            // the written end: once that is durable, the answer survives any crash.
            inner.log.wait_durable(inner.log.written_end())?;
        }
        Ok(outcome)
    }

    /// Reads up to `max` messages of (topic, queue) from logical offset `from`. Returns fewer
    /// (or none) when the queue has no more visible entries. Offsets below the queue's first
    /// retained entry start at that entry.
    pub fn pull(
        &self,
        topic: &str,
        queue: u32,
        from: u64,
        max: usize,
    ) -> Result<Vec<StoredMessage>> {
        self.inner.pull(topic, queue, from, max)
    }

    /// Like [`Store::pull`], but waits up to `timeout` for a first message to appear.
    pub fn pull_wait(
        &self,
        topic: &str,
        queue: u32,
        from: u64,
        max: usize,
        timeout: Duration,
    ) -> Result<Vec<StoredMessage>> {
        let deadline = Instant::now() + timeout;
        loop {
            let token = self.visibility_token();
            let messages = self.inner.pull(topic, queue, from, max)?;
            let now = Instant::now();
            if !messages.is_empty() || now >= deadline || self.closed {
                return Ok(messages);
            }
            self.wait_for_entries(token, deadline - now);
        }
    }

    /// A token that changes whenever new entries become visible in any queue. Read it before
    /// pulling; if the pulls found nothing, pass it to [`Store::wait_for_entries`]: no wake-up
    /// can be missed in between.
    pub fn visibility_token(&self) -> u64 {
        self.inner.progress.signal.generation()
    }

    /// Waits until entries became visible after `token` was read, or `timeout` passes.
    pub fn wait_for_entries(&self, token: u64, timeout: Duration) {
        self.inner.progress.signal.wait_past(token, timeout);
    }

    /// Number of visible entries in (topic, queue): the next logical offset.
    pub fn queue_end_offset(&self, topic: &str, queue: u32) -> Result<u64> {
        self.inner.check_queue(topic, queue)?;
        Ok(self
            .inner
            .queues
            .get(QueueRef::Topic(topic, queue))
            .map_or(0, |q| q.entry_count()))
    }

    /// The delay-level table in force: the delay of level `n` is element `n - 1`, in ms.
    pub fn delay_levels_ms(&self) -> Vec<u64> {
        self.inner.meta.read().delay_levels_ms.clone()
    }

    /// Queue count of a topic.
    pub fn queue_count(&self, topic: &str) -> Result<u32> {
        validate_topic(topic)?;
        Ok(self.inner.meta.read().queue_count(topic))
    }

    /// Records that `group` has processed (topic, queue) up to, not including, `next_offset`.
    /// Durable at once in [`SyncMode::Sync`]; otherwise within `flush_interval_ms` (or at
    /// [`Store::flush`]).
    pub fn commit_offset(
        &self,
        group: &str,
        topic: &str,
        queue: u32,
        next_offset: u64,
    ) -> Result<()> {
        if self.closed {
            return Err(Error::Closed);
        }
        validate_topic(group)?;
        self.inner.check_queue(topic, queue)?;
        // Bound by the offsets handed out, not by what is visible yet: a consumer may commit
        // from put receipts before the dispatcher has indexed the messages.
        let end = self.inner.assigned_end(topic, queue);
        if next_offset > end {
            return Err(Error::OffsetOutOfRange {
                topic: topic.to_owned(),
                queue,
                offset: next_offset,
                end,
            });
        }
        self.inner.offsets.set(group, topic, queue, next_offset);
        if self.inner.options.sync_mode == SyncMode::Sync {
            // Only durable messages are visible in sync mode: nothing to sync first.
            self.inner.offsets.persist_after(|| Ok(()))?;
        }
        Ok(())
    }

    /// The offset last committed by `group` for (topic, queue).
    pub fn committed_offset(&self, group: &str, topic: &str, queue: u32) -> Option<u64> {
        self.inner.offsets.get(group, topic, queue)
    }

    /// Makes everything acknowledged so far durable (log, consume queues, consumer offsets)
    /// and writes a checkpoint.
    pub fn flush(&self) -> Result<()> {
        if self.closed {
            return Err(Error::Closed);
        }
        self.inner.flush_all()
    }

    /// A snapshot of the store's state.
    pub fn stats(&self) -> Stats {
        self.inner.stats()
    }

    /// How many pending delayed messages fall due in each of the next 60 seconds, and how late
    /// the oldest overdue one is: for admission control. Reads up to 200,000 queue entries.
    pub fn due_outlook(&self) -> DueOutlook {
        self.inner.due_outlook()
    }

    /// Closes the store: stops the background threads, syncs everything, and writes a clean
    /// checkpoint so the next open does not scan the log.
    pub fn close(mut self) -> Result<()> {
        self.shutdown()
    }

    /// Stops the store the way a killed process stops: the background threads end, but
    /// nothing is flushed and no checkpoint is written; the directory lock is released. What
    /// was written stays in the page cache, exactly as after a `SIGKILL`. For crash tests.
    pub fn simulate_crash(mut self) {
        self.stop_threads();
        self.closed = true;
    }

    fn stop_threads(&mut self) {
        let inner = &self.inner;
        inner.stopping.store(true, Ordering::SeqCst);
        inner.stop_signal.notify();
        inner.log.signal().notify();
        inner.progress.signal.notify();
        for thread in self.threads.drain(..) {
            if thread.join().is_err() {
                eprintln!("delaystore: a background thread panicked");
            }
        }
        inner.log.stop();
    }

    fn shutdown(&mut self) -> Result<()> {
        if self.closed {
            return Ok(());
        }
        self.closed = true;
        self.stop_threads();
        self.inner.flush_all()?;
        self.inner.write_checkpoint(true)
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        if let Err(err) = self.shutdown() {
            eprintln!(
                "delaystore: closing {:?} on drop failed: {err}",
                self.inner.dir
            );
        }
    }
}

fn spawn(name: &str, inner: Arc<Inner>, body: fn(&Inner)) -> Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || body(&inner))
        .map_err(|e| Error::io(name, e))
}

impl Inner {
    fn check_queue(&self, topic: &str, queue: u32) -> Result<()> {
        validate_topic(topic)?;
        let queue_count = self.meta.read().queue_count(topic);
        if queue < queue_count {
            Ok(())
        } else {
            Err(Error::UnknownQueue {
                topic: topic.to_owned(),
                queue,
                queue_count,
            })
        }
    }

    /// Finds the delayed message stored under `id`, and where its decision lives.
    fn delayed_origin(&self, id: u64) -> Result<Lookup> {
        let in_log = id >= self.log.start_offset()
            && id.saturating_add(HEADER_BYTES as u64) <= self.log.written_end();
        if !in_log {
            return Ok(Lookup::NotFound);
        }
        // A header that does not decode at `id` (it stores its own offset) is not a record.
        let bytes = match self.log.read_record(id) {
            Ok(bytes) => bytes,
            Err(Error::Corruption { .. }) => return Ok(Lookup::NotFound),
            Err(err) => return Err(err),
        };
        let record = decode_record(&bytes, id).map_err(|kind| self.log.corruption(id, kind))?;
        let header = record.header;
        if header.kind != RecordKind::Message {
            return Ok(Lookup::NotFound);
        }
        let first = if header.delay_level > 0 {
            TimedQueue::Level(header.delay_level)
        } else {
            match slot_for(header.due_ms, header.store_ms) {
                Some(slot) => TimedQueue::TimerSlot(slot),
                None => return Ok(Lookup::NotDelayed),
            }
        };
        Ok(Lookup::Delayed(OriginRef {
            log_offset: id,
            record_bytes: header.total_bytes,
            source: first,
            source_offset: header.queue_offset,
            first,
            first_offset: header.queue_offset,
        }))
    }

    /// Whether a call under `durability` returns only once its record is durable.
    fn syncs(&self, durability: Durability) -> bool {
        match durability {
            Durability::Sync => true,
            Durability::Buffered => false,
            Durability::Default => self.options.sync_mode == SyncMode::Sync,
        }
    }

    /// Checks a message's delay fields and says when it falls due.
    fn due_rule(&self, message: &Message) -> Result<DueRule> {
        let set = usize::from(message.delay_level > 0)
            + usize::from(message.delay_ms.is_some())
            + usize::from(message.deliver_at_ms.is_some());
        if set > 1 {
            return Err(Error::InvalidMessage {
                reason: "set at most one of delay_level, delay_ms and deliver_at_ms".into(),
            });
        }
        let delay_ms_max = self.options.delay_ms_max;
        let check = |delay_ms: u64| {
            if delay_ms > delay_ms_max {
                Err(Error::DelayTooLong {
                    delay_ms,
                    delay_ms_max,
                })
            } else {
                Ok(())
            }
        };
        if let Some(delay_ms) = message.delay_ms {
            check(delay_ms)?;
            return Ok(DueRule::After { delay_ms });
        }
        if let Some(due_ms) = message.deliver_at_ms {
            check(due_ms.saturating_sub(self.clock.now_ms()))?;
            return Ok(DueRule::At { due_ms });
        }
        let level = message.delay_level;
        if level == 0 {
            return Ok(DueRule::Now);
        }
        let meta = self.meta.read();
        let levels = &meta.delay_levels_ms;
        let delay_ms = *levels
            .get(usize::from(level) - 1)
            .ok_or(Error::InvalidDelayLevel {
                level,
                levels: levels.len(),
            })?;
        Ok(DueRule::Level { delay_ms })
    }

    /// The next offset the queue will hand out (its end once every appended record is indexed).
    fn assigned_end(&self, topic: &str, queue: u32) -> u64 {
        self.placements
            .lock()
            .topics
            .get(topic)
            .and_then(|next| next.get(queue as usize).copied())
            .unwrap_or(0)
    }

    /// Reads the clock for a record's store time (called under the append lock, so store
    /// times follow log order while the clock does not go back) and remembers the newest.
    fn stamp_store_time(&self) -> u64 {
        let store_ms = self.clock.now_ms();
        self.newest_store_ms.fetch_max(store_ms, Ordering::AcqRel);
        store_ms
    }

    /// Store time of the last record in the log (0 if none or unreadable).
    fn last_record_store_ms(&self) -> u64 {
        let last = self.progress.last_record_offset();
        if last >= self.log.written_end() {
            return 0;
        }
        let mut header = [0u8; HEADER_BYTES];
        match self.log.read_at(last, &mut header) {
            Ok(()) => decode_header(&header, last).map_or(0, |h| h.store_ms),
            Err(_) => 0,
        }
    }

    /// Records below this offset may be shown to consumers: in sync mode only durable ones.
    fn visible_end(&self) -> u64 {
        match self.options.sync_mode {
            SyncMode::Sync => self.log.durable_end(),
            SyncMode::Async => self.log.written_end(),
        }
    }

    fn pull(&self, topic: &str, queue: u32, from: u64, max: usize) -> Result<Vec<StoredMessage>> {
        self.check_queue(topic, queue)?;
        let Some(cq) = self.queues.get(QueueRef::Topic(topic, queue)) else {
            return Ok(Vec::new());
        };
        let log_start = self.log.start_offset();
        let mut start = from.max(cq.min_entry());
        if start < cq.entry_count() && cq.get(start)?.log_offset < log_start {
            // Entries whose segments retention deleted: start after them.
            start = start.max(retention::first_entry_at_or_after(&cq, log_start));
        }
        let end = cq
            .entry_count()
            .min(start.saturating_add(u64::try_from(max).unwrap_or(u64::MAX)));
        let mut out = Vec::with_capacity(usize::try_from(end.saturating_sub(start)).unwrap_or(0));
        for index in start..end {
            let entry = cq.get(index)?;
            let Some(bytes) = self.read_unless_retired(entry.log_offset)? else {
                continue;
            };
            let record = decode_record(&bytes, entry.log_offset)
                .map_err(|kind| self.log.corruption(entry.log_offset, kind))?;
            let belongs = record.header.queue_offset == index
                && dispatch_target(&record.header, record.topic)
                    == Some(QueueRef::Topic(topic, queue));
            if !belongs {
                return Err(self.log.corruption(
                    entry.log_offset,
                    DecodeError::BadField {
                        field: "consume queue entry",
                    },
                ));
            }
            let message = if record.header.kind == RecordKind::Delivery {
                // A delivered message: its content is in the origin record.
                let origin = OriginRef::decode(record.body)
                    .map_err(|kind| self.log.corruption(entry.log_offset, kind))?;
                if origin.log_offset < log_start {
                    // Forced out of the log under disk pressure (counted when deleted).
                    continue;
                }
                let Some(origin_bytes) = self.read_unless_retired(origin.log_offset)? else {
                    continue;
                };
                let origin_record = decode_record(&origin_bytes, origin.log_offset)
                    .map_err(|kind| self.log.corruption(origin.log_offset, kind))?;
                self.stored_message(&origin_record, index, Some(record.header.store_ms))?
            } else {
                self.stored_message(&record, index, None)?
            };
            out.push(message);
        }
        Ok(out)
    }

    /// Reads a record's checked bytes.
    /// The record at `log_offset`, or `None` if retention deleted its segment while we read.
    fn read_unless_retired(&self, log_offset: u64) -> Result<Option<Vec<u8>>> {
        match self.read_checked(log_offset) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(_) if log_offset < self.log.start_offset() => Ok(None),
            Err(err) => Err(err),
        }
    }

    fn read_checked(&self, log_offset: u64) -> Result<Vec<u8>> {
        self.log.read_record(log_offset)
    }

    /// The consumer's view of a message record.
    fn stored_message(
        &self,
        record: &RecordView<'_>,
        queue_offset: u64,
        delivered_ms: Option<u64>,
    ) -> Result<StoredMessage> {
        let at = record.header.log_offset;
        let properties =
            decode_properties(record.properties).map_err(|kind| self.log.corruption(at, kind))?;
        Ok(StoredMessage {
            id: MessageId(at),
            topic: record.topic.to_owned(),
            queue: record.header.queue_id,
            queue_offset,
            key: (!record.key.is_empty()).then(|| record.key.to_owned()),
            properties,
            body: record.body.to_vec(),
            store_ms: record.header.store_ms,
            due_ms: (record.header.due_ms > 0).then_some(record.header.due_ms),
            delivered_ms,
        })
    }

    fn run_dispatcher(&self) {
        let mut failing = false;
        while !self.stopping.load(Ordering::SeqCst) {
            let generation = self.log.signal().generation();
            let limit = self.visible_end();
            if self.progress.dispatched_end() < limit {
                match self
                    .progress
                    .dispatch_to(&self.log, &self.queues, &self.decisions, limit)
                {
                    Ok(()) => failing = false,
                    Err(err) => {
                        // Never skip a record: report once, then retry after a pause.
                        if !failing {
                            eprintln!("delaystore: dispatch stalled: {err}");
                        }
                        failing = true;
                        std::thread::sleep(IDLE_WAIT);
                    }
                }
                continue;
            }
            self.log.signal().wait_past(generation, IDLE_WAIT);
        }
    }

    fn run_flusher(&self) {
        let interval = Duration::from_millis(self.options.flush_interval_ms);
        let mut reported = false;
        loop {
            let generation = self.stop_signal.generation();
            if self.stopping.load(Ordering::SeqCst) {
                break;
            }
            self.stop_signal.wait_past(generation, interval);
            if self.stopping.load(Ordering::SeqCst) {
                break;
            }
            let result = self.flush_tick();
            if let Err(err) = result {
                if !reported {
                    eprintln!("delaystore: background flush failed: {err}");
                }
                reported = true;
            }
        }
    }

    fn flush_tick(&self) -> Result<()> {
        self.offsets
            .persist_after(|| self.log.sync_to(self.log.written_end()))?;
        self.sync_queues()?;
        let due = {
            let last = self.last_checkpoint.lock();
            last.elapsed() >= Duration::from_millis(self.options.checkpoint_interval_ms)
        };
        if due {
            self.write_checkpoint(false)?;
        }
        self.retain()
    }

    /// Syncs everything dispatch derives from the log: consume queues and decisions.
    fn sync_queues(&self) -> Result<()> {
        let result = self
            .queues
            .sync_all()
            .and_then(|()| self.decisions.sync_all());
        if result.is_err() {
            // A failed sync may have dropped dirty pages: nothing may be acknowledged after it.
            self.log.poison();
        }
        result
    }

    fn flush_all(&self) -> Result<()> {
        self.offsets
            .persist_after(|| self.log.sync_to(self.log.written_end()))?;
        self.progress
            .dispatch_to(&self.log, &self.queues, &self.decisions, self.visible_end())?;
        self.sync_queues()?;
        self.write_checkpoint(false)
    }

    /// Writes a checkpoint at the dispatched end, with the queue counts that match it. One
    /// writer at a time: two would race on the temporary file and its rename.
    fn write_checkpoint(&self, clean_shutdown: bool) -> Result<()> {
        let mut last_checkpoint = self.last_checkpoint.lock();
        if self.log.is_poisoned() {
            return Err(Error::Poisoned);
        }
        let (log_end_offset, last_record_offset, queue_counts, cursors, segment_refs) = {
            // No decision half made: a delivery or a cancel appends its record and then sets
            // its slot, both under the decide lock, and dispatch may set the slot from the
            // record in between. Without this lock the deciding thread's own (identical) write
            // could land after the sync below, unsynced, for a record below the checkpoint,
            // which recovery never replays: a power loss could then garble the slot.
            let _decide = self.decide.lock();
            let _batch = self.progress.batch.lock();
            (
                self.progress.dispatched_end(),
                self.progress.last_record_offset(),
                self.queues.entry_counts(),
                self.progress.cursors.to_list(),
                self.progress.cursors.segment_refs(),
            )
        };
        self.sync_queues()?;
        self.log.sync_to(log_end_offset)?;
        failpoint!("checkpoint.before_write");
        Checkpoint {
            log_end_offset,
            last_record_offset,
            written_ms: self.clock.now_ms(),
            clean_shutdown,
            queue_counts,
            cursors,
            segment_refs,
        }
        .store(self.fs.as_ref(), &self.dir)?;
        *last_checkpoint = Instant::now();
        self.checkpointed_last_record
            .store(last_record_offset, Ordering::Release);
        Ok(())
    }

    fn stats(&self) -> Stats {
        // One snapshot of dispatch: queue counts, delivery cursors and the dispatched end
        // agree (read apart, a batch between them made due messages look delivered).
        let _batch = self.progress.batch.lock();
        let segments = self.log.segments();
        let queues = self.queues.entry_counts();
        let consumers = self
            .offsets
            .snapshot()
            .into_iter()
            .map(|((group, topic, queue), committed_offset)| {
                let end = self
                    .queues
                    .get(QueueRef::Topic(&topic, queue))
                    .map_or(0, |q| q.entry_count());
                ConsumerLag {
                    lag: end.saturating_sub(committed_offset),
                    group,
                    topic,
                    queue,
                    committed_offset,
                }
            })
            .collect();
        let mut pending_per_level = Vec::new();
        let mut pending_per_tier = vec![0u64; crate::timer::TIER_COUNT as usize];
        let mut next_due_ms: Option<u64> = None;
        for &timed in &self.timed_queues {
            let Some(queue) = self.queues.get(timed.queue_ref()) else {
                continue;
            };
            let delivered = self.progress.cursors.delivered(timed);
            let pending = queue.entry_count().saturating_sub(delivered);
            match timed {
                TimedQueue::Level(level) => pending_per_level.push((level, pending)),
                TimedQueue::TimerSlot(slot) => {
                    if let Some(count) = pending_per_tier.get_mut(slot_tier(slot) as usize) {
                        *count += pending;
                    }
                }
            }
            if pending > 0 {
                // A level's head is its next due time; a timer slot's head is released at the
                // start of its due time's granule, a lower bound of its slot's due times.
                if let Ok(head) = queue.get(delivered) {
                    next_due_ms = Some(next_due_ms.map_or(head.time_ms, |d| d.min(head.time_ms)));
                }
            }
        }
        Stats {
            log_start_offset: self.log.start_offset(),
            written_end_offset: self.log.written_end(),
            durable_end_offset: self.log.durable_end(),
            dispatched_end_offset: self.progress.dispatched_end(),
            segment_count: segments.len() as u64,
            segment_bytes_total: segments.iter().map(|s| s.len_bytes()).sum(),
            queues,
            consumers,
            pending_per_level,
            pending_per_tier,
            next_due_ms,
            undeliverable: self.undeliverable.load(Ordering::Relaxed),
            cancelled: self.cancelled.load(Ordering::Relaxed),
            forced_deleted_messages: self.forced_deleted.load(Ordering::Relaxed),
            poisoned: self.log.is_poisoned(),
        }
    }
}
