//! Damage sweeps: a small store image is damaged in every file, one way at a time: truncated to
//! each length, or one byte flipped at each position. The image holds plain messages, messages
//! of two delay levels and messages with arbitrary delays (`with_delay_ms`: 40 ms and 3 s ones
//! delivered through hops of the timer wheel while it was made, 3 s ones waiting in tier 1
//! after a hop, 90 s and 1 h ones waiting in tiers 3 and 4), cancelled messages (decided
//! Cancel records, one already consumed by a Discard, and their decision files), two segments,
//! several queue files and a committed offset; closed cleanly, or crashed after more puts
//! and a checkpoint. Each damaged image is reopened (`SimFs`; the truncations also on real
//! files with the mmap backend, where a mapping past the end would raise SIGBUS), the clock
//! moved in two steps (some level and timer messages fall due; then every message but the 1 h
//! ones, which hop down a tier), and:
//!
//! - the open returns `Ok` or a clean `Err`: never a panic (in any thread) or a hang (a watchdog
//!   aborts the run, naming the case, after 60 s);
//! - every message read is one that was put, intact, in its queue, at most once, never before its
//!   due time (no garbage, no phantom, no duplicate, nothing early);
//! - a cancelled message whose Cancel record lies wholly before the damage (or intact: the
//!   damage is not in the log) is never delivered; one whose Cancel record is damaged or cut
//!   may be, and is counted apart;
//! - every message whose records lie wholly before the damage in the commit log is read back
//!   intact: its own record, its delivery record if it was delivered when the image was made,
//!   and for a timer message still waiting, the hop record its pending entry points at (the
//!   delivery loop reads the due time there); records recovery can rebuild from (an older hop,
//!   a consumed entry) do not count;
//! - a message that is missing is accounted for: a read error (`Error::Corruption`), or the
//!   recovery report or stats counting a cut, a rebuild or an undeliverable message. Never a
//!   silent loss.
//!
//! Default: positions sampled with a stride (every byte of the small files and of the written
//! slots of decision files); every position of every file with `DELAYSTORE_SOAK` (decision
//! files: every position of the written slots, a stride over the zero rest).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::panic;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use delaystore::commit_log::record::{
    decode_header, decode_record, OriginRef, RecordKind, HEADER_BYTES,
};
use delaystore::io::{FileSystem, RealFs, SimFs};
use delaystore::naming::parse_offset_file_name;
use delaystore::{
    CancelOutcome, Error, ManualClock, Message, MessageId, Options, Store, StoredMessage,
};

const DIR: &str = "/sweep";
const BASE_MS: u64 = 1_700_000_000_000;
const TOPICS: [&str; 2] = ["sa", "sb"];

static PANICS: AtomicUsize = AtomicUsize::new(0);
/// Milliseconds since the start of the current case (for the watchdog), and its name.
static CASE_STARTED_MS: AtomicU64 = AtomicU64::new(0);
static CASE: Mutex<String> = Mutex::new(String::new());

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

/// A message of the image and where its records lie in the log.
#[derive(Debug, Clone)]
struct Known {
    message: Message,
    id: u64,
    queue: u32,
    due_ms: Option<u64>,
    /// Log offset just past the last record its delivery needs: its own; its delivery record's
    /// if it was delivered when the image was made; for a timer message still waiting, the hop
    /// record its pending entry points at, if it hopped (the delivery loop reads the due time
    /// and the origin there, so a damaged hop record loses the message, counted). Older hops
    /// are not needed: their entries are consumed, and if a cut takes a later hop away,
    /// recovery's cursors make the entry it consumed pending again.
    needs_log_below: u64,
    /// Log offset just past its Cancel record, if it was cancelled.
    cancel_end: Option<u64>,
}

struct Image {
    fs: SimFs,
    now_ms: u64,
    known: Vec<Known>,
}

/// Arbitrary delays of the timer messages (message `i` with `i % 5 == 2`, taking these in
/// turn). Of those put before the first clock steps, the 40 ms ones are delivered through a
/// hop to tier 0 and the 3 s ones hop from tier 2 to tier 1 while the image is made; the 90 s
/// (tier 3) and 1 h (tier 4) ones wait in their entry tier.
const TIMER_DELAYS_MS: [u64; 4] = [40, 3_000, 90_000, 3_600_000];
/// The clock of a check's first phase, past the image's clock (`BASE_MS + 3_000`): level 1
/// and the 40 ms and early 3 s timer messages are due; the level 2 ones put after the first
/// clock steps are not.
const CHECK_FIRST_AFTER_MS: u64 = 2_000;
/// The clock of a check's second phase: every level message and the 40 ms, 3 s and 90 s timer
/// messages are due; the 1 h ones leave tier 4 (released at `BASE_MS + 3 * 32^4`) and hop to
/// tier 3, where they are not due yet.
const CHECK_SECOND_AT_MS: u64 = BASE_MS + 3_200_000;

