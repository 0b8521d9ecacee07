//! Helpers shared by the integration tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fs::{self, OpenOptions};
use std::io::{self, ErrorKind};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use delaystore::io::{FileSystem, LockGuard, MappedFile, OpenMode, RealFs, SlotFile};
use delaystore::{Error, Message, Options, PutReceipt, Store, StoredMessage};

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

/// Small files, and a background flusher that (in practice) never ticks: the checkpoint is
/// written only at open, `flush()` and `close()`, so a test knows exactly where it is.
pub fn quiet_options() -> Options {
    Options {
        flush_interval_ms: 60_000,
        checkpoint_interval_ms: 600_000,
        ..small_options()
    }
}

/// Opens a store with `options`, panicking on error.
pub fn open(dir: &Path, options: Options) -> Store {
    Store::open(dir, options).expect("open store")
}

/// Pulls every visible message of (topic, queue) from `from`, waiting briefly for dispatch.
pub fn pull_all(
    store: &Store,
    topic: &str,
    queue: u32,
    from: u64,
    expected: usize,
) -> Vec<StoredMessage> {
    let mut out: Vec<StoredMessage> = Vec::new();
    let mut next = from;
    let deadline = Instant::now() + Duration::from_secs(10);
    while out.len() < expected && Instant::now() < deadline {
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

/// Waits (bounded: 20 s, for a loaded machine) until `done` holds; fails the test naming
/// `what` otherwise.
pub fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "{what} did not happen");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Waits (bounded) until (topic, queue) has at least `count` visible entries; returns the
/// count seen last. Dispatch is asynchronous, so a fresh put may take a moment to show.
pub fn wait_queue_end(store: &Store, topic: &str, queue: u32, count: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let end = store.queue_end_offset(topic, queue).expect("queue end");
        if end >= count || Instant::now() >= deadline {
            return end;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Reads the whole of (topic, queue) from 0 until a pull returns nothing.
pub fn read_queue(store: &Store, topic: &str, queue: u32) -> Vec<StoredMessage> {
    let mut out: Vec<StoredMessage> = Vec::new();
    let mut next = 0;
    loop {
        let batch = store.pull(topic, queue, next, 512).expect("pull");
        let Some(last) = batch.last() else {
            return out;
        };
        next = last.queue_offset + 1;
        out.extend(batch);
    }
}

/// A deterministic test message: keyed, with a property, and a body of varying length.
pub fn message(topic: &str, i: u64) -> Message {
    let pad = "x".repeat((i % 53) as usize);
    Message::new(topic, format!("{topic}/{i}/{pad}"))
        .with_key(format!("key-{}", i % 41))
        .with_property("seq", i.to_string())
        .with_property("topic", topic)
}

/// One acknowledged put: what was sent and what the store answered.
#[derive(Debug, Clone)]
pub struct Sent {
    /// The message as put.
    pub message: Message,
    /// The store's receipt.
    pub receipt: PutReceipt,
}

/// What the store must hold: every acknowledged put that was not lost to a damage point.
#[derive(Debug, Default, Clone)]
pub struct Model {
    /// Acknowledged puts, in put order.
    pub sent: Vec<Sent>,
    /// Topics to check even if nothing of them survives.
    pub topics: BTreeSet<String>,
}

/// Puts until acknowledged, retrying only the spurious failure of a segment roll that raced
/// the background preallocator (`Error::Io` `AlreadyExists` on a commit-log segment: both
/// created the same file). Such a put appended nothing, so a retry is what a client would do.
/// That race is fixed (a roll now waits for an in-flight creation) and is pinned by
/// `segment_roll_racing_the_preallocator_does_not_fail_puts` in `tests/store.rs`; [`Model::put`]
/// never retries.
pub fn put_acked(store: &Store, message: &Message) -> PutReceipt {
    let mut attempts = 0;
    loop {
        match store.put(message) {
            Ok(receipt) => return receipt,
            Err(Error::Io { path, source })
                if source.kind() == ErrorKind::AlreadyExists
                    && path.parent().is_some_and(|p| p.ends_with("commitlog"))
                    && attempts < 1000 =>
            {
                attempts += 1;
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(err) => panic!("put failed: {err:?}"),
        }
    }
}

impl Model {
    /// A model that knows nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Puts `message` and records it.
    pub fn put(&mut self, store: &Store, message: Message) -> PutReceipt {
        let receipt = store.put(&message).expect("put");
        self.topics.insert(message.topic.clone());
        self.sent.push(Sent {
            message,
            receipt: receipt.clone(),
        });
        receipt
    }

    /// Puts `count` messages `message(topic, first..first + count)`.
    pub fn put_many(&mut self, store: &Store, topic: &str, first: u64, count: u64) {
        for i in first..first + count {
            self.put(store, message(topic, i));
        }
    }

    /// Records a put made elsewhere (another thread).
    pub fn record(&mut self, message: Message, receipt: PutReceipt) {
        self.topics.insert(message.topic.clone());
        self.sent.push(Sent { message, receipt });
    }

    /// Drops every put whose record starts at or after `log_offset` (a damage point).
    pub fn cut_at(&mut self, log_offset: u64) {
        self.sent.retain(|s| s.receipt.id.0 < log_offset);
    }

    /// Log offset of the last acknowledged record.
    pub fn last_id(&self) -> u64 {
        self.sent.last().expect("something was put").receipt.id.0
    }

    /// The expected content of (topic, queue), in queue order.
    pub fn expected(&self, topic: &str, queue: u32) -> Vec<&Sent> {
        let mut out: Vec<&Sent> = self
            .sent
            .iter()
            .filter(|s| s.receipt.topic == topic && s.receipt.queue == queue)
            .collect();
        out.sort_by_key(|s| s.receipt.queue_offset);
        out
    }

    /// Checks the store holds exactly the model: every queue of every known topic returns
    /// every surviving acknowledged message (id, offset, key, properties, body) and nothing
    /// else.
    pub fn verify(&self, store: &Store) {
        for topic in &self.topics {
            let queue_count = store.queue_count(topic).expect("queue count");
            for queue in 0..queue_count {
                let expected = self.expected(topic, queue);
                for (index, sent) in expected.iter().enumerate() {
                    assert_eq!(
                        sent.receipt.queue_offset, index as u64,
                        "model: {topic}/{queue} offsets are not contiguous"
                    );
                }
                let count = expected.len() as u64;
                let seen = wait_queue_end(store, topic, queue, count);
                assert_eq!(
                    seen, count,
                    "{topic}/{queue}: queue end offset {seen}, expected {count}"
                );
                let got = read_queue(store, topic, queue);
                assert_eq!(
                    got.len(),
                    expected.len(),
                    "{topic}/{queue}: pulled {} messages, expected {}",
                    got.len(),
                    expected.len()
                );
                for (stored, sent) in got.iter().zip(&expected) {
                    let want = &sent.message;
                    let what = format!("{topic}/{queue} offset {}", stored.queue_offset);
                    assert_eq!(stored.id, sent.receipt.id, "{what}: id");
                    assert_eq!(stored.queue_offset, sent.receipt.queue_offset, "{what}");
                    assert_eq!(stored.topic, want.topic, "{what}: topic");
                    assert_eq!(stored.queue, queue, "{what}: queue");
                    assert_eq!(stored.key, want.key, "{what}: key");
                    assert_eq!(stored.properties, want.properties, "{what}: properties");
                    assert_eq!(stored.body, want.body, "{what}: body");
                }
                let beyond = store.pull(topic, queue, count, 16).expect("pull past end");
                assert!(
                    beyond.is_empty(),
                    "{topic}/{queue}: phantom messages {beyond:?}"
                );
            }
        }
    }
}

// ---- On-disk layout (see the crate docs and docs/format.md) ----

/// Record magic `DSR1`.
pub const RECORD_MAGIC: &[u8; 4] = b"DSR1";
/// Record header length.
pub const HEADER_BYTES: u64 = 64;
/// Bytes per consume-queue entry.
pub const ENTRY_BYTES: u64 = 20;

/// Files whose names are 20-digit offsets in `dir`, sorted by offset.
pub fn offset_files(dir: &Path) -> Vec<(u64, PathBuf)> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<(u64, PathBuf)> = entries
        .map(|e| e.expect("dir entry"))
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            if name.len() == 20 && name.bytes().all(|b| b.is_ascii_digit()) {
                Some((name.parse().ok()?, e.path()))
            } else {
                None
            }
        })
        .collect();
    out.sort();
    out
}

/// The commit-log directory of a store.
pub fn log_dir(dir: &Path) -> PathBuf {
    dir.join("commitlog")
}

/// Path of the segment file with this base offset (existing or not).
pub fn segment_path(dir: &Path, base: u64) -> PathBuf {
    log_dir(dir).join(format!("{base:020}"))
}

/// Commit-log segments, sorted by base offset.
pub fn segments(dir: &Path) -> Vec<(u64, PathBuf)> {
    offset_files(&log_dir(dir))
}

/// The segment holding `log_offset` and the offset inside it.
pub fn locate(dir: &Path, log_offset: u64) -> (PathBuf, u64) {
    for (base, path) in segments(dir) {
        let len = fs::metadata(&path).expect("segment metadata").len();
        if (base..base + len).contains(&log_offset) {
            return (path, log_offset - base);
        }
    }
    panic!("no segment holds log offset {log_offset}");
}

/// Directory of a topic queue.
pub fn queue_dir(dir: &Path, topic: &str, queue: u32) -> PathBuf {
    dir.join("consumequeue").join(topic).join(queue.to_string())
}

/// Files of a topic queue, sorted by first entry.
pub fn queue_files(dir: &Path, topic: &str, queue: u32) -> Vec<(u64, PathBuf)> {
    offset_files(&queue_dir(dir, topic, queue))
}

/// Reads `len` bytes at `offset` of `path`.
pub fn read_bytes(path: &Path, offset: u64, len: u64) -> Vec<u8> {
    let file = fs::File::open(path).expect("open for read");
    let mut buf = vec![0u8; len as usize];
    file.read_exact_at(&mut buf, offset).expect("read_exact_at");
    buf
}

/// Writes `bytes` at `offset` of an existing `path` (no truncation, no growth expected).
pub fn write_bytes(path: &Path, offset: u64, bytes: &[u8]) {
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .expect("open for write");
    file.write_all_at(bytes, offset).expect("write_all_at");
    file.sync_all().expect("sync");
}

/// Zeroes `len` bytes at `offset` of `path`.
pub fn zero_bytes(path: &Path, offset: u64, len: u64) {
    write_bytes(path, offset, &vec![0u8; len as usize]);
}

/// Inverts the byte at `offset` of `path`.
pub fn flip_byte(path: &Path, offset: u64) {
    let byte = read_bytes(path, offset, 1)[0];
    write_bytes(path, offset, &[!byte]);
}

/// Whether `len` bytes at `offset` of `path` are all zero.
pub fn is_zero(path: &Path, offset: u64, len: u64) -> bool {
    read_bytes(path, offset, len).iter().all(|&b| b == 0)
}

/// File length.
pub fn file_len(path: &Path) -> u64 {
    fs::metadata(path).expect("metadata").len()
}

/// One record found by [`walk_log`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordInfo {
    /// Log offset.
    pub offset: u64,
    /// Total length.
    pub len: u64,
    /// 1 message, 2 filler.
    pub kind: u8,
}

