//! The survey of a store directory: which files exist, by name and length, without reading
//! their content. Naming rules are the store's (`docs/format.md` §1): segments and queue files
//! are named by 20 digits, queue directories by a valid topic name and a decimal queue id (or
//! `__delay/<level>`, `__timer/<slot>`), decision files by a timed-queue id and 20 digits
//! (`decisions/<id>/<first slot>`); anything else is listed as a stranger.

use std::path::{Path, PathBuf};

use crate::checkpoint::CHECKPOINT_FILE;
use crate::commit_log::preallocate::PREPARING_SUFFIX;
use crate::commit_log::COMMIT_LOG_DIR;
use crate::consume_queue::{
    queue_dir, QueueKey, TimedQueue, CONSUME_QUEUE_DIR, DELAY_DIR, TIMER_DIR,
};
use crate::consumer_offsets::OFFSETS_FILE;
use crate::decisions::DECISIONS_DIR;
use crate::error::{Error, Result};
use crate::io::FileSystem;
use crate::meta::META_FILE;
use crate::naming::parse_offset_file_name;
use crate::options::QUEUE_COUNT_MAX;
use crate::topic::validate_topic;

/// A commit-log segment file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentFile {
    /// Log offset of its first byte (from its name).
    pub base_offset: u64,
    /// The file.
    pub path: PathBuf,
    /// Its length in bytes.
    pub len_bytes: u64,
}

impl SegmentFile {
    /// Log offset just past its last byte (saturating: names come from disk).
    pub fn end_offset(&self) -> u64 {
        self.base_offset.saturating_add(self.len_bytes)
    }
}

/// A consume-queue file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueFile {
    /// Index of its first entry (from its name).
    pub first_entry: u64,
    /// The file.
    pub path: PathBuf,
    /// Its length in bytes.
    pub len_bytes: u64,
}

/// The files of one consume queue, sorted by first entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueFiles {
    /// Which queue.
    pub key: QueueKey,
    /// Its directory.
    pub dir: PathBuf,
    /// Its files.
    pub files: Vec<QueueFile>,
}

/// A decision slot file (`decisions/<timed-queue id>/<first slot>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecisionFile {
    /// The timed queue whose messages' decisions it holds (by their first queue).
    pub queue: TimedQueue,
    /// Index (in that queue) of its first slot, from its name.
    pub first_slot: u64,
    /// The file.
    pub path: PathBuf,
    /// Its length in bytes.
    pub len_bytes: u64,
}

/// What a store directory holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreFiles {
    /// Segments, sorted by base offset.
    pub segments: Vec<SegmentFile>,
    /// Segments being prepared (`*.prealloc`): left by a crash, removed by recovery.
    pub preparing: Vec<PathBuf>,
    /// Consume queues found on disk, in key order.
    pub queues: Vec<QueueFiles>,
    /// Leftover `*.tmp` files of atomic replaces.
    pub temporaries: Vec<PathBuf>,
    /// Decision slot files, sorted by queue and first slot.
    pub decisions: Vec<DecisionFile>,
    /// Names the store does not know, in `commitlog/`, `consumequeue/` and `decisions/`.
    pub strangers: Vec<PathBuf>,
    /// Length of `meta`, `checkpoint` and `consumer_offsets`, when present.
    pub small_files: Vec<(PathBuf, u64)>,
}