/// Cancels made while the image is built: after the put of message `.0`, cancel message `.1`,
/// expecting `.2`.
const CANCELS: [(usize, usize, CancelOutcome); 10] = [
    // A 40 ms timer message delivered through a hop when the clock stepped after message 20.
    (40, 2, CancelOutcome::AlreadyDelivered),
    // Level 2, due in a check's first phase: discarded there.
    (40, 4, CancelOutcome::Cancelled),
    // 3 s, waiting in tier 1 after a hop: discarded by the clock step after message 60.
    (40, 7, CancelOutcome::Cancelled),
    // 90 s in tier 3 (released in a check's second phase) and 1 h in tier 4.
    (40, 12, CancelOutcome::Cancelled),
    (40, 17, CancelOutcome::Cancelled),
    (70, 52, CancelOutcome::Cancelled),
    // 40 ms, put after the last clock step: released in a check's first phase.
    (70, 62, CancelOutcome::Cancelled),
    // Level 2, due in the second phase.
    (70, 64, CancelOutcome::Cancelled),
    // The crashed image only: after its checkpoint (40 ms and 90 s).
    (100, 82, CancelOutcome::Cancelled),
    (100, 92, CancelOutcome::Cancelled),
];

/// Message `i` of the image: plain, delay level 1 or 2, or a timer message.
fn image_message(i: usize) -> Message {
    let message = Message::new(
        TOPICS[i % 2],
        format!("s{i:03}-{}", "q".repeat(200 + i * 37 % 900)),
    )
    .with_key(format!("k{}", i % 4))
    .with_property("i", i.to_string());
    match i % 5 {
        2 => message.with_delay_ms(TIMER_DELAYS_MS[i / 5 % 4]),
        3 => message.with_delay_level(1),
        4 => message.with_delay_level(2),
        _ => message,
    }
}

/// Moves the clock on by `ms` and waits until everything due by then is delivered (or has
/// hopped on) and dispatched: observable progress, whatever the machine's speed.
fn step_clock(store: &Store, clock: &ManualClock, ms: u64) {
    clock.advance_ms(ms);
    let now = clock_now(clock);
    common::wait_until("delivery", || {
        let stats = store.stats();
        stats.dispatched_end_offset >= stats.written_end_offset
            && stats.next_due_ms.is_none_or(|d| d > now)
    });
}

