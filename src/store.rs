//! The public store: opens (recovering), accepts puts, serves pulls, keeps consumer offsets,
//! and runs two background threads: the dispatcher (commit log -> consume queues) and the
//! flusher (time-bounded sync, consumer offsets, checkpoint).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};

use crate::checkpoint::Checkpoint;
use crate::clock::Clock;
use crate::commit_log::record::{
    decode_properties, decode_record, encode_message, encode_properties, message_bytes,
    MessageFields, Placement, KEY_BYTES_MAX,
};
use crate::commit_log::CommitLog;
use crate::consume_queue::{ConsumeQueues, QueueKey, QueueRef};
use crate::consumer_offsets::ConsumerOffsets;
use crate::dispatch::{dispatch_target, DispatchProgress};
use crate::error::{DecodeError, Error, Result};
use crate::io::{FileSystem, LockGuard};
use crate::message::{Message, MessageId, PutReceipt, StoredMessage};
use crate::meta::StoreMeta;
use crate::options::{Durability, Options, SyncMode};
use crate::recovery::{recover, RecoveryConfig, RecoveryReport};
use crate::signal::Signal;
use crate::topic::{queue_for_key, validate_topic};

/// Name of the lock file inside the store directory.
pub const LOCK_FILE: &str = "LOCK";

/// How long a background thread sleeps at most before re-checking for work or a stop.
const IDLE_WAIT: Duration = Duration::from_millis(100);

