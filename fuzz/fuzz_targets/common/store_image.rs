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
//! elsewhere, or anywhere), consumer offsets and stray files. With flag `0x20` the records may
//! also be messages with arbitrary delays (indexed in timer slot queues), hops, cancels and
//! discards naming earlier records, and decision files are written (slots naming the cancel and
//! delivery records, or anything).

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
use delaystore::decisions::{DECISIONS_DIR, DECISION_FILE_SLOTS};
use delaystore::io::{FileSystem, SimFs};
use delaystore::meta::{StoreMeta, META_FILE};
use delaystore::naming::offset_file_name;
use delaystore::timer::{hop_slot, release_ms, slot_for};
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
/// Arbitrary delays a timer message may carry (0: due at its put, so not in a timer slot).
const TIMER_DELAYS_MS: [u64; 6] = [0, 1, 40, 3_000, 90_000, 3_600_000];

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
    /// Delivered counts per timed queue id (from delivery, hop and discard records).
    cursors: BTreeMap<u16, u64>,
    /// Whether records may be timer messages, hops, cancels and discards (flag `0x20`).
    timer: bool,
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
    let mut image = Image {
        timer: flags & 0x20 != 0,
        ..Image::default()
    };

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
    if image.timer {
        for _ in 0..input.u8() % 3 {
            decision_file(fs, input, &image);
        }
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

/// A message or delivery record at log offset `at`, with a valid CRC and fuzzed fields (with
/// flag `0x20`, also a timer message, a hop, a cancel or a discard).
fn record(input: &mut Reader<'_>, image: &mut Image, at: u64) -> Vec<u8> {
    if image.timer {
        match input.u8() % 5 {
            1 => return timer_message(input, image, at),
            2 => return control(input, image, at, RecordKind::Hop),
            3 => return control(input, image, at, RecordKind::Cancel),
            4 => return control(input, image, at, RecordKind::Discard),
            _ => {}
        }
    }
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
            let delivered = image.cursors.entry(u16::from(delay_level)).or_default();
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
        .map(|_| {
            let id = if image.timer && input.bool() {
                256 + u16::from(input.u8())
            } else {
                u16::from(input.u8() % 4)
            };
            (id, u64::from(input.u8() % 8))
        })
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
        cursors: image.cursors.iter().map(|(k, v)| (*k, *v)).collect(),
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
    Entry {
        log_offset: record.log_offset,
        record_bytes: record.total_bytes,
        time_ms: match record.target {
            Some(QueueKey::DelayLevel(_)) => record.due_ms,
            Some(QueueKey::TimerSlot(slot)) => release_ms(record.due_ms, slot),
            _ => record.store_ms,
        },
    }
}

/// Seals `fields` at `at` and notes the record.
fn seal(
    image: &mut Image,
    at: u64,
    fields: &MessageFields<'_>,
    placement: Placement,
    target: Option<QueueKey>,
) -> Vec<u8> {
    let mut encoded = encode_message(fields).expect("a small record encodes");
    let bytes = encoded.seal(placement).to_vec();
    image.records.push(Written {
        log_offset: at,
        total_bytes: u32::try_from(bytes.len()).expect("small record"),
        target,
        queue_offset: placement.queue_offset,
        store_ms: placement.store_ms,
        due_ms: placement.due_ms,
    });
    bytes
}

/// The next queue offset of `target` (as a well-behaved writer assigns it), or a fuzzed one.
fn next_offset(input: &mut Reader<'_>, image: &mut Image, target: &QueueKey) -> u64 {
    if input.u8().is_multiple_of(8) {
        return u64::from(input.u16());
    }
    let next = image.counters.entry(target.clone()).or_default();
    *next += 1;
    *next - 1
}

/// A message with an arbitrary delay, indexed in the timer slot its due and store times select.
fn timer_message(input: &mut Reader<'_>, image: &mut Image, at: u64) -> Vec<u8> {
    let topic = input.pick(&["orders", "audit", "orders", "../escape"]);
    let queue_id = u32::from(input.u8() % 3);
    let store_ms = BASE_MS + u64::from(input.u8()) * 100;
    let due_ms = if input.u8().is_multiple_of(8) {
        input.u64()
    } else {
        store_ms + input.pick(&TIMER_DELAYS_MS)
    };
    let target = match slot_for(due_ms, store_ms) {
        Some(slot) => QueueKey::TimerSlot(slot),
        None => QueueKey::Topic {
            topic: topic.to_owned(),
            queue_id,
        },
    };
    let queue_offset = next_offset(input, image, &target);
    let n = usize::from(input.u8());
    let body = input.bytes(n).to_vec();
    let fields = MessageFields {
        kind: RecordKind::Message,
        topic,
        queue_id,
        key: "",
        properties: &[],
        body: &body,
        delay_level: 0,
    };
    let placement = Placement {
        queue_id,
        log_offset: at,
        store_ms,
        due_ms,
        queue_offset,
    };
    seal(image, at, &fields, placement, Some(target))
}

/// The timed queue a record is indexed in, if any.
fn timed_queue(record: &Written) -> Option<TimedQueue> {
    match record.target {
        Some(QueueKey::DelayLevel(level)) => Some(TimedQueue::Level(level)),
        Some(QueueKey::TimerSlot(slot)) => Some(TimedQueue::TimerSlot(slot)),
        _ => None,
    }
}

/// An origin: an earlier record in a timed queue (as the store would name it), or anything.
fn origin_ref(input: &mut Reader<'_>, image: &Image) -> OriginRef {
    let timed: Vec<&Written> = image
        .records
        .iter()
        .filter(|r| timed_queue(r).is_some())
        .collect();
    let any_queue = |input: &mut Reader<'_>| {
        TimedQueue::from_id(input.u16() % 512).unwrap_or(TimedQueue::Level(1))
    };
    match timed.len() {
        n if n > 0 && !input.u8().is_multiple_of(4) => {
            let origin = timed[usize::from(input.u8()) % n];
            let queue = timed_queue(origin).unwrap_or(TimedQueue::Level(1));
            OriginRef {
                log_offset: origin.log_offset,
                record_bytes: origin.total_bytes,
                source: queue,
                source_offset: origin.queue_offset,
                first: queue,
                first_offset: origin.queue_offset,
            }
        }
        _ => OriginRef {
            log_offset: u64::from(input.u32()),
            record_bytes: input.u32(),
            source: any_queue(input),
            source_offset: u64::from(input.u16()),
            first: any_queue(input),
            first_offset: u64::from(input.u16()),
        },
    }
}