fn build(crashed: bool) -> Image {
    let fs = SimFs::new();
    let clock = ManualClock::new(BASE_MS);
    let store = Store::open(DIR, options(Arc::new(fs.clone()), &clock)).unwrap();
    let mut sent: Vec<(Message, u64, u32, Option<u64>)> = Vec::new();
    let count = if crashed { 110 } else { 90 };
    for i in 0..count {
        let message = image_message(i);
        let receipt = store.put(&message).unwrap();
        sent.push((message, receipt.id.0, receipt.queue, receipt.due_ms));
        match i {
            // The first 40 ms timer message leaves tier 1 and hops to tier 0, then is delivered.
            20 => {
                step_clock(&store, &clock, 35);
                step_clock(&store, &clock, 10);
            }
            // Level 1 delivered; the first 3 s timer messages hop from tier 2 to tier 1.
            40 => step_clock(&store, &clock, 2_055),
            // The first cancelled 3 s message is released from tier 1: discarded.
            60 => step_clock(&store, &clock, 900),
            // A checkpoint: the crashed image's recovery scans only what follows.
            80 if crashed => store.flush().unwrap(),
            _ => {}
        }
        for &(_, victim, expected) in CANCELS.iter().filter(|c| c.0 == i) {
            let outcome = store.cancel(MessageId(sent[victim].1)).unwrap();
            assert_eq!(outcome, expected, "cancel of message {victim}");
        }
    }
    store.commit_offset("g", TOPICS[0], 0, 3).unwrap();
    common::wait_until("dispatch", || {
        store.stats().dispatched_end_offset >= store.stats().written_end_offset
    });
    let fs = if crashed {
        store.simulate_crash();
        fs.process_crash()
    } else {
        store.close().unwrap();
        fs
    };
    // Where each record lies: walk the log with the public decoder.
    let mut delivered_by: BTreeMap<u64, u64> = BTreeMap::new();
    let mut last_hop: BTreeMap<u64, u64> = BTreeMap::new();
    let mut cancelled_by: BTreeMap<u64, u64> = BTreeMap::new();
    let mut ends: BTreeMap<u64, u64> = BTreeMap::new();
    let mut kinds: BTreeMap<&str, u64> = BTreeMap::new();
    for (base, path) in segments(&fs) {
        let bytes = fs.read_raw(&path).unwrap();
        let mut at = 0usize;
        while at + HEADER_BYTES <= bytes.len() {
            let log_offset = base + at as u64;
            let Ok(header) = decode_header(&bytes[at..], log_offset) else {
                break;
            };
            let end = at + header.total_bytes as usize;
            let end_offset = base + end as u64;
            ends.insert(log_offset, end_offset);
            let origin = || {
                let record = decode_record(&bytes[at..end], log_offset).unwrap();
                OriginRef::decode(record.body).unwrap().log_offset
            };
            let kind = match header.kind {
                RecordKind::Delivery => {
                    delivered_by.insert(origin(), end_offset);
                    "delivery"
                }
                RecordKind::Hop => {
                    last_hop.insert(origin(), end_offset);
                    "hop"
                }
                RecordKind::Cancel => {
                    cancelled_by.insert(origin(), end_offset);
                    "cancel"
                }
                RecordKind::Discard => "discard",
                RecordKind::Message => "message",
                RecordKind::Filler => "filler",
            };
            *kinds.entry(kind).or_default() += 1;
            at = end;
        }
    }
    // The image holds what the sweep is meant to damage.
    for kind in ["message", "delivery", "hop", "cancel", "discard"] {
        assert!(kinds.contains_key(kind), "no {kind} record in {kinds:?}");
    }
    assert!(
        !crashed || kinds.contains_key("filler"),
        "the crashed image spans two segments"
    );
    let decision_files = files(&fs)
        .iter()
        .filter(|p| p.starts_with(Path::new(DIR).join("decisions")))
        .count();
    assert!(decision_files > 0, "no decision file");
    let known = sent
        .into_iter()
        .map(|(message, id, queue, due_ms)| Known {
            needs_log_below: delivered_by
                .get(&id)
                .copied()
                .unwrap_or(ends[&id].max(last_hop.get(&id).copied().unwrap_or(0))),
            cancel_end: cancelled_by.get(&id).copied(),
            message,
            id,
            queue,
            due_ms,
        })
        .collect();
    Image {
        fs,
        now_ms: clock_now(&clock),
        known,
    }
}

fn segments(fs: &SimFs) -> Vec<(u64, PathBuf)> {
    let dir = Path::new(DIR).join("commitlog");
    let mut out: Vec<(u64, PathBuf)> = fs
        .list_dir(&dir)
        .unwrap()
        .into_iter()
        .filter_map(|name| parse_offset_file_name(&name).map(|base| (base, dir.join(name))))
        .collect();
    out.sort();
    out
}

fn files(fs: &SimFs) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut pending = vec![PathBuf::from(DIR)];
    while let Some(dir) = pending.pop() {
        for name in fs.list_dir(&dir).unwrap() {
            let path = dir.join(name);
            if path.ends_with("LOCK") {
                continue;
            }
            if fs.file_len(&path).is_ok() {
                out.push(path);
            } else {
                pending.push(path);
            }
        }
    }
    out.sort();
    out
}

#[derive(Debug, Default)]
struct Figures {
    cases: u64,
    refused: u64,
    read_errors: u64,
    kept_before_damage_lost: u64,
    silent_loss: u64,
    phantom: u64,
    duplicates: u64,
    early: u64,
    panics: u64,
    /// Cancelled messages delivered although their Cancel record is intact (a violation).
    cancelled_delivered: u64,
    /// The same, caused by damage to a decision file (a violation too; a known gap until the
    /// store resolved such slots from the log: `docs/testing.md` §8, recovery R27).
    cancelled_delivered_after_decision_damage: u64,
    /// Cancelled messages delivered because the damage reached their Cancel record (allowed:
    /// the cancel is lost, like a cancel a crash took away).
    cancelled_delivered_after_damage: u64,
}

#[derive(Debug, Clone, Copy)]
enum Damage {
    Truncate(usize),
    Flip(usize),
}

/// What a damage hit: a commit-log segment (the first log offset damaged), a decision file
/// (derived state: nothing may be lost or delivered against a cancel for it), or another file.
#[derive(Debug, Clone, Copy)]
enum Hit {
    Log(u64),
    Decisions,
    Other,
}