/// Walks the records of an intact log from its first segment by their headers (magic, length
/// and stored offset only; no CRC): an independent reading of the format for expectations.
pub fn walk_log(dir: &Path) -> Vec<RecordInfo> {
    let segs: Vec<(u64, PathBuf, u64)> = segments(dir)
        .into_iter()
        .map(|(base, path)| {
            let len = file_len(&path);
            (base, path, len)
        })
        .collect();
    let mut out = Vec::new();
    let Some(mut pos) = segs.first().map(|s| s.0) else {
        return out;
    };
    loop {
        let Some((base, path, len)) = segs.iter().find(|(b, _, l)| (*b..*b + *l).contains(&pos))
        else {
            return out;
        };
        let at = pos - base;
        if len - at < HEADER_BYTES {
            return out;
        }
        let header = read_bytes(path, at, HEADER_BYTES);
        let total = u64::from(u32::from_le_bytes(header[4..8].try_into().unwrap()));
        let stored = u64::from_le_bytes(header[16..24].try_into().unwrap());
        if &header[0..4] != RECORD_MAGIC || stored != pos || total < HEADER_BYTES {
            return out;
        }
        out.push(RecordInfo {
            offset: pos,
            len: total,
            kind: header[13],
        });
        pos += total;
    }
}

/// Number of records (messages and fillers) that start at or after `from`.
pub fn records_from(records: &[RecordInfo], from: u64) -> u64 {
    records.iter().filter(|r| r.offset >= from).count() as u64
}