/// Next queue offset of every queue, and the last store time handed out. Locked only inside
/// the commit-log append lock, so offsets and times follow log order.
#[derive(Debug, Default)]
struct Placements {
    topics: HashMap<String, Vec<u64>>,
    last_store_ms: u64,
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
    progress: DispatchProgress,
    offsets: ConsumerOffsets,
    placements: Mutex<Placements>,
    round_robin: AtomicU32,
    stopping: AtomicBool,
    stop_signal: Signal,
    last_checkpoint: Mutex<Instant>,
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
        fs.create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
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
            None => {
                let meta = StoreMeta::for_new_store(&options);
                meta.store(fs.as_ref(), &dir)?;
                meta
            }
        };

        let recovered = recover(&RecoveryConfig {
            dir: dir.clone(),
            fs: fs.clone(),
            segment_bytes: options.segment_bytes,
            queue_file_entries: options.consume_queue_file_entries,
        })?;
        let mut placements = Placements {
            last_store_ms: 0,
            ..Placements::default()
        };
        for (key, queue) in recovered.queues.all() {
            if let QueueKey::Topic { topic, queue_id } = key {
                let count = meta.queue_count(&topic).max(queue_id + 1) as usize;
                let next = placements.topics.entry(topic).or_default();
                if next.len() < count {
                    next.resize(count, 0);
                }
                if let Some(slot) = next.get_mut(queue_id as usize) {
                    *slot = queue.entry_count();
                }
            }
        }
        let offsets = ConsumerOffsets::load(fs.clone(), &dir)?;
        let clock = options.clock.clone();
        let inner = Arc::new(Inner {
            dir,
            fs,
            clock,
            meta: RwLock::new(meta),
            log: recovered.log,
            queues: recovered.queues,
            progress: recovered.progress,
            offsets,
            placements: Mutex::new(placements),
            round_robin: AtomicU32::new(0),
            stopping: AtomicBool::new(false),
            stop_signal: Signal::new(),
            last_checkpoint: Mutex::new(Instant::now()),
            recovery: recovered.report,
            options,
        });
        // From here on a crash is not a clean shutdown.
        inner.write_checkpoint(false)?;
        let threads = vec![
            spawn("delaystore-dispatch", inner.clone(), Inner::run_dispatcher)?,
            spawn("delaystore-flush", inner.clone(), Inner::run_flusher)?,
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
            (None, None) => inner.round_robin.fetch_add(1, Ordering::Relaxed) % queue_count,
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
            topic: &message.topic,
            queue_id: queue,
            key,
            properties: &properties,
            body: &message.body,
            delay_level: 0,
        })
        .map_err(|kind| Error::InvalidMessage {
            reason: kind.to_string(),
        })?;

        let appended = inner.log.append(&mut record, inner.clock.now_ms(), |log_offset| {
            let mut placements = inner.placements.lock();
            let store_ms = inner.clock.now_ms().max(placements.last_store_ms);
            placements.last_store_ms = store_ms;
            let next = placements.topics.entry(message.topic.clone()).or_default();
            if next.len() < queue_count as usize {
                next.resize(queue_count as usize, 0);
            }
            let slot = next.get_mut(queue as usize).ok_or(Error::UnknownQueue {
                topic: message.topic.clone(),
                queue,
                queue_count,
            })?;
            let queue_offset = *slot;
            *slot += 1;
            Ok(Placement {
                log_offset,
                store_ms,
                due_ms: 0,
                queue_offset,
            })
        })?;
        let sync = match durability {
            Durability::Sync => true,
            Durability::Buffered => false,
            Durability::Default => inner.options.sync_mode == SyncMode::Sync,
        };
        if sync {
            inner.log.wait_durable(appended.end_offset)?;
        }
        Ok(PutReceipt {
            id: MessageId(appended.placement.log_offset),
            topic: message.topic.clone(),
            queue,
            queue_offset: appended.placement.queue_offset,
            store_ms: appended.placement.store_ms,
        })
    }

    /// Reads up to `max` messages of (topic, queue) from logical offset `from`. Returns fewer
    /// (or none) when the queue has no more visible entries. Offsets below the queue's first
    /// retained entry start at that entry.
    pub fn pull(&self, topic: &str, queue: u32, from: u64, max: usize) -> Result<Vec<StoredMessage>> {
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
            let generation = self.inner.progress.signal.generation();
            let messages = self.inner.pull(topic, queue, from, max)?;
            let now = Instant::now();
            if !messages.is_empty() || now >= deadline || self.closed {
                return Ok(messages);
            }
            self.inner
                .progress
                .signal
                .wait_past(generation, deadline - now);
        }
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

    /// Queue count of a topic.
    pub fn queue_count(&self, topic: &str) -> Result<u32> {
        validate_topic(topic)?;
        Ok(self.inner.meta.read().queue_count(topic))
    }

    /// Records that `group` has processed (topic, queue) up to, not including, `next_offset`.
    /// Durable at once in [`SyncMode::Sync`]; otherwise within `flush_interval_ms` (or at
    /// [`Store::flush`]).
    pub fn commit_offset(&self, group: &str, topic: &str, queue: u32, next_offset: u64) -> Result<()> {
        if self.closed {
            return Err(Error::Closed);
        }
        validate_topic(group)?;
        self.inner.check_queue(topic, queue)?;
        self.inner.offsets.set(group, topic, queue, next_offset);
        if self.inner.options.sync_mode == SyncMode::Sync {
            self.inner.offsets.persist()?;
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
            eprintln!("delaystore: closing {:?} on drop failed: {err}", self.inner.dir);
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
        let start = from.max(cq.min_entry());
        let end = cq
            .entry_count()
            .min(start.saturating_add(u64::try_from(max).unwrap_or(u64::MAX)));
        let mut out = Vec::with_capacity(usize::try_from(end.saturating_sub(start)).unwrap_or(0));
        for index in start..end {
            let entry = cq.get(index)?;
            let bytes = self.log.read_record(entry.log_offset)?;
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
            let properties = decode_properties(record.properties)
                .map_err(|kind| self.log.corruption(entry.log_offset, kind))?;
            out.push(StoredMessage {
                id: MessageId(entry.log_offset),
                topic: topic.to_owned(),
                queue,
                queue_offset: index,
                key: (!record.key.is_empty()).then(|| record.key.to_owned()),
                properties,
                body: record.body.to_vec(),
                store_ms: record.header.store_ms,
            });
        }
        Ok(out)
    }

    fn run_dispatcher(&self) {
        let mut failing = false;
        while !self.stopping.load(Ordering::SeqCst) {
            let generation = self.log.signal().generation();
            let limit = self.visible_end();
            if self.progress.dispatched_end() < limit {
                match self.progress.dispatch_to(&self.log, &self.queues, limit) {
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
        self.log.sync_to(self.log.written_end())?;
        self.sync_queues()?;
        self.offsets.persist()?;
        let due = {
            let last = self.last_checkpoint.lock();
            last.elapsed() >= Duration::from_millis(self.options.checkpoint_interval_ms)
        };
        if due {
            self.write_checkpoint(false)?;
        }
        Ok(())
    }

    fn sync_queues(&self) -> Result<()> {
        let result = self.queues.sync_all();
        if result.is_err() {
            // A failed sync may have dropped dirty pages: nothing may be acknowledged after it.
            self.log.poison();
        }
        result
    }

    fn flush_all(&self) -> Result<()> {
        self.log.sync_to(self.log.written_end())?;
        self.progress
            .dispatch_to(&self.log, &self.queues, self.visible_end())?;
        self.sync_queues()?;
        self.offsets.persist()?;
        self.write_checkpoint(false)
    }

    /// Writes a checkpoint at the dispatched end, with the queue counts that match it.
    fn write_checkpoint(&self, clean_shutdown: bool) -> Result<()> {
        if self.log.is_poisoned() {
            return Err(Error::Poisoned);
        }
        let (log_end_offset, last_record_offset, queue_counts) = {
            let _batch = self.progress.batch.lock();
            let counts: Vec<(QueueKey, u64)> = self
                .queues
                .all()
                .into_iter()
                .map(|(key, queue)| (key, queue.entry_count()))
                .collect();
            (
                self.progress.dispatched_end(),
                self.progress.last_record_offset(),
                counts,
            )
        };
        self.sync_queues()?;
        self.log.sync_to(log_end_offset)?;
        Checkpoint {
            log_end_offset,
            last_record_offset,
            written_ms: self.clock.now_ms(),
            clean_shutdown,
            queue_counts,
        }
        .store(self.fs.as_ref(), &self.dir)?;
        *self.last_checkpoint.lock() = Instant::now();
        Ok(())
    }

    fn stats(&self) -> Stats {
        let segments = self.log.segments();
        let queues: Vec<(QueueKey, u64)> = self
            .queues
            .all()
            .into_iter()
            .map(|(key, queue)| (key, queue.entry_count()))
            .collect();
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
        Stats {
            log_start_offset: self.log.start_offset(),
            written_end_offset: self.log.written_end(),
            durable_end_offset: self.log.durable_end(),
            dispatched_end_offset: self.progress.dispatched_end(),
            segment_count: segments.len() as u64,
            segment_bytes_total: segments.iter().map(|s| s.len_bytes()).sum(),
            queues,
            consumers,
            poisoned: self.log.is_poisoned(),
        }
    }
}
