//! `store_image`: a store directory built from the input, opened with `Store::open`. The open
//! must return `Ok` or `Err`, never panic or hang; if it opens, due delayed messages get a
//! moment to be delivered, every queue of every topic it lists is pulled to its end (optionally
//! two messages are put and pulled), and the store is closed. Every queue the store lists must
//! have a valid topic name, and the store must create no file outside its directory.
//!
//! The input describes the image, structure-aware so that CRCs are right and the fuzzer
//! reaches recovery's logic rather than its checksum checks (see [`build`]): optional meta,
//! up to three commit-log segments written by a little program (raw bytes, records with valid
//! CRCs and fuzzed fields, fillers, gaps, damage), an optional checkpoint (raw, fuzzed fields,
//! or consistent with the records), consume-queue files (entries that point at the records,
//! elsewhere, or anywhere), consumer offsets and stray files.

use std::collections::BTreeMap;
use std::path::Path;

use delaystore::checkpoint::{Checkpoint, CHECKPOINT_FILE};
use delaystore::commit_log::preallocate::PREPARING_SUFFIX;
use delaystore::commit_log::record::{
    encode_filler, encode_message, encode_properties, MessageFields, OriginRef, Placement,
    RecordKind, HEADER_BYTES,
};
use delaystore::commit_log::COMMIT_LOG_DIR;
use delaystore::consume_queue::entry::{Entry, ENTRY_BYTES};
use delaystore::consume_queue::{queue_dir, QueueKey, TimedQueue};
use delaystore::consumer_offsets::{encode_offsets, OFFSETS_FILE};
use delaystore::io::{FileSystem, SimFs};
use delaystore::meta::{StoreMeta, META_FILE};
use delaystore::naming::offset_file_name;
use delaystore::{Clock, ManualClock, Message, Store};

use super::image::{
    assert_contained, list_files, options, pull_everything, settle_deliveries, QUEUE_FILE_ENTRIES,
    SEGMENT_BYTES, STORE_DIR,
};
use super::reader::Reader;

/// Store time of the records (ms); the clock starts near it.
const BASE_MS: u64 = 1_700_000_000_000;
/// Delays of the levels of [`super::image::DELAY_LEVELS`].
const LEVEL_DELAYS_MS: [u64; 3] = [1_000, 5_000, 10_000];
/// Topic names a record may carry: valid ones, and names `validate_topic` would refuse.
const TOPICS: [&str; 10] = [
    "orders",
    "audit",
    "orders",
    "t",
    "",
    "__delay",
    "..",
    "a/b",
    "../escape",
    "/abs",
];
const KEYS: [&str; 3] = ["", "k1", "order-17"];

/// A record written into the image.
#[derive(Debug, Clone)]
struct Written {
    log_offset: u64,
    total_bytes: u32,
    target: Option<QueueKey>,
    queue_offset: u64,
    store_ms: u64,
    due_ms: u64,
}

#[derive(Debug, Default)]
struct Image {
    records: Vec<Written>,
    /// Next queue offset of every queue, as a well-behaved writer would assign it.
    counters: BTreeMap<QueueKey, u64>,
    /// Delivered counts per level (from delivery records).
    cursors: BTreeMap<u8, u64>,
    /// Record starts and ends, segment starts and ends: candidate checkpoint offsets.
    boundaries: Vec<u64>,
}

/// The check.
pub fn check(data: &[u8]) {
    let mut input = Reader::new(data);
    let fs = SimFs::new();
    let flags = input.u8();
    build(&fs, &mut input, flags);
    let before = list_files(&fs, Path::new("/"));
    let clock = ManualClock::new(BASE_MS + u64::from(input.u8()) * 500);
    let mut options = options(&fs, &clock);
    if flags & 0x40 != 0 {
        // Keep what the meta file says (queue counts, delay table) instead of overriding it.
        options.default_queue_count = None;
        options.delay_levels = None;
    }
    if let Ok(store) = Store::open(STORE_DIR, options) {
        settle_deliveries(&store, clock.now_ms());
        pull_everything(&store, |_, _, _| {});
        if flags & 0x80 != 0 {
            let _ = store.put(&Message::new("orders", "after open"));
            let _ = store.put(&Message::new("orders", "later").with_delay_level(1));
            clock.advance_ms(2_000);
            pull_everything(&store, |_, _, _| {});
        }
        let _ = store.close();
    }
    assert_contained(&fs, &before);
}