/// Opens a damaged image and checks it.
fn check_case(
    image: &Image,
    fs: Arc<dyn FileSystem>,
    dir: &Path,
    hit: Hit,
    figures: &mut Figures,
    case: &str,
) {
    figures.cases += 1;
    let panics_before = PANICS.load(Ordering::SeqCst);
    let clock = ManualClock::new(image.now_ms + CHECK_FIRST_AFTER_MS);
    let outcome = panic::catch_unwind(panic::AssertUnwindSafe(|| {
        let Ok(store) = Store::open(dir, options(fs.clone(), &clock)) else {
            figures.refused += 1;
            return;
        };
        // Two phases: what is due at the first clock, then at the second (messages released
        // in the first phase hop again or are delivered in the second).
        settle(&store, &clock);
        clock.set_ms(CHECK_SECOND_AT_MS);
        settle(&store, &clock);
        let mut seen: BTreeMap<Vec<u8>, u64> = BTreeMap::new();
        let mut errors = 0u64;
        for topic in TOPICS {
            for queue in 0..2 {
                let end = store.queue_end_offset(topic, queue).unwrap_or(0);
                for index in 0..end {
                    match store.pull(topic, queue, index, 1) {
                        Ok(batch) => {
                            for m in batch {
                                check_message(image, &m, topic, queue, hit, figures, case);
                                *seen.entry(m.body.clone()).or_default() += 1;
                            }
                        }
                        Err(Error::Corruption { .. }) => errors += 1,
                        Err(err) => {
                            errors += 1;
                            eprintln!("{case}: pull {topic}/{queue}@{index}: {err}");
                        }
                    }
                }
            }
        }
        figures.read_errors += errors;
        for (body, count) in &seen {
            if *count > 1 {
                eprintln!(
                    "{case}: {} seen {count} times",
                    String::from_utf8_lossy(&body[..8])
                );
                figures.duplicates += count - 1;
            }
        }
        let report = store.recovery_report();
        let stats = store.stats();
        let accounted = errors > 0
            || report.lost_anything()
            || stats.undeliverable > 0
            || !report.queues_truncated.is_empty();
        let now = clock_now(&clock);
        for k in &image.known {
            let not_due = k.due_ms.is_some_and(|d| d > now);
            // A cancelled message is not owed to anyone (delivered, it is judged in
            // `check_message`).
            if not_due || k.cancel_end.is_some() || seen.contains_key(&k.message.body) {
                continue;
            }
            let before_damage = match hit {
                Hit::Log(d) => k.needs_log_below <= d,
                Hit::Decisions => true,
                Hit::Other => false,
            };
            if before_damage && errors == 0 {
                eprintln!(
                    "{case}: lost {} (log below {}), damage: {hit:?}",
                    k.id, k.needs_log_below
                );
                figures.kept_before_damage_lost += 1;
            } else if !accounted {
                eprintln!(
                    "{case}: {} is missing and nothing reports a loss: {report:?}",
                    k.id
                );
                figures.silent_loss += 1;
            }
        }
        store.simulate_crash();
    }));
    if outcome.is_err() || PANICS.load(Ordering::SeqCst) != panics_before {
        eprintln!("{case}: panicked");
        figures.panics += 1;
    }
}

