//! Consume queues: the per-queue indexes of the commit log, written by the dispatcher.
//!
//! One queue per (topic, queue id) under `consumequeue/<topic>/<queue id>/`, one per delay
//! level under `consumequeue/__delay/<level>/` (RocketMQ's `SCHEDULE_TOPIC_XXXX`), and one per
//! timer slot under `consumequeue/__timer/<slot>/` (see [`crate::timer`]). All are derived
//! data: recovery truncates or rebuilds them from the commit log, the truth.

pub mod entry;
mod queue;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::RwLock;

pub use queue::ConsumeQueue;

use crate::error::{Error, Result};
use crate::io::FileSystem;
use crate::options::SegmentFill;

/// Directory of all consume queues inside the store directory.
pub const CONSUME_QUEUE_DIR: &str = "consumequeue";
/// Directory (inside [`CONSUME_QUEUE_DIR`]) of the delay-level queues.
pub const DELAY_DIR: &str = "__delay";
/// Directory (inside [`CONSUME_QUEUE_DIR`]) of the timer slot queues.
pub const TIMER_DIR: &str = "__timer";
/// Entries per file of a timer slot queue: 256 slots share the wheel, so their files are
/// smaller than a topic queue's (320 KiB each).
pub const TIMER_FILE_ENTRIES: u64 = 16 * 1024;

/// A queue the delivery dispatcher consumes in order, head first: a delay level or a timer
/// slot. Delivery, hop and discard records name the entry they consume by this queue's id
/// ([`TimedQueue::to_id`]) and the entry's offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TimedQueue {
    /// A delay level (1-based).
    Level(u8),
    /// A timer slot (`0..256`: tier `slot / 32`).
    TimerSlot(u8),
}

impl TimedQueue {
    /// The id stored in records: `1..=255` for levels, `256..=511` for timer slots.
    pub fn to_id(self) -> u16 {
        match self {
            TimedQueue::Level(level) => u16::from(level),
            TimedQueue::TimerSlot(slot) => 256 + u16::from(slot),
        }
    }

    /// The queue of a stored id, or `None` if no queue has it.
    pub fn from_id(id: u16) -> Option<Self> {
        match id {
            1..=255 => u8::try_from(id).ok().map(TimedQueue::Level),
            256..=511 => u8::try_from(id - 256).ok().map(TimedQueue::TimerSlot),
            _ => None,
        }
    }

    /// The consume queue it is.
    pub fn queue_ref(self) -> QueueRef<'static> {
        match self {
            TimedQueue::Level(level) => QueueRef::DelayLevel(level),
            TimedQueue::TimerSlot(slot) => QueueRef::TimerSlot(slot),
        }
    }
}

/// Names a consume queue.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum QueueKey {
    /// The queue of a user topic.
    Topic {
        /// Topic name.
        topic: String,
        /// Queue id.
        queue_id: u32,
    },
    /// The queue of a delay level (1-based).
    DelayLevel(u8),
    /// The queue of a timer slot.
    TimerSlot(u8),
}

/// A borrowed [`QueueKey`], for lookups on the hot path without allocating.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueRef<'a> {
    /// The queue of a user topic.
    Topic(&'a str, u32),
    /// The queue of a delay level.
    DelayLevel(u8),
    /// The queue of a timer slot.
    TimerSlot(u8),
}

impl QueueRef<'_> {
    /// The owned key.
    pub fn to_key(self) -> QueueKey {
        match self {
            QueueRef::Topic(topic, queue_id) => QueueKey::Topic {
                topic: topic.to_owned(),
                queue_id,
            },
            QueueRef::DelayLevel(level) => QueueKey::DelayLevel(level),
            QueueRef::TimerSlot(slot) => QueueKey::TimerSlot(slot),
        }
    }

    /// The timed queue it is, if it is one.
    pub fn timed(self) -> Option<TimedQueue> {
        match self {
            QueueRef::Topic(..) => None,
            QueueRef::DelayLevel(level) => Some(TimedQueue::Level(level)),
            QueueRef::TimerSlot(slot) => Some(TimedQueue::TimerSlot(slot)),
        }
    }
}

impl QueueKey {
    /// The borrowed form.
    pub fn as_ref(&self) -> QueueRef<'_> {
        match self {
            QueueKey::Topic { topic, queue_id } => QueueRef::Topic(topic, *queue_id),
            QueueKey::DelayLevel(level) => QueueRef::DelayLevel(*level),
            QueueKey::TimerSlot(slot) => QueueRef::TimerSlot(*slot),
        }
    }
}

/// Directory of a queue relative to the store directory.
pub fn queue_dir(store_dir: &Path, key: QueueRef<'_>) -> PathBuf {
    let base = store_dir.join(CONSUME_QUEUE_DIR);
    match key {
        QueueRef::Topic(topic, queue_id) => base.join(topic).join(queue_id.to_string()),
        QueueRef::DelayLevel(level) => base.join(DELAY_DIR).join(level.to_string()),
        QueueRef::TimerSlot(slot) => base.join(TIMER_DIR).join(slot.to_string()),
    }
}

/// Every consume queue of a store, created on first use.
#[derive(Debug)]
pub struct ConsumeQueues {
    store_dir: PathBuf,
    fs: Arc<dyn FileSystem>,
    file_entries: u64,
    fill: SegmentFill,
    topics: RwLock<HashMap<String, HashMap<u32, Arc<ConsumeQueue>>>>,
    timed: RwLock<HashMap<TimedQueue, Arc<ConsumeQueue>>>,
}