/// Every file under `dir` (relative path -> content), the LOCK file excepted.
pub fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(root: &Path, at: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        for entry in fs::read_dir(at).expect("read_dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                walk(root, &path, out);
            } else if path.file_name().is_some_and(|n| n != "LOCK") {
                let rel = path.strip_prefix(root).expect("prefix").to_path_buf();
                out.insert(rel, fs::read(&path).expect("read"));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// Checks that two snapshots are identical, naming the differences.
pub fn assert_same_files(before: &BTreeMap<PathBuf, Vec<u8>>, after: &BTreeMap<PathBuf, Vec<u8>>) {
    let removed: Vec<&PathBuf> = before.keys().filter(|p| !after.contains_key(*p)).collect();
    let added: Vec<&PathBuf> = after.keys().filter(|p| !before.contains_key(*p)).collect();
    let changed: Vec<&PathBuf> = before
        .iter()
        .filter(|(p, bytes)| after.get(*p).is_some_and(|b| b != *bytes))
        .map(|(p, _)| p)
        .collect();
    assert!(
        removed.is_empty() && added.is_empty() && changed.is_empty(),
        "files removed: {removed:?}, added: {added:?}, changed: {changed:?}"
    );
}

/// A [`RealFs`] that makes the background segment preallocator lose every race: its creation
/// of a file completes (the file exists) but does not return until another thread has tried
/// to create the same file too, or `patience` has passed. Deterministically reproduces a
/// writer rolling into a segment the preallocator is still preparing.
#[derive(Debug)]
pub struct SlowPreallocFs {
    inner: RealFs,
    attempted: Mutex<HashSet<PathBuf>>,
    changed: Condvar,
    patience: Duration,
}

impl SlowPreallocFs {
    /// A file system whose preallocator waits up to `patience` for a competing creation.
    pub fn new(patience: Duration) -> Self {
        SlowPreallocFs {
            inner: RealFs,
            attempted: Mutex::new(HashSet::new()),
            changed: Condvar::new(),
            patience,
        }
    }
}

impl FileSystem for SlowPreallocFs {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        self.inner.create_dir_all(path)
    }
    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        self.inner.list_dir(path)
    }
    fn exists(&self, path: &Path) -> bool {
        self.inner.exists(path)
    }
    fn file_len(&self, path: &Path) -> io::Result<u64> {
        self.inner.file_len(path)
    }
    fn open_mapped(&self, path: &Path, mode: OpenMode) -> io::Result<Box<dyn MappedFile>> {
        if !matches!(mode, OpenMode::Create { .. }) {
            return self.inner.open_mapped(path, mode);
        }
        let prealloc = std::thread::current().name() == Some("delaystore-prealloc");
        if prealloc {
            let result = self.inner.open_mapped(path, mode);
            let deadline = Instant::now() + self.patience;
            let mut attempted = self.attempted.lock().unwrap();
            while !attempted.contains(path) {
                let now = Instant::now();
                if now >= deadline {
                    break;
                }
                attempted = self
                    .changed
                    .wait_timeout(attempted, deadline - now)
                    .unwrap()
                    .0;
            }
            result
        } else {
            self.attempted.lock().unwrap().insert(path.to_path_buf());
            self.changed.notify_all();
            self.inner.open_mapped(path, mode)
        }
    }
    fn open_slots(&self, path: &Path, len_bytes: u64) -> io::Result<Box<dyn SlotFile>> {
        self.inner.open_slots(path, len_bytes)
    }
    fn read_file(&self, path: &Path) -> io::Result<Vec<u8>> {
        self.inner.read_file(path)
    }
    fn write_file_synced(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        self.inner.write_file_synced(path, bytes)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.inner.rename(from, to)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.inner.remove_file(path)
    }
    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        self.inner.sync_dir(path)
    }
    fn try_lock(&self, path: &Path) -> io::Result<Option<Box<dyn LockGuard>>> {
        self.inner.try_lock(path)
    }
}