/// Waits until what is due by the clock is delivered (or has hopped on) and dispatched. A
/// corrupt origin is skipped and counted, and if it is the last of its queue it keeps looking
/// due: stop waiting once nothing has moved for 50 ms after such a skip.
fn settle(store: &Store, clock: &ManualClock) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = (0, 0, 0);
    let mut still_since = Instant::now();
    while Instant::now() < deadline {
        let stats = store.stats();
        let due = stats.next_due_ms.is_some_and(|d| d <= clock_now(clock));
        if !due && stats.dispatched_end_offset >= stats.written_end_offset {
            break;
        }
        let now = (
            stats.written_end_offset,
            stats.dispatched_end_offset,
            stats.undeliverable,
        );
        if now != last {
            last = now;
            still_since = Instant::now();
        } else if stats.undeliverable > 0 && still_since.elapsed() > Duration::from_millis(50) {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn clock_now(clock: &ManualClock) -> u64 {
    use delaystore::Clock;
    clock.now_ms()
}

fn check_message(
    image: &Image,
    m: &StoredMessage,
    topic: &str,
    queue: u32,
    hit: Hit,
    figures: &mut Figures,
    case: &str,
) {
    let Some(k) = image.known.iter().find(|k| k.message.body == m.body) else {
        eprintln!(
            "{case}: phantom {:?}",
            String::from_utf8_lossy(&m.body[..m.body.len().min(12)])
        );
        figures.phantom += 1;
        return;
    };
    let intact = m.id.0 == k.id
        && m.topic == topic
        && k.message.topic == topic
        && m.queue == queue
        && k.queue == queue
        && m.key == k.message.key
        && m.properties == k.message.properties
        && m.due_ms == k.due_ms;
    if !intact {
        eprintln!("{case}: damaged message {m:?}");
        figures.phantom += 1;
    }
    if let (Some(due), Some(at)) = (m.due_ms, m.delivered_ms) {
        if at < due {
            eprintln!("{case}: {} delivered at {at}, due {due}", k.id);
            figures.early += 1;
        }
    }
    if let Some(cancel_end) = k.cancel_end {
        let cancel_intact = match hit {
            Hit::Log(d) => cancel_end <= d,
            Hit::Decisions | Hit::Other => true,
        };
        if cancel_intact && matches!(hit, Hit::Decisions) {
            eprintln!(
                "{case}: {} delivered after damage to its decision file",
                k.id
            );
            figures.cancelled_delivered_after_decision_damage += 1;
        } else if cancel_intact {
            eprintln!(
                "{case}: {} delivered although its Cancel record (ending at {cancel_end}) is intact",
                k.id
            );
            figures.cancelled_delivered += 1;
        } else {
            figures.cancelled_delivered_after_damage += 1;
        }
    }
}

/// How a file of the image is swept.
#[derive(Debug, Clone, Copy)]
enum FileKind {
    /// A commit-log segment starting at this log offset.
    Segment(u64),
    /// A decision file: 512 KiB of 8-byte slots, of which the image writes the first few.
    Decisions,
    /// A small file (checkpoint, meta, consumer offsets): every byte, always.
    Small,
    /// A consume-queue file.
    Queue,
}

fn file_kind(path: &Path, len: usize, seg_bases: &BTreeMap<PathBuf, u64>) -> FileKind {
    if let Some(base) = seg_bases.get(path) {
        FileKind::Segment(*base)
    } else if path.starts_with(Path::new(DIR).join("decisions")) {
        FileKind::Decisions
    } else if len <= 4096 && !path.starts_with(Path::new(DIR).join("consumequeue")) {
        FileKind::Small
    } else {
        FileKind::Queue
    }
}

impl FileKind {
    fn hit(self, at: usize) -> Hit {
        match self {
            FileKind::Segment(base) => Hit::Log(base + at as u64),
            FileKind::Decisions => Hit::Decisions,
            FileKind::Small | FileKind::Queue => Hit::Other,
        }
    }
}

/// End of the written slots of a decision file, plus one slot: past it every slot is zero
/// (undecided), and every damage there is alike.
fn written_slots_end(bytes: &[u8]) -> usize {
    let written = bytes
        .iter()
        .rposition(|&b| b != 0)
        .map_or(0, |last| last + 1);
    (written.div_ceil(8) * 8 + 8).min(bytes.len())
}

/// Positions to damage in a file: every byte of a small file and of the written slots of a
/// decision file (every 8191st byte of its zero rest, every 1021st under `DELAYSTORE_SOAK`);
/// otherwise every 211th byte, or under `DELAYSTORE_SOAK` every byte up to 8 KiB past the last
/// non-zero byte (the written part and the start of the zero tail) and every 61st byte of the
/// rest of the zero tail, where every position is alike.
fn positions(bytes: &[u8], kind: FileKind) -> Vec<usize> {
    let len = bytes.len();
    let soak = std::env::var("DELAYSTORE_SOAK").is_ok();
    let (dense_end, sparse) = match kind {
        FileKind::Small => (len, 1),
        FileKind::Decisions => (written_slots_end(bytes), if soak { 1021 } else { 8191 }),
        FileKind::Segment(_) | FileKind::Queue if soak => (
            bytes
                .iter()
                .rposition(|&b| b != 0)
                .map_or(0, |last| last + 1 + 8192)
                .min(len),
            61,
        ),
        FileKind::Segment(_) | FileKind::Queue => (0, 211),
    };
    (0..dense_end)
        .chain((dense_end..len).step_by(sparse))
        .chain((len > 0).then(|| len - 1))
        .collect()
}

/// `DELAYSTORE_SWEEP_CASE=<text>` runs only the cases whose name contains it (as printed by a
/// failure, e.g. `crashed=true Flip(63371) of "/sweep/commitlog/00000000000000000000"`).
fn selected(case: &str) -> bool {
    std::env::var("DELAYSTORE_SWEEP_CASE").map_or(true, |only| case.contains(&only))
}

fn start_case(name: &str) {
    *CASE.lock().unwrap() = name.to_owned();
    CASE_STARTED_MS.store(now_ms(), Ordering::SeqCst);
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn install_guards() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default_hook = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            // The case's own thread is covered by catch_unwind; count the store's threads
            // (parallel tests' assertion failures must not count against another test's case).
            let store_thread = std::thread::current()
                .name()
                .is_some_and(|n| n.starts_with("delaystore-"));
            if store_thread {
                PANICS.fetch_add(1, Ordering::SeqCst);
            }
            default_hook(info);
        }));
        std::thread::spawn(|| loop {
            std::thread::sleep(Duration::from_secs(1));
            let started = CASE_STARTED_MS.load(Ordering::SeqCst);
            if started > 0 && now_ms().saturating_sub(started) > 60_000 {
                eprintln!(
                    "sweep case {:?} hangs (over 60 s): aborting",
                    CASE.lock().unwrap()
                );
                std::process::abort();
            }
        });
    });
}

