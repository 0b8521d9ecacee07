//! Golden fixtures (STYLE.md habit 9): small store images of today's format (v2), committed
//! under `tests/fixtures/v2/`, that today's code must read, plus corrupt variants with the
//! outcome each must have. The v1 images of the previous format stay under `tests/fixtures/v1/`:
//! today's code must refuse each of them cleanly (`Error::UnsupportedVersion` from `meta`) and
//! leave every byte of it as it was. Each image directory holds the store (`store/`) and `manifest.json`: every
//! message put (id, topic, queue, key, properties, body, due time), the clock when the image
//! was made, and what was damaged.
//!
//! | image | how it was made | what opening it must do |
//! |---|---|---|
//! | `clean` | plain, keyed and delayed puts (some delivered), committed offsets, clean close | use the clean checkpoint, scan nothing, return every message |
//! | `crashed` | `clean` reopened, more puts and deliveries, then a process crash | use the checkpoint, scan the rest, return every message |
//! | `torn_tail` | `crashed` with the second half of its last record zeroed | cut the log before that record and report a torn tail; every other message |
//! | `bad_record_crc` | `clean` with one byte of a record's body flipped | open; `pull` of that message fails with `Error::Corruption`, every other message reads |
//! | `bad_checkpoint` | `crashed` with one byte of the checkpoint flipped | reject the checkpoint, scan the whole log, return every message |
//! | `missing_queue_file` | `clean` without the first file of a topic queue | rebuild that queue from the log, return every message |
//! | `timers_in_flight` | `clean` reopened, arbitrary delays (1.5 s to 9 min) put, the clock moved so that some hopped down the timer wheel and some were delivered, one cancelled, then a process crash | deliver every timer message at or after its due time once the clock passes it, never the cancelled one, and answer its cancel again with `Cancelled` |
//!
//! The images are made by the ignored test `regenerate_golden_fixtures` in this file, on the
//! simulated file system with a manual clock (so they come out the same every time):
//!
//! ```text
//! cargo test --release --test golden -- --ignored regenerate_golden_fixtures
//! ```
//!
//! It writes `v2/` only; the `v1/` images were made by the v1 build of the same test.
//!
//! A format change that today's code can no longer read shows up here first: either the new
//! code keeps reading these images (and new ones are added as `v2/`), or the version is bumped
//! on purpose and the images regenerated with the command above.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use delaystore::commit_log::record::{decode_header, HEADER_BYTES};
use delaystore::io::{FileSystem, RealFs, SimFs};
use delaystore::naming::parse_offset_file_name;
use delaystore::recovery::CheckpointUse;
use delaystore::{
    CancelOutcome, Error, ManualClock, Message, MessageId, Options, Store, StoredMessage,
};
use serde_json::{json, Value};

const SIM_DIR: &str = "/store";
const BASE_MS: u64 = 1_750_000_000_000;
const V1_IMAGES: [&str; 6] = [
    "clean",
    "crashed",
    "torn_tail",
    "bad_record_crc",
    "bad_checkpoint",
    "missing_queue_file",
];
const IMAGES: [&str; 7] = [
    "clean",
    "crashed",
    "torn_tail",
    "bad_record_crc",
    "bad_checkpoint",
    "missing_queue_file",
    "timers_in_flight",
];
/// The format the generator writes and the reader tests read.
const VERSION: &str = "v2";

fn fixtures_of(version: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(version)
}

fn fixtures() -> PathBuf {
    fixtures_of(VERSION)
}

fn options(fs: Arc<dyn FileSystem>, clock: &ManualClock) -> Options {
    Options {
        fs,
        clock: Arc::new(clock.clone()),
        segment_bytes: 64 * 1024,
        consume_queue_file_entries: 64,
        flush_interval_ms: 60_000,
        checkpoint_interval_ms: 600_000,
        delay_levels: Some("1s 5s".into()),
        default_queue_count: Some(2),
        ..Options::default()
    }
}