impl StoreFiles {
    /// Lists the directory `dir` through `fs`. Fails only if a directory that exists cannot
    /// be listed.
    pub fn survey(fs: &dyn FileSystem, dir: &Path) -> Result<StoreFiles> {
        let mut out = StoreFiles::default();
        for name in [META_FILE, CHECKPOINT_FILE, OFFSETS_FILE] {
            let path = dir.join(name);
            if fs.exists(&path) {
                let len = fs.file_len(&path).map_err(|e| Error::io(&path, e))?;
                out.small_files.push((path.clone(), len));
            }
            let tmp = crate::io::temp_sibling(&path);
            if fs.exists(&tmp) {
                out.temporaries.push(tmp);
            }
        }
        let log_dir = dir.join(COMMIT_LOG_DIR);
        if fs.exists(&log_dir) {
            for name in list_sorted(fs, &log_dir)? {
                let path = log_dir.join(&name);
                if name.ends_with(PREPARING_SUFFIX) {
                    out.preparing.push(path);
                } else if let Some(base_offset) = parse_offset_file_name(&name) {
                    let len_bytes = fs.file_len(&path).map_err(|e| Error::io(&path, e))?;
                    out.segments.push(SegmentFile {
                        base_offset,
                        path,
                        len_bytes,
                    });
                } else {
                    out.strangers.push(path);
                }
            }
            out.segments.sort_by_key(|s| s.base_offset);
        }
        let queue_root = dir.join(CONSUME_QUEUE_DIR);
        if fs.exists(&queue_root) {
            for topic in list_sorted(fs, &queue_root)? {
                let topic_dir = queue_root.join(&topic);
                let Ok(ids) = fs.list_dir(&topic_dir) else {
                    out.strangers.push(topic_dir);
                    continue;
                };
                let topic_ok =
                    topic == DELAY_DIR || topic == TIMER_DIR || validate_topic(&topic).is_ok();
                for id in ids {
                    let key = match (topic_ok, topic.as_str()) {
                        (false, _) => None,
                        (true, DELAY_DIR) => id.parse::<u8>().ok().map(QueueKey::DelayLevel),
                        (true, TIMER_DIR) => id.parse::<u8>().ok().map(QueueKey::TimerSlot),
                        (true, _) => id.parse::<u32>().ok().filter(|q| *q < QUEUE_COUNT_MAX).map(
                            |queue_id| QueueKey::Topic {
                                topic: topic.clone(),
                                queue_id,
                            },
                        ),
                    };
                    let Some(key) = key else {
                        out.strangers.push(topic_dir.join(&id));
                        continue;
                    };
                    let qdir = queue_dir(dir, key.as_ref());
                    let Ok(names) = list_sorted(fs, &qdir) else {
                        out.strangers.push(qdir);
                        continue;
                    };
                    let mut files = Vec::new();
                    for name in names {
                        let path = qdir.join(&name);
                        match parse_offset_file_name(&name) {
                            Some(first_entry) => {
                                let len_bytes =
                                    fs.file_len(&path).map_err(|e| Error::io(&path, e))?;
                                files.push(QueueFile {
                                    first_entry,
                                    path,
                                    len_bytes,
                                });
                            }
                            None => out.strangers.push(path),
                        }
                    }
                    files.sort_by_key(|f| f.first_entry);
                    out.queues.push(QueueFiles {
                        key,
                        dir: qdir,
                        files,
                    });
                }
            }
            out.queues.sort_by(|a, b| a.key.cmp(&b.key));
        }
        let decisions_root = dir.join(DECISIONS_DIR);
        if fs.exists(&decisions_root) {
            for id in list_sorted(fs, &decisions_root)? {
                let column = decisions_root.join(&id);
                let queue = id
                    .parse::<u16>()
                    .ok()
                    .and_then(TimedQueue::from_id)
                    // Names are written by `to_id`: "007" is not a name the store makes.
                    .filter(|queue| queue.to_id().to_string() == id);
                let (Some(queue), Ok(names)) = (queue, list_sorted(fs, &column)) else {
                    out.strangers.push(column);
                    continue;
                };
                for name in names {
                    let path = column.join(&name);
                    match parse_offset_file_name(&name) {
                        Some(first_slot) => {
                            let len_bytes = fs.file_len(&path).map_err(|e| Error::io(&path, e))?;
                            out.decisions.push(DecisionFile {
                                queue,
                                first_slot,
                                path,
                                len_bytes,
                            });
                        }
                        None => out.strangers.push(path),
                    }
                }
            }
            out.decisions
                .sort_by_key(|f| (f.queue.to_id(), f.first_slot));
        }
        Ok(out)
    }

    /// Bytes of every decision file.
    pub fn decision_bytes(&self) -> u64 {
        self.decisions.iter().map(|f| f.len_bytes).sum()
    }

    /// Bytes of every segment file.
    pub fn segment_bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.len_bytes).sum()
    }

    /// Bytes of every queue file.
    pub fn queue_bytes(&self) -> u64 {
        self.queues
            .iter()
            .flat_map(|q| q.files.iter())
            .map(|f| f.len_bytes)
            .sum()
    }

    /// The files of a queue, if it has a directory.
    pub fn queue(&self, key: &QueueKey) -> Option<&QueueFiles> {
        self.queues.iter().find(|q| &q.key == key)
    }
}

fn list_sorted(fs: &dyn FileSystem, dir: &Path) -> Result<Vec<String>> {
    let mut names = fs.list_dir(dir).map_err(|e| Error::io(dir, e))?;
    names.sort();
    Ok(names)
}