fn sweep(crashed: bool) -> Figures {
    install_guards();
    let image = build(crashed);
    let mut figures = Figures::default();
    let seg_bases: BTreeMap<PathBuf, u64> = segments(&image.fs)
        .into_iter()
        .map(|(b, p)| (p, b))
        .collect();
    for path in files(&image.fs) {
        let original = image.fs.read_raw(&path).unwrap();
        let kind = file_kind(&path, original.len(), &seg_bases);
        let mut damages: Vec<Damage> = Vec::new();
        for at in positions(&original, kind) {
            damages.push(Damage::Truncate(at));
            damages.push(Damage::Flip(at));
        }
        for damage in damages {
            let case = format!("crashed={crashed} {damage:?} of {path:?}");
            if !selected(&case) {
                continue;
            }
            let fs = image.fs.process_crash();
            let mut bytes = original.clone();
            let at = match damage {
                Damage::Truncate(len) => {
                    bytes.truncate(len);
                    len
                }
                Damage::Flip(at) => {
                    bytes[at] ^= 0x5a;
                    at
                }
            };
            fs.write_file_synced(&path, &bytes).unwrap();
            start_case(&case);
            check_case(
                &image,
                Arc::new(fs),
                Path::new(DIR),
                kind.hit(at),
                &mut figures,
                &case,
            );
        }
    }
    CASE_STARTED_MS.store(0, Ordering::SeqCst);
    figures
}

fn report(name: &str, figures: &Figures) {
    println!(
        "sweep={name} cases={} refused={} read_errors={} kept_before_damage_lost={} silent_loss={} phantom={} duplicates={} early={} panics={} cancelled_delivered={} cancelled_delivered_after_damage={} cancelled_delivered_after_decision_damage={}",
        figures.cases, figures.refused, figures.read_errors, figures.kept_before_damage_lost,
        figures.silent_loss, figures.phantom, figures.duplicates, figures.early, figures.panics,
        figures.cancelled_delivered, figures.cancelled_delivered_after_damage,
        figures.cancelled_delivered_after_decision_damage
    );
    assert_eq!(figures.panics, 0, "{name}");
    assert_eq!(figures.phantom, 0, "{name}");
    assert_eq!(figures.duplicates, 0, "{name}");
    assert_eq!(figures.early, 0, "{name}");
    assert_eq!(figures.kept_before_damage_lost, 0, "{name}");
    assert_eq!(figures.silent_loss, 0, "{name}");
    assert_eq!(figures.cancelled_delivered, 0, "{name}");
    assert_eq!(
        figures.cancelled_delivered_after_decision_damage, 0,
        "{name}"
    );
}

#[test]
fn sweep_clean_image() {
    let figures = sweep(false);
    report("clean", &figures);
}

#[test]
fn sweep_crashed_image() {
    let figures = sweep(true);
    report("crashed", &figures);
}