fn wait(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "{what} did not happen");
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn settle(store: &Store, now_ms: u64) {
    wait("dispatch", || {
        let s = store.stats();
        s.dispatched_end_offset >= s.written_end_offset
    });
    wait("delivery", || {
        store.stats().next_due_ms.is_none_or(|due| due > now_ms)
    });
    wait("dispatch", || {
        let s = store.stats();
        s.dispatched_end_offset >= s.written_end_offset
    });
}

// ---- Generator ----

fn put(store: &Store, manifest: &mut Vec<Value>, message: Message) {
    let receipt = store.put(&message).unwrap();
    manifest.push(json!({
        "id": receipt.id.0,
        "topic": message.topic,
        "queue": receipt.queue,
        "key": message.key,
        "properties": message.properties.iter().map(|(k, v)| json!([k, v])).collect::<Vec<_>>(),
        "body": String::from_utf8(message.body.clone()).unwrap(),
        "due_ms": receipt.due_ms,
    }));
}

fn messages(store: &Store, manifest: &mut Vec<Value>, from: usize, count: usize) {
    for i in from..from + count {
        let topic = ["orders", "audit"][i % 2];
        let mut message =
            Message::new(topic, format!("golden-{i:03}-{}", "g".repeat(i * 29 % 300)));
        if i % 3 != 0 {
            message = message.with_key(format!("key-{}", i % 5));
        }
        if i % 4 == 0 {
            message = message.with_property("trace", format!("t{i}"));
        }
        message = message.with_delay_level([0, 0, 1, 0, 2][i % 5]);
        put(store, manifest, message);
    }
}

fn write_image(name: &str, fs: &SimFs, manifest: &[Value], now_ms: u64, damage: Value) {
    let root = fixtures().join(name);
    if root.exists() {
        std::fs::remove_dir_all(&root).unwrap();
    }
    std::fs::create_dir_all(&root).unwrap();
    fs.export(&root).unwrap();
    let lock = root.join("store/LOCK");
    if lock.exists() {
        std::fs::remove_file(lock).unwrap();
    }
    let manifest = json!({
        "format": "delaystore store image, format v2 (meta and checkpoint version 2)",
        "regenerate": "cargo test --release --test golden -- --ignored regenerate_golden_fixtures",
        "now_ms": now_ms,
        "damage": damage,
        "messages": manifest,
    });
    std::fs::write(
        root.join("manifest.json"),
        serde_json::to_string_pretty(&manifest).unwrap() + "\n",
    )
    .unwrap();
}

fn segments(fs: &SimFs) -> Vec<(u64, PathBuf)> {
    let dir = Path::new(SIM_DIR).join("commitlog");
    let mut out: Vec<(u64, PathBuf)> = fs
        .list_dir(&dir)
        .unwrap()
        .into_iter()
        .filter_map(|n| parse_offset_file_name(&n).map(|b| (b, dir.join(n))))
        .collect();
    out.sort();
    out
}

/// (segment path, offset in it, length) of the record at `log_offset`.
fn locate(fs: &SimFs, log_offset: u64) -> (PathBuf, usize, usize) {
    for (base, path) in segments(fs) {
        let bytes = fs.read_raw(&path).unwrap();
        if (base..base + bytes.len() as u64).contains(&log_offset) {
            let at = (log_offset - base) as usize;
            let header = decode_header(&bytes[at..at + HEADER_BYTES], log_offset).unwrap();
            return (path, at, header.total_bytes as usize);
        }
    }
    panic!("no segment holds {log_offset}");
}

fn patch(fs: &SimFs, path: &Path, f: impl FnOnce(&mut Vec<u8>)) {
    let mut bytes = fs.read_raw(path).unwrap();
    f(&mut bytes);
    fs.write_file_synced(path, &bytes).unwrap();
}