impl ConsumeQueues {
    /// An empty set; queues are opened by [`ConsumeQueues::open_existing`] or on first use.
    pub fn new(
        fs: Arc<dyn FileSystem>,
        store_dir: &Path,
        file_entries: u64,
        fill: SegmentFill,
    ) -> Self {
        ConsumeQueues {
            store_dir: store_dir.to_path_buf(),
            fs,
            file_entries,
            fill,
            topics: RwLock::new(HashMap::new()),
            timed: RwLock::new(HashMap::new()),
        }
    }

    /// Lists the queues present on disk (used by recovery).
    pub fn list_on_disk(&self) -> Result<Vec<QueueKey>> {
        let base = self.store_dir.join(CONSUME_QUEUE_DIR);
        if !self.fs.exists(&base) {
            return Ok(Vec::new());
        }
        let mut keys = Vec::new();
        for topic in self.fs.list_dir(&base).map_err(|e| Error::io(&base, e))? {
            let topic_dir = base.join(&topic);
            let ids = self
                .fs
                .list_dir(&topic_dir)
                .map_err(|e| Error::io(&topic_dir, e))?;
            for id in ids {
                if topic == DELAY_DIR {
                    if let Ok(level) = id.parse::<u8>() {
                        keys.push(QueueKey::DelayLevel(level));
                    }
                } else if topic == TIMER_DIR {
                    if let Ok(slot) = id.parse::<u8>() {
                        keys.push(QueueKey::TimerSlot(slot));
                    }
                } else if let Ok(queue_id) = id.parse::<u32>() {
                    // Directories outside the name rules or the queue-count bound are not
                    // the store's (and a huge id must not size any table).
                    let ours = queue_id < crate::options::QUEUE_COUNT_MAX
                        && crate::topic::validate_topic(&topic).is_ok();
                    if ours {
                        keys.push(QueueKey::Topic {
                            topic: topic.clone(),
                            queue_id,
                        });
                    }
                }
            }
        }
        keys.sort();
        Ok(keys)
    }

    /// Opens a queue on its own, outside the set (recovery fixes it, then [`Self::insert`]s it).
    pub fn open_detached(&self, key: QueueRef<'_>) -> Result<ConsumeQueue> {
        let file_entries = match key {
            QueueRef::TimerSlot(_) => self.file_entries.min(TIMER_FILE_ENTRIES),
            QueueRef::Topic(..) | QueueRef::DelayLevel(_) => self.file_entries,
        };
        ConsumeQueue::open(
            self.fs.clone(),
            &queue_dir(&self.store_dir, key),
            file_entries,
            self.fill,
        )
    }

    /// Adds an opened queue to the set.
    pub fn insert(&self, key: &QueueKey, queue: ConsumeQueue) -> Arc<ConsumeQueue> {
        let queue = Arc::new(queue);
        match key {
            QueueKey::Topic { topic, queue_id } => {
                self.topics
                    .write()
                    .entry(topic.clone())
                    .or_default()
                    .insert(*queue_id, queue.clone());
            }
            QueueKey::DelayLevel(level) => {
                self.timed
                    .write()
                    .insert(TimedQueue::Level(*level), queue.clone());
            }
            QueueKey::TimerSlot(slot) => {
                self.timed
                    .write()
                    .insert(TimedQueue::TimerSlot(*slot), queue.clone());
            }
        }
        queue
    }

    /// The queue, if it exists.
    pub fn get(&self, key: QueueRef<'_>) -> Option<Arc<ConsumeQueue>> {
        match key {
            QueueRef::Topic(topic, queue_id) => {
                self.topics.read().get(topic)?.get(&queue_id).cloned()
            }
            QueueRef::DelayLevel(level) => {
                self.timed.read().get(&TimedQueue::Level(level)).cloned()
            }
            QueueRef::TimerSlot(slot) => {
                self.timed.read().get(&TimedQueue::TimerSlot(slot)).cloned()
            }
        }
    }

    /// The queue, created (directory and all) if missing.
    pub fn get_or_create(&self, key: QueueRef<'_>) -> Result<Arc<ConsumeQueue>> {
        if let Some(queue) = self.get(key) {
            return Ok(queue);
        }
        let queue = self.open_detached(key)?;
        Ok(self.insert(&key.to_key(), queue))
    }

    /// The entry count of every queue, in key order.
    pub fn entry_counts(&self) -> Vec<(QueueKey, u64)> {
        self.all()
            .into_iter()
            .map(|(key, queue)| (key, queue.entry_count()))
            .collect()
    }

    /// Every queue with its key, in key order.
    pub fn all(&self) -> Vec<(QueueKey, Arc<ConsumeQueue>)> {
        let mut out = Vec::new();
        for (topic, queues) in self.topics.read().iter() {
            for (queue_id, queue) in queues {
                out.push((
                    QueueKey::Topic {
                        topic: topic.clone(),
                        queue_id: *queue_id,
                    },
                    queue.clone(),
                ));
            }
        }
        for (timed, queue) in self.timed.read().iter() {
            out.push((timed.queue_ref().to_key(), queue.clone()));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Syncs every queue.
    pub fn sync_all(&self) -> Result<()> {
        for (_, queue) in self.all() {
            queue.sync()?;
        }
        Ok(())
    }
}
