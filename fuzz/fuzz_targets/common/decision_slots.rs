//! `decision_slots`: the clean base image of `image_mutation` (level and timer messages,
//! deliveries, cancels: one consumed by a discard, three still pending; their decision files),
//! with one decision file replaced by the input, or overlaid with it (xor), then opened with
//! the clock 100 s on (everything due but the 1 h timer messages), and delivery waited for.
//! Never a panic or a hang; every message pulled was put, in the queue it was pulled from,
//! once, never early (`image_mutation::check_pulled`); decision slots are derived state, so
//! every due message that was not cancelled is delivered; a cancelled message is delivered only
//! if its own slot was damaged (a known gap, `docs/testing.md` §8: the slot is the only thing
//! delivery consults about a cancel; anything else is a new bug).
//!
//! Input: `file u8` (index into the image's sorted decision files), `mode u8` (even: replace
//! the file with the rest of the input; odd: xor the rest over the start of the file), then
//! the bytes.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use delaystore::commit_log::record::{decode_header, decode_record, OriginRef, RecordKind};
use delaystore::commit_log::COMMIT_LOG_DIR;
use delaystore::decisions::{DECISIONS_DIR, DECISION_FILE_SLOTS};
use delaystore::io::FileSystem;
use delaystore::naming::{offset_file_name, parse_offset_file_name};
use delaystore::{Clock, ManualClock, Store};

use super::image::{list_files, options, pull_everything, STORE_DIR};
use super::image_mutation::{bases, check_pulled};
use super::reader::Reader;

/// How far the clock moves past the image: the 90 s timer messages fall due.
const ADVANCE_MS: u64 = 100_000;
const SLOT_BYTES: usize = 8;

/// What the clean base image's log says.
struct Facts {
    /// Due time of every message (0: not delayed), by body.
    due_ms: HashMap<Vec<u8>, u64>,
    /// The decision slot of every cancelled message (file, slot index in it), by body.
    cancelled_slot: HashMap<Vec<u8>, (PathBuf, usize)>,
}

fn facts() -> &'static Facts {
    static FACTS: OnceLock<Facts> = OnceLock::new();
    FACTS.get_or_init(|| {
        let fs = &bases()[0].fs;
        let log_dir = Path::new(STORE_DIR).join(COMMIT_LOG_DIR);
        let mut segments: Vec<(u64, PathBuf)> = fs
            .list_dir(&log_dir)
            .expect("list the log")
            .into_iter()
            .filter_map(|name| parse_offset_file_name(&name).map(|base| (base, log_dir.join(name))))
            .collect();
        segments.sort();
        let mut due_ms = HashMap::new();
        let mut body_at = HashMap::new();
        let mut cancels = Vec::new();
        for (base, path) in segments {
            let bytes = fs.read_raw(&path).expect("read a segment");
            let mut at = 0usize;
            while let Some(rest) = bytes.get(at..) {
                let log_offset = base + at as u64;
                let Ok(header) = decode_header(rest, log_offset) else {
                    break;
                };
                let end = at + header.total_bytes as usize;
                let record = decode_record(&bytes[at..end], log_offset).expect("a valid record");
                match header.kind {
                    RecordKind::Message => {
                        due_ms.insert(record.body.to_vec(), header.due_ms);
                        body_at.insert(log_offset, record.body.to_vec());
                    }
                    RecordKind::Cancel => {
                        cancels.push(OriginRef::decode(record.body).expect("an origin"));
                    }
                    _ => {}
                }
                at = end;
            }
        }
        let cancelled_slot = cancels
            .into_iter()
            .map(|origin| {
                let first = origin.first_offset - origin.first_offset % DECISION_FILE_SLOTS;
                let file = Path::new(STORE_DIR)
                    .join(DECISIONS_DIR)
                    .join(origin.first.to_id().to_string())
                    .join(offset_file_name(first));
                let slot = (origin.first_offset - first) as usize;
                (body_at[&origin.log_offset].clone(), (file, slot))
            })
            .collect();
        Facts {
            due_ms,
            cancelled_slot,
        }
    })
}

/// The check.
pub fn check(data: &[u8]) {
    let base = &bases()[0];
    let facts = facts();
    let fs = base.fs.process_crash();
    let files: Vec<PathBuf> = list_files(&fs, &Path::new(STORE_DIR).join(DECISIONS_DIR));
    let mut input = Reader::new(data);
    let path = files[usize::from(input.u8()) % files.len()].clone();
    let overlay = input.u8() % 2 == 1;
    let bytes = input.rest();
    let original = fs.read_raw(&path).expect("read a decision file");
    let damaged = if overlay {
        let mut out = original.clone();
        for (byte, x) in out.iter_mut().zip(bytes) {
            *byte ^= x;
        }
        out
    } else {
        bytes.to_vec()
    };
    fs.write_file_synced(&path, &damaged)
        .expect("write the decision file");
    // Slots that read differently now (a short file reads as zeros past its end).
    let slot_of = |file: &[u8], slot: usize| -> [u8; SLOT_BYTES] {
        let mut out = [0u8; SLOT_BYTES];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = file.get(slot * SLOT_BYTES + i).copied().unwrap_or(0);
        }
        out
    };
    let slot_damaged = |file: &Path, slot: usize| {
        file == path && slot_of(&original, slot) != slot_of(&damaged, slot)
    };

    let clock = ManualClock::new(base.now_ms + ADVANCE_MS);
    let Ok(store) = Store::open(STORE_DIR, options(&fs, &clock)) else {
        return;
    };
    wait_delivered(&store, clock.now_ms());
    check_pulled(&store, base, true);
    let mut seen = HashSet::new();
    pull_everything(&store, |_, _, message| {
        seen.insert(message.body.clone());
    });
    for (body, due_ms) in &facts.due_ms {
        match facts.cancelled_slot.get(body) {
            Some((file, slot)) => assert!(
                !seen.contains(body) || slot_damaged(file, *slot),
                "a cancelled message was delivered though its decision slot ({file:?} slot \
                 {slot}) is intact: {:?}",
                String::from_utf8_lossy(body)
            ),
            None => assert!(
                *due_ms > clock.now_ms() || seen.contains(body),
                "a due message was not delivered: {:?}",
                String::from_utf8_lossy(body)
            ),
        }
    }
    let _ = store.close();
}

/// Waits (bounded) until everything due is delivered, hopped on or discarded, and dispatched.
fn wait_delivered(store: &Store, now_ms: u64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let stats = store.stats();
        if stats.dispatched_end_offset >= stats.written_end_offset
            && stats.next_due_ms.is_none_or(|due| due > now_ms)
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "delivery did not finish: {stats:?}"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}