#[test]
#[ignore = "writes tests/fixtures/v2: run it on purpose to regenerate the golden images"]
fn regenerate_golden_fixtures() {
    // clean
    let fs = SimFs::new();
    let clock = ManualClock::new(BASE_MS);
    let store = Store::open(SIM_DIR, options(Arc::new(fs.clone()), &clock)).unwrap();
    let mut manifest = Vec::new();
    messages(&store, &mut manifest, 0, 40);
    settle(&store, BASE_MS);
    clock.advance_ms(1_200);
    settle(&store, BASE_MS + 1_200);
    store.commit_offset("golden-group", "orders", 0, 2).unwrap();
    store.close().unwrap();
    let clean_ms = BASE_MS + 1_200;
    write_image("clean", &fs, &manifest, clean_ms, Value::Null);

    // bad_record_crc: a body byte of a plain message in the middle.
    let victim = manifest[10]["id"].as_u64().unwrap();
    let damaged = fs.process_crash();
    let (path, at, len) = locate(&damaged, victim);
    patch(&damaged, &path, |b| b[at + len - 3] ^= 0x20);
    write_image(
        "bad_record_crc",
        &damaged,
        &manifest,
        clean_ms,
        json!({"corrupt_id": victim}),
    );

    // missing_queue_file
    let damaged = fs.process_crash();
    damaged
        .remove_file(&Path::new(SIM_DIR).join("consumequeue/orders/0/00000000000000000000"))
        .unwrap();
    write_image(
        "missing_queue_file",
        &damaged,
        &manifest,
        clean_ms,
        json!({"removed": "consumequeue/orders/0/00000000000000000000"}),
    );

    // crashed
    let fs = fs.process_crash();
    let store = Store::open(SIM_DIR, options(Arc::new(fs.clone()), &clock)).unwrap();
    messages(&store, &mut manifest, 40, 25);
    settle(&store, clean_ms);
    clock.advance_ms(1_200);
    settle(&store, clean_ms + 1_200);
    store.simulate_crash();
    let fs = fs.process_crash();
    let crashed_ms = clean_ms + 1_200;
    write_image("crashed", &fs, &manifest, crashed_ms, Value::Null);

    // bad_checkpoint
    let damaged = fs.process_crash();
    patch(&damaged, &Path::new(SIM_DIR).join("checkpoint"), |b| {
        b[20] ^= 0x01
    });
    write_image(
        "bad_checkpoint",
        &damaged,
        &manifest,
        crashed_ms,
        json!({"checkpoint_byte": 20}),
    );

    // torn_tail: the last record written (a delivery or a message) loses its second half.
    let damaged = fs.process_crash();
    let last = manifest.last().unwrap()["id"].as_u64().unwrap();
    let (path, at, len) = locate(&damaged, last);
    let base = segments(&damaged)
        .into_iter()
        .find(|(_, p)| *p == path)
        .unwrap()
        .0;
    let bytes = damaged.read_raw(&path).unwrap();
    // Deliveries may follow the last put: walk to the very last record.
    let (mut torn_at, mut end) = (at, at + len);
    while end + HEADER_BYTES <= bytes.len() {
        let Ok(header) = decode_header(&bytes[end..end + HEADER_BYTES], base + end as u64) else {
            break;
        };
        torn_at = end;
        end += header.total_bytes as usize;
    }
    patch(&damaged, &path, |b| b[(torn_at + end) / 2..end].fill(0));
    let torn_id = base + torn_at as u64;
    write_image(
        "torn_tail",
        &damaged,
        &manifest,
        crashed_ms,
        json!({"torn_log_offset": torn_id}),
    );

    // timers_in_flight: from the crashed image, arbitrary delays in every tier up to 3, some
    // hopping, some delivered, one cancelled, then a crash.
    let fs = fs.process_crash();
    let clock = ManualClock::new(crashed_ms);
    let store = Store::open(SIM_DIR, options(Arc::new(fs.clone()), &clock)).unwrap();
    let mut timers = Vec::new();
    for (i, delay_ms) in [
        1_500u64, 2_750, 40_000, 95_321, 300_007, 540_000, 33, 70_000,
    ]
    .into_iter()
    .enumerate()
    {
        let message = Message::new(["orders", "audit"][i % 2], format!("timer-{i}-{delay_ms}"))
            .with_key(format!("timer-key-{i}"))
            .with_delay_ms(delay_ms);
        put(&store, &mut timers, message);
    }
    settle(&store, crashed_ms);
    let cancelled = timers[4]["id"].as_u64().unwrap();
    assert_eq!(
        store.cancel(MessageId(cancelled)).unwrap(),
        CancelOutcome::Cancelled
    );
    // In steps, so the wheel hops messages down its tiers.
    let mut now_ms = crashed_ms;
    for _ in 0..6 {
        clock.advance_ms(700);
        now_ms += 700;
        settle(&store, now_ms);
    }
    store.flush().unwrap();
    assert!(
        store.stats().next_due_ms.is_some(),
        "the image must hold timer messages in flight"
    );
    store.simulate_crash();
    let fs = fs.process_crash();
    manifest.extend(timers);
    write_image(
        "timers_in_flight",
        &fs,
        &manifest,
        now_ms,
        json!({"cancelled_id": cancelled, "open_after_ms": 600_000}),
    );
}