/// Writes the image the input describes under [`STORE_DIR`].
pub fn build(fs: &SimFs, input: &mut Reader<'_>, flags: u8) {
    let dir = Path::new(STORE_DIR);
    let log_dir = dir.join(COMMIT_LOG_DIR);
    fs.create_dir_all(&log_dir)
        .expect("create the log directory");
    let mut image = Image::default();

    if flags & 1 != 0 {
        let mut topic_queue_counts = BTreeMap::new();
        if input.bool() {
            topic_queue_counts.insert("orders".to_owned(), u32::from(input.u8() % 4));
        }
        let levels = usize::from(input.u8() % 4);
        let meta = StoreMeta {
            default_queue_count: u32::from(input.u8() % 4),
            topic_queue_counts,
            delay_levels_ms: (0..levels).map(|_| u64::from(input.u16())).collect(),
            segment_bytes: input.bool().then(|| u64::from(input.u32())),
        };
        write(fs, &dir.join(META_FILE), &meta.encode());
    }

    let segment_count = input.u8() % 4;
    let mut base = 0u64;
    for _ in 0..segment_count {
        let len = match input.u8() % 8 {
            0 => u64::from(input.u16()),
            _ => SEGMENT_BYTES,
        };
        if flags & 2 != 0 && input.u8().is_multiple_of(4) {
            // A gap (or an overlap) between segments.
            base = base.wrapping_add(u64::from(input.u16())).wrapping_sub(1024);
        }
        let bytes = segment(input, &mut image, base, len);
        write(fs, &log_dir.join(offset_file_name(base)), &bytes);
        image.boundaries.push(base);
        base = base.wrapping_add(len);
        image.boundaries.push(base);
    }
    if flags & 4 != 0 {
        let name = format!("{}{PREPARING_SUFFIX}", offset_file_name(base));
        write(fs, &log_dir.join(name), input.short_bytes(256));
    }

    let checkpoint = match input.u8() % 4 {
        1 => Some(input.short_bytes(256).to_vec()),
        2 => Some(fuzzed_checkpoint(input, &image).encode()),
        3 => Some(consistent_checkpoint(input, &image).encode()),
        _ => None,
    };
    if let Some(bytes) = checkpoint {
        write(fs, &dir.join(CHECKPOINT_FILE), &bytes);
    }
    if flags & 8 != 0 {
        write(fs, &dir.join("checkpoint.tmp"), input.bytes(64));
    }

    for _ in 0..input.u8() % 5 {
        queue_file(fs, input, &image);
    }

    if flags & 16 != 0 {
        let mut table = BTreeMap::new();
        for _ in 0..input.u8() % 4 {
            let topic = input.pick(&TOPICS).to_owned();
            let queue = u32::from(input.u8() % 3);
            table.insert(("g".to_owned(), topic, queue), u64::from(input.u8()));
        }
        write(fs, &dir.join(OFFSETS_FILE), &encode_offsets(&table));
    }
}

fn write(fs: &SimFs, path: &Path, bytes: &[u8]) {
    if let Some(parent) = path.parent() {
        fs.create_dir_all(parent).expect("create a directory");
    }
    fs.write_file_synced(path, bytes).expect("write a file");
}

/// One segment of `len` bytes at log offset `base`, written by a little program.
fn segment(input: &mut Reader<'_>, image: &mut Image, base: u64, len: u64) -> Vec<u8> {
    let len = usize::try_from(len).expect("segment length fits usize");
    let mut bytes = vec![0u8; len];
    let mut pos = 0usize;
    for _ in 0..64 {
        if input.is_empty() {
            break;
        }
        match input.u8() % 8 {
            0 => break,
            1 => {
                let n = usize::from(input.u8());
                let raw = input.bytes(n);
                put(&mut bytes, pos, raw);
                pos += raw.len();
            }
            2..=4 => {
                let at = base.wrapping_add(pos as u64);
                let record = record(input, image, at);
                put(&mut bytes, pos, &record);
                image.boundaries.push(at);
                pos += record.len();
                image.boundaries.push(base.wrapping_add(pos as u64));
            }
            5 => {
                let remaining = len.saturating_sub(pos);
                let total = if input.bool() {
                    input.u32()
                } else {
                    u32::try_from(remaining).unwrap_or(u32::MAX)
                };
                let store_ms = BASE_MS + u64::from(input.u8());
                let filler = encode_filler(base.wrapping_add(pos as u64), total, store_ms);
                put(&mut bytes, pos, &filler);
                pos = pos.saturating_add(remaining.max(HEADER_BYTES));
            }
            6 => pos = pos.saturating_add(usize::from(input.u16() % 4096)),
            _ => {
                if pos > 0 {
                    let at = usize::from(input.u16()) % pos.min(len).max(1);
                    if let Some(byte) = bytes.get_mut(at) {
                        *byte ^= input.u8().max(1);
                    }
                }
            }
        }
        if pos >= len {
            break;
        }
    }
    bytes
}