/// A hop, cancel or discard naming an origin.
fn control(input: &mut Reader<'_>, image: &mut Image, at: u64, kind: RecordKind) -> Vec<u8> {
    let origin = origin_ref(input, image);
    let store_ms = BASE_MS + u64::from(input.u8()) * 100;
    let (due_ms, queue_id, target) = match kind {
        RecordKind::Hop => {
            let due_ms = image
                .records
                .iter()
                .find(|r| r.log_offset == origin.log_offset)
                .map_or(store_ms + 1 + u64::from(input.u16()), |r| r.due_ms.max(1));
            let slot = if input.u8().is_multiple_of(8) {
                input.u8()
            } else {
                hop_slot(due_ms, store_ms)
            };
            (due_ms, u32::from(slot), Some(QueueKey::TimerSlot(slot)))
        }
        _ => (0, 0, None),
    };
    let queue_offset = match &target {
        Some(target) => next_offset(input, image, target),
        None => 0,
    };
    if kind != RecordKind::Cancel {
        let delivered = image.cursors.entry(origin.source.to_id()).or_default();
        *delivered = (*delivered).max(origin.source_offset.saturating_add(1));
    }
    let body = origin.encode();
    let fields = MessageFields {
        kind,
        topic: "",
        queue_id: 0,
        key: "",
        properties: &[],
        body: &body,
        delay_level: 0,
    };
    let placement = Placement {
        queue_id,
        log_offset: at,
        store_ms,
        due_ms,
        queue_offset,
    };
    seal(image, at, &fields, placement, target)
}

/// A decision file: slots naming the image's records as delivered or cancelled, or anything.
fn decision_file(fs: &SimFs, input: &mut Reader<'_>, image: &Image) {
    let queues: Vec<u16> = image
        .records
        .iter()
        .filter_map(timed_queue)
        .map(TimedQueue::to_id)
        .collect();
    let id = match queues.len() {
        n if n > 0 && input.bool() => queues[usize::from(input.u8()) % n],
        _ => input.u16() % 520,
    };
    let first = if input.u8().is_multiple_of(8) {
        DECISION_FILE_SLOTS
    } else {
        0
    };
    let mut bytes = Vec::new();
    for _ in 0..input.u8() % 16 {
        let record = match image.records.len() {
            0 => None,
            n => image.records.get(usize::from(input.u8()) % n),
        };
        let slot = match (input.u8() % 4, record) {
            (0, Some(record)) => 2 << 62 | record.log_offset,
            (1, Some(record)) => 1 << 62 | record.log_offset,
            (2, _) => input.u64(),
            _ => 0,
        };
        bytes.extend_from_slice(&slot.to_le_bytes());
    }
    if !input.u8().is_multiple_of(4) {
        let full = usize::try_from(DECISION_FILE_SLOTS * 8).expect("fits");
        bytes.resize(full.max(bytes.len()), 0);
    }
    let path = Path::new(STORE_DIR)
        .join(DECISIONS_DIR)
        .join(id.to_string())
        .join(offset_file_name(first));
    write(fs, &path, &bytes);
}