// ---- Reader ----

struct Fixture {
    _dir: tempfile::TempDir,
    store_dir: PathBuf,
    manifest: Value,
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// A writable copy of a committed image (opening a store writes to it).
fn fixture(name: &str) -> Fixture {
    let root = fixtures().join(name);
    let manifest: Value = serde_json::from_slice(&std::fs::read(root.join("manifest.json")).unwrap_or_else(|e| {
        panic!("tests/fixtures/{VERSION}/{name}/manifest.json: {e} (regenerate with the command in tests/golden.rs)")
    }))
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&root.join("store"), &dir.path().join("store"));
    Fixture {
        store_dir: dir.path().join("store"),
        _dir: dir,
        manifest,
    }
}

/// Opens a fixture on the real file system with its clock moved 10 s on, or by the manifest's
/// `open_after_ms` (every delayed message is then due and delivered).
fn open(fixture: &Fixture) -> (Store, u64) {
    let after_ms = fixture.manifest["damage"]["open_after_ms"]
        .as_u64()
        .unwrap_or(10_000);
    let now_ms = fixture.manifest["now_ms"].as_u64().unwrap() + after_ms;
    let clock = ManualClock::new(now_ms);
    let store = Store::open(&fixture.store_dir, options(Arc::new(RealFs), &clock)).unwrap();
    settle(&store, now_ms);
    (store, now_ms)
}