/// Truncations on real files with the mmap backend: a mapping that reached past a file's end
/// would kill the test with SIGBUS.
#[test]
fn truncations_on_real_files_never_fault() {
    install_guards();
    let image = build(true);
    let mut figures = Figures::default();
    let soak = std::env::var("DELAYSTORE_SOAK").is_ok();
    let seg_bases: BTreeMap<PathBuf, u64> = segments(&image.fs)
        .into_iter()
        .map(|(b, p)| (p, b))
        .collect();
    for path in files(&image.fs) {
        let original = image.fs.read_raw(&path).unwrap();
        let kind = file_kind(&path, original.len(), &seg_bases);
        let stride = match kind {
            // Every export writes all of them: 512 KiB each.
            FileKind::Decisions if soak => 16_411,
            _ if soak => 97,
            _ => original.len() / 7 + 1,
        };
        let mut lengths: Vec<usize> = (0..original.len()).step_by(stride).collect();
        if let FileKind::Decisions = kind {
            // Inside the written slots, and cutting one in two.
            lengths.push(written_slots_end(&original).saturating_sub(5));
        }
        for len in lengths {
            let root = tempfile::tempdir().unwrap();
            image.fs.export(root.path()).unwrap();
            let rel = path.strip_prefix("/").unwrap();
            let real = root.path().join(rel);
            std::fs::write(&real, &original[..len]).unwrap();
            let case = format!("real files: truncate {path:?} to {len}");
            if !selected(&case) {
                continue;
            }
            start_case(&case);
            let dir = root.path().join(DIR.trim_start_matches('/'));
            check_case(
                &image,
                Arc::new(RealFs),
                &dir,
                kind.hit(len),
                &mut figures,
                &case,
            );
        }
    }
    CASE_STARTED_MS.store(0, Ordering::SeqCst);
    report("real_truncations", &figures);
}

/// Regression (found by this sweep, fixed on main: the delivery loop reads the record's due
/// time): a flipped bit in the time tag of a delay-level queue entry must neither deliver the
/// message before the due time stored (CRC-checked) in its record nor hold it back.
#[test]
fn a_corrupt_due_time_in_a_level_queue_entry_is_not_trusted() {
    let fs = SimFs::new();
    let clock = ManualClock::new(BASE_MS);
    let store = Store::open(DIR, options(Arc::new(fs.clone()), &clock)).unwrap();
    let first = store
        .put(&Message::new("sa", "first").with_delay_level(2))
        .unwrap();
    let second = store
        .put(&Message::new("sa", "second").with_delay_level(2))
        .unwrap();
    store.flush().unwrap();
    store.close().unwrap();
    // Both are due 5 s after BASE_MS. Lower the time tag of the first entry of level 2 (bytes
    // 12..20 of entry 0) to BASE_MS: it now looks due at once.
    let entry = Path::new(DIR).join("consumequeue/__delay/2/00000000000000000000");
    let mut bytes = fs.read_raw(&entry).unwrap();
    bytes[12..20].copy_from_slice(&BASE_MS.to_le_bytes());
    fs.write_file_synced(&entry, &bytes).unwrap();
    clock.advance_ms(1_000);
    let store = Store::open(DIR, options(Arc::new(fs.clone()), &clock)).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let delivered = store.pull("sa", first.queue, 0, 10).unwrap();
    let early: Vec<&StoredMessage> = delivered
        .iter()
        .filter(|m| m.delivered_ms < m.due_ms)
        .collect();
    assert!(
        early.is_empty(),
        "delivered before the due time in their records ({:?}, {:?}): {early:?}",
        first.due_ms,
        second.due_ms
    );
    store.close().unwrap();
}

/// Regression (found by this sweep, `crashed=false Flip(31017) of
/// "/sweep/commitlog/00000000000000000000"`): the due time in a level message's record header
/// was trusted without the record's CRC, so a flipped bit there (below the checkpoint, never
/// rescanned) gave the level's head a due time centuries away: that message and every later one
/// of its level were held back, and nothing counted it. A corrupt head must be released at its
/// entry's time and discarded, counted, and the rest of the level delivered.
#[test]
fn a_corrupt_due_time_in_a_level_record_does_not_hold_its_level_back() {
    let fs = SimFs::new();
    let clock = ManualClock::new(BASE_MS);
    let store = Store::open(DIR, options(Arc::new(fs.clone()), &clock)).unwrap();
    let first = store
        .put(&Message::new("sa", "first").with_delay_level(1))
        .unwrap();
    let second = store
        .put(&Message::new("sa", "second").with_delay_level(1))
        .unwrap();
    store.flush().unwrap();
    store.close().unwrap();
    // Byte 6 of the first record's due time (header bytes 32..40).
    let segment = Path::new(DIR).join("commitlog/00000000000000000000");
    let mut bytes = fs.read_raw(&segment).unwrap();
    bytes[first.id.0 as usize + 38] ^= 0x5a;
    fs.write_file_synced(&segment, &bytes).unwrap();
    clock.advance_ms(1_000);
    let store = Store::open(DIR, options(Arc::new(fs.clone()), &clock)).unwrap();
    common::wait_until("the corrupt head is discarded", || {
        store.stats().undeliverable == 1
    });
    common::wait_until("the rest of the level is delivered", || {
        store
            .pull("sa", second.queue, 0, 10)
            .unwrap()
            .iter()
            .any(|m| m.id == second.id)
    });
    store.close().unwrap();
}