/// Copies as much of `src` as fits at `at`.
fn put(dst: &mut [u8], at: usize, src: &[u8]) {
    if at < dst.len() {
        let n = src.len().min(dst.len() - at);
        dst[at..at + n].copy_from_slice(&src[..n]);
    }
}

/// A message or delivery record at log offset `at`, with a valid CRC and fuzzed fields.
fn record(input: &mut Reader<'_>, image: &mut Image, at: u64) -> Vec<u8> {
    let sel = input.u8();
    let kind = if sel & 1 == 0 {
        RecordKind::Message
    } else {
        RecordKind::Delivery
    };
    let topic = input.pick(&TOPICS);
    let queue_id = if sel & 2 == 0 {
        u32::from(input.u8() % 3)
    } else {
        input.u32()
    };
    let mut properties = Vec::new();
    let mut key = "";
    let mut body = Vec::new();
    let delay_level;
    let mut due_ms = 0;
    let store_ms = BASE_MS + u64::from(input.u8()) * 100;
    match kind {
        RecordKind::Delivery => {
            delay_level = 1 + input.u8() % 3;
            let origin = match image.records.len() {
                0 => None,
                n => image.records.get(usize::from(input.u8()) % n).cloned(),
            };
            let origin = match (origin, sel & 4 != 0) {
                (Some(origin), false) => {
                    due_ms = origin.due_ms;
                    let level = TimedQueue::Level(delay_level);
                    OriginRef {
                        log_offset: origin.log_offset,
                        record_bytes: origin.total_bytes,
                        source: level,
                        source_offset: origin.queue_offset,
                        first: level,
                        first_offset: origin.queue_offset,
                    }
                }
                _ => OriginRef {
                    log_offset: u64::from(input.u32()),
                    record_bytes: input.u32(),
                    source: TimedQueue::Level(delay_level),
                    source_offset: input.u64(),
                    first: TimedQueue::Level(delay_level),
                    first_offset: input.u64(),
                },
            };
            let delivered = image.cursors.entry(delay_level).or_default();
            *delivered = (*delivered).max(origin.source_offset.saturating_add(1));
            body.extend_from_slice(&origin.encode());
        }
        _ => {
            delay_level = if sel & 4 != 0 { input.u8() % 5 } else { 0 };
            if delay_level > 0 {
                let delay = LEVEL_DELAYS_MS
                    .get(usize::from(delay_level) - 1)
                    .copied()
                    .unwrap_or(1);
                due_ms = store_ms + delay;
            }
            if sel & 8 != 0 {
                key = input.pick(&KEYS);
            }
            if sel & 16 != 0 {
                properties = if input.bool() {
                    encode_properties(&[("p".to_owned(), "v".to_owned())]).expect("properties")
                } else {
                    input.short_bytes(16).to_vec()
                };
            }
            let n = usize::from(input.u8());
            body.extend_from_slice(input.bytes(n));
        }
    }
    let target = match (kind, delay_level) {
        (RecordKind::Message, 1..) => QueueKey::DelayLevel(delay_level),
        _ => QueueKey::Topic {
            topic: topic.to_owned(),
            queue_id,
        },
    };
    let next = image.counters.entry(target.clone()).or_default();
    let queue_offset = if sel & 32 == 0 {
        *next += 1;
        *next - 1
    } else {
        u64::from(input.u16())
    };
    if sel & 64 != 0 {
        due_ms = input.u64();
    }
    let log_offset = if sel & 128 != 0 {
        at.wrapping_add(u64::from(input.u8())).wrapping_sub(128)
    } else {
        at
    };
    let fields = MessageFields {
        kind,
        topic,
        queue_id,
        key,
        properties: &properties,
        body: &body,
        delay_level,
    };
    let mut encoded = encode_message(&fields).expect("a small record encodes");
    let bytes = encoded
        .seal(Placement {
            queue_id,
            log_offset,
            store_ms,
            due_ms,
            queue_offset,
        })
        .to_vec();
    image.records.push(Written {
        log_offset: at,
        total_bytes: u32::try_from(bytes.len()).expect("small record"),
        target: Some(target),
        queue_offset,
        store_ms,
        due_ms,
    });
    bytes
}