/// Every message of the manifest except `skip` (ids) must read back intact, exactly once; a read
/// of an id in `unreadable` must fail with a corruption error.
fn check_messages(store: &Store, manifest: &Value, missing: &[u64], unreadable: &[u64]) {
    let mut got: BTreeMap<u64, StoredMessage> = BTreeMap::new();
    let mut corrupt = 0;
    for topic in ["orders", "audit"] {
        for queue in 0..2 {
            let end = store.queue_end_offset(topic, queue).unwrap();
            for index in 0..end {
                match store.pull(topic, queue, index, 1) {
                    Ok(batch) => {
                        for m in batch {
                            assert!(got.insert(m.id.0, m.clone()).is_none(), "{} twice", m.id.0);
                        }
                    }
                    Err(Error::Corruption { .. }) => corrupt += 1,
                    Err(err) => panic!("pull {topic}/{queue}@{index}: {err}"),
                }
            }
        }
    }
    assert_eq!(corrupt, unreadable.len(), "corrupt reads");
    let expected = manifest["messages"].as_array().unwrap();
    for m in expected {
        let id = m["id"].as_u64().unwrap();
        if missing.contains(&id) || unreadable.contains(&id) {
            assert!(!got.contains_key(&id), "{id} should not be readable");
            continue;
        }
        let stored = got
            .remove(&id)
            .unwrap_or_else(|| panic!("message {id} is missing"));
        assert_eq!(stored.topic, m["topic"].as_str().unwrap(), "{id}");
        assert_eq!(
            u64::from(stored.queue),
            m["queue"].as_u64().unwrap(),
            "{id}"
        );
        assert_eq!(stored.key.as_deref(), m["key"].as_str(), "{id}");
        assert_eq!(stored.body, m["body"].as_str().unwrap().as_bytes(), "{id}");
        assert_eq!(stored.due_ms, m["due_ms"].as_u64(), "{id}");
        let properties: Vec<(String, String)> = m["properties"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p[0].as_str().unwrap().to_owned(),
                    p[1].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        let stored_properties: Vec<(String, String)> = stored
            .properties
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        assert_eq!(stored_properties, properties, "{id}");
        if let (Some(due), Some(at)) = (stored.due_ms, stored.delivered_ms) {
            assert!(at >= due, "{id} delivered early");
        }
    }
    assert!(
        got.is_empty(),
        "messages that were never put: {:?}",
        got.keys().collect::<Vec<_>>()
    );
}

#[test]
fn golden_clean_image_opens_without_a_scan() {
    let f = fixture("clean");
    let (store, _) = open(&f);
    let report = store.recovery_report().clone();
    assert_eq!(
        report.checkpoint,
        CheckpointUse::Used {
            clean_shutdown: true
        }
    );
    assert_eq!(report.records_scanned, 0);
    assert!(!report.lost_anything(), "{report:?}");
    assert_eq!(store.committed_offset("golden-group", "orders", 0), Some(2));
    check_messages(&store, &f.manifest, &[], &[]);
    store.close().unwrap();
}

#[test]
fn golden_crashed_image_scans_after_the_checkpoint() {
    let f = fixture("crashed");
    let (store, _) = open(&f);
    let report = store.recovery_report().clone();
    assert_eq!(
        report.checkpoint,
        CheckpointUse::Used {
            clean_shutdown: false
        }
    );
    assert!(report.records_scanned > 0, "{report:?}");
    assert!(report.torn_tail.is_none(), "{report:?}");
    check_messages(&store, &f.manifest, &[], &[]);
    store.close().unwrap();
}

#[test]
fn golden_torn_tail_is_cut_and_reported() {
    let f = fixture("torn_tail");
    let torn = f.manifest["damage"]["torn_log_offset"].as_u64().unwrap();
    let (store, _) = open(&f);
    let report = store.recovery_report().clone();
    let tail = report.torn_tail.clone().expect("a torn tail");
    assert_eq!(tail.log_offset, torn);
    assert_eq!(report.log_end_offset, torn);
    // The torn record is the last one written; if it was a message, it is gone; if it was a
    // delivery, the message is delivered again (same id).
    let lost: Vec<u64> = f.manifest["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_u64().unwrap())
        .filter(|id| *id >= torn)
        .collect();
    check_messages(&store, &f.manifest, &lost, &[]);
    store.close().unwrap();
}

#[test]
fn golden_bad_record_crc_fails_the_read_of_that_message_only() {
    let f = fixture("bad_record_crc");
    let victim = f.manifest["damage"]["corrupt_id"].as_u64().unwrap();
    let (store, _) = open(&f);
    check_messages(&store, &f.manifest, &[], &[victim]);
    store.close().unwrap();
}

#[test]
fn golden_bad_checkpoint_is_rejected_and_the_log_scanned() {
    let f = fixture("bad_checkpoint");
    let (store, _) = open(&f);
    let report = store.recovery_report().clone();
    assert!(
        matches!(report.checkpoint, CheckpointUse::Rejected { .. }),
        "{report:?}"
    );
    assert_eq!(report.scan_from, 0);
    check_messages(&store, &f.manifest, &[], &[]);
    store.close().unwrap();
}

#[test]
fn golden_missing_queue_file_is_rebuilt() {
    let f = fixture("missing_queue_file");
    let (store, _) = open(&f);
    let report = store.recovery_report().clone();
    assert!(!report.queues_rebuilt.is_empty(), "{report:?}");
    check_messages(&store, &f.manifest, &[], &[]);
    store.close().unwrap();
}

#[test]
fn golden_timers_in_flight_are_delivered_on_time_and_the_cancel_holds() {
    let f = fixture("timers_in_flight");
    let cancelled = f.manifest["damage"]["cancelled_id"].as_u64().unwrap();
    // First at the image's own time: nothing delivered early, the cancel still answers.
    let image_ms = f.manifest["now_ms"].as_u64().unwrap();
    let clock = ManualClock::new(image_ms);
    let store = Store::open(&f.store_dir, options(Arc::new(RealFs), &clock)).unwrap();
    settle(&store, image_ms);
    assert!(store.stats().next_due_ms.is_some(), "no timer in flight");
    for topic in ["orders", "audit"] {
        for queue in 0..2 {
            for m in store.pull(topic, queue, 0, 10_000).unwrap() {
                if let (Some(due), Some(at)) = (m.due_ms, m.delivered_ms) {
                    assert!(due <= image_ms && at >= due, "{} early", m.id.0);
                }
            }
        }
    }
    assert_eq!(
        store.cancel(MessageId(cancelled)).unwrap(),
        CancelOutcome::Cancelled
    );
    store.close().unwrap();
    // Then past every due time: all delivered, never the cancelled one.
    let (store, _) = open(&f);
    assert_eq!(store.stats().next_due_ms, None);
    check_messages(&store, &f.manifest, &[cancelled], &[]);
    assert_eq!(
        store.cancel(MessageId(cancelled)).unwrap(),
        CancelOutcome::Cancelled
    );
    store.close().unwrap();
}

#[test]
fn golden_v1_images_are_refused_and_left_unchanged() {
    for name in V1_IMAGES {
        let root = fixtures_of("v1").join(name);
        let dir = tempfile::tempdir().unwrap();
        let store_dir = dir.path().join("store");
        copy_dir(&root.join("store"), &store_dir);
        let before = snapshot(&store_dir);
        let clock = ManualClock::new(BASE_MS);
        match Store::open(&store_dir, options(Arc::new(RealFs), &clock)) {
            Err(Error::UnsupportedVersion {
                file,
                found,
                supported,
            }) => {
                assert_eq!(file.file_name().and_then(|n| n.to_str()), Some("meta"));
                assert_eq!((found, supported), (1, 2), "{name}");
            }
            Err(err) => panic!("v1/{name}: expected UnsupportedVersion, got {err}"),
            Ok(_) => panic!("v1/{name}: a v1 store was opened"),
        }
        let mut after = snapshot(&store_dir);
        // The lock file an open attempt may leave is not part of the image.
        after.remove(Path::new("LOCK"));
        assert_eq!(before, after, "v1/{name}: the refused store was changed");
    }
}

/// Every file of a directory tree (relative path -> bytes).
fn snapshot(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else {
                let relative = path.strip_prefix(root).unwrap().to_path_buf();
                out.insert(relative, std::fs::read(&path).unwrap());
            }
        }
    }
    out
}

#[test]
fn golden_images_are_all_present() {
    for (version, names) in [("v1", &V1_IMAGES[..]), (VERSION, &IMAGES[..])] {
        for name in names {
            assert!(
                fixtures_of(version).join(name).join("manifest.json").exists(),
                "tests/fixtures/{version}/{name} is missing: regenerate with the command in tests/golden.rs"
            );
        }
    }
}