/// Found by this sweep (e.g. `crashed=false Truncate(0) of
/// "/sweep/decisions/2/00000000000000000000"`; `docs/testing.md` §8): a damaged decision slot
/// (a flipped byte, or a decision file cut short, which read as zeros: undecided) turned a
/// cancelled message whose Cancel record is intact into a delivered one. A slot that does not
/// check out is now resolved from the log, and a short decision file is rebuilt at open (R27).
#[test]
fn a_damaged_decision_slot_does_not_deliver_a_cancelled_message() {
    for damage in ["flip", "truncate"] {
        let fs = SimFs::new();
        let clock = ManualClock::new(BASE_MS);
        let store = Store::open(DIR, options(Arc::new(fs.clone()), &clock)).unwrap();
        let cancelled = store
            .put(
                &Message::new("sa", "cancelled")
                    .with_queue(0)
                    .with_delay_level(1),
            )
            .unwrap();
        let kept = store
            .put(&Message::new("sa", "kept").with_queue(0).with_delay_level(1))
            .unwrap();
        assert_eq!(
            store.cancel(cancelled.id).unwrap(),
            CancelOutcome::Cancelled
        );
        store.close().unwrap();
        let file = Path::new(DIR).join("decisions/1/00000000000000000000");
        let mut bytes = fs.read_raw(&file).unwrap();
        match damage {
            // The slot of entry 0: its kind bits now read 3, "undecided".
            "flip" => bytes[7] ^= 0x5a,
            _ => bytes.truncate(0),
        }
        fs.write_file_synced(&file, &bytes).unwrap();
        clock.advance_ms(1_000);
        let store = Store::open(DIR, options(Arc::new(fs.clone()), &clock)).unwrap();
        common::wait_until("the level is drained", || {
            let stats = store.stats();
            stats.next_due_ms.is_none() && stats.dispatched_end_offset >= stats.written_end_offset
        });
        let delivered: Vec<MessageId> = store
            .pull("sa", kept.queue, 0, 10)
            .unwrap()
            .iter()
            .map(|m| m.id)
            .collect();
        assert!(delivered.contains(&kept.id), "{damage}: {delivered:?}");
        assert!(
            !delivered.contains(&cancelled.id),
            "{damage}: the cancelled message was delivered"
        );
        store.close().unwrap();
    }
}

/// A timed-queue entry that a misdirected write made point at another valid record (here a
/// plain message's) must not re-post that record: the release checks that the record it reads
/// belongs to the entry (its queue offset and its level), as `pull` does for topic queues.
#[test]
fn a_level_entry_pointing_at_another_record_is_not_delivered() {
    let fs = SimFs::new();
    let clock = ManualClock::new(BASE_MS);
    let store = Store::open(DIR, options(Arc::new(fs.clone()), &clock)).unwrap();
    let plain = store
        .put(&Message::new("sa", "plain").with_queue(0))
        .unwrap();
    let delayed = store
        .put(
            &Message::new("sa", "delayed")
                .with_queue(0)
                .with_delay_level(1),
        )
        .unwrap();
    // A later entry, so that entry 0 is not the last one, which recovery checks.
    store
        .put(
            &Message::new("sa", "later")
                .with_queue(0)
                .with_delay_level(1),
        )
        .unwrap();
    store.close().unwrap();
    // Level 1's entry 0 now names the plain message's record (offset and length).
    let entry = Path::new(DIR).join("consumequeue/__delay/1/00000000000000000000");
    let queue = Path::new(DIR).join("consumequeue/sa/0/00000000000000000000");
    let mut bytes = fs.read_raw(&entry).unwrap();
    let plain_entry = fs.read_raw(&queue).unwrap();
    bytes[0..12].copy_from_slice(&plain_entry[0..12]);
    fs.write_file_synced(&entry, &bytes).unwrap();
    clock.advance_ms(1_000);
    let store = Store::open(DIR, options(Arc::new(fs.clone()), &clock)).unwrap();
    common::wait_until("the level is drained", || {
        let stats = store.stats();
        stats.next_due_ms.is_none() && stats.dispatched_end_offset >= stats.written_end_offset
    });
    let ids: Vec<MessageId> = store
        .pull("sa", 0, 0, 10)
        .unwrap()
        .iter()
        .map(|m| m.id)
        .collect();
    assert_eq!(
        ids.iter().filter(|id| **id == plain.id).count(),
        1,
        "the plain message was re-posted: {ids:?}"
    );
    assert!(
        ids.contains(&delayed.id) || store.stats().undeliverable > 0,
        "the delayed message is lost and nothing counts it: {ids:?}"
    );
    store.close().unwrap();
}