/// A boundary the image has (or, rarely, any offset).
fn boundary(input: &mut Reader<'_>, image: &Image) -> u64 {
    let pick = input.u8();
    if pick == u8::MAX || image.boundaries.is_empty() {
        return input.u64();
    }
    image.boundaries[usize::from(pick) % image.boundaries.len()]
}

/// A queue key: one the records use, or one of a few others.
fn queue_key(input: &mut Reader<'_>, image: &Image) -> QueueKey {
    let pick = usize::from(input.u8());
    if let Some(key) = image.counters.keys().nth(pick % 8) {
        return key.clone();
    }
    match pick % 4 {
        0 => QueueKey::DelayLevel(input.u8() % 5),
        1 | 2 => QueueKey::Topic {
            topic: input.pick(&TOPICS).to_owned(),
            queue_id: u32::from(input.u8() % 3),
        },
        _ => QueueKey::Topic {
            topic: input.pick(&TOPICS).to_owned(),
            queue_id: input.u32(),
        },
    }
}

fn fuzzed_checkpoint(input: &mut Reader<'_>, image: &Image) -> Checkpoint {
    let log_end_offset = boundary(input, image);
    let last_record_offset = boundary(input, image);
    let clean_shutdown = input.bool();
    let queue_counts = (0..input.u8() % 4)
        .map(|_| (queue_key(input, image), u64::from(input.u8() % 80)))
        .collect();
    let cursors = (0..input.u8() % 3)
        .map(|_| (u16::from(input.u8() % 4), u64::from(input.u8() % 8)))
        .collect();
    Checkpoint {
        log_end_offset,
        last_record_offset,
        written_ms: BASE_MS,
        clean_shutdown,
        queue_counts,
        cursors,
        segment_refs: Vec::new(),
    }
}

/// The checkpoint a well-behaved store would write after the records: ends after the last,
/// with the counts and cursors they imply.
fn consistent_checkpoint(input: &mut Reader<'_>, image: &Image) -> Checkpoint {
    let (log_end_offset, last_record_offset) = image.records.last().map_or((0, 0), |r| {
        (
            r.log_offset.wrapping_add(u64::from(r.total_bytes)),
            r.log_offset,
        )
    });
    Checkpoint {
        log_end_offset,
        last_record_offset,
        written_ms: BASE_MS,
        clean_shutdown: input.bool(),
        queue_counts: image
            .counters
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect(),
        cursors: image
            .cursors
            .iter()
            .map(|(k, v)| (u16::from(*k), *v))
            .collect(),
        segment_refs: Vec::new(),
    }
}

/// One consume-queue file with entries that point at the image's records or anywhere.
fn queue_file(fs: &SimFs, input: &mut Reader<'_>, image: &Image) {
    let key = queue_key(input, image);
    let first_entry = u64::from(input.u8() % 3) * QUEUE_FILE_ENTRIES;
    let count = u64::from(input.u8()) % (QUEUE_FILE_ENTRIES + 6);
    let mut bytes = Vec::new();
    for index in first_entry..first_entry + count {
        let own = image
            .records
            .iter()
            .find(|r| r.target.as_ref() == Some(&key) && r.queue_offset == index);
        let entry = match input.u8() % 4 {
            0 | 1 if own.is_some() => own.map(entry_of),
            0..=2 if !image.records.is_empty() => image
                .records
                .get(usize::from(input.u8()) % image.records.len())
                .map(entry_of),
            _ => None,
        }
        .unwrap_or_else(|| Entry {
            log_offset: u64::from(input.u32()),
            record_bytes: input.u32(),
            time_ms: input.u64(),
        });
        bytes.extend_from_slice(&entry.encode());
    }
    let len = match input.u8() % 8 {
        0 => bytes.len() + usize::from(input.u8() % 20),
        _ => (QUEUE_FILE_ENTRIES as usize) * ENTRY_BYTES,
    };
    bytes.resize(len.max(bytes.len()), 0);
    let path = queue_dir(Path::new(STORE_DIR), key.as_ref()).join(offset_file_name(first_entry));
    write(fs, &path, &bytes);
}

fn entry_of(record: &Written) -> Entry {
    let in_level_queue = matches!(record.target, Some(QueueKey::DelayLevel(_)));
    Entry {
        log_offset: record.log_offset,
        record_bytes: record.total_bytes,
        time_ms: if in_level_queue {
            record.due_ms
        } else {
            record.store_ms
        },
    }
}
