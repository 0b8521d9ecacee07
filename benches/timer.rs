//! Timer benchmark: arbitrary delays (`delay_ms` / `deliver_at_ms`, held in the timer wheel of
//! `src/timer.rs`) and cancellation, each next to the baseline it is judged against, measured
//! in the same run.
//!
//! Workloads (each repetition runs every one of them once, the order reversed on odd
//! repetitions, so slow phases of a noisy machine hit every figure alike):
//!
//! - `memory/1M`, `memory/10M` (first repetition only: they are slow and do not vary much):
//!   anonymous memory per pending message. A child process (this binary, re-run with the hidden
//!   `--child`) opens a fresh store ([`SyncMode::Async`], 1 GiB segments), reads `RssAnon` from
//!   `/proc/self/status`, puts N messages with 16 B bodies and random delays of 1 hour to
//!   10 days, waits until they are dispatched, and reads `RssAnon` again. A second child opens
//!   that store afresh and reads `RssAnon` once it has settled; a third does the same on an
//!   empty store, the baseline. Each size runs in its own processes, so figures do not mix.
//!   Also reported: the store's bytes on disk per pending message (the commit-log bytes written,
//!   plus the blocks allocated for everything else: consume queues, decisions, metadata; the
//!   segments themselves are preallocated whole), total RSS, and the time to open.
//! - `lateness/arbitrary`, `lateness/levels`: punctuality under load, on the system clock. One
//!   producer puts 128 B messages at a fixed rate for a fixed time, with random delays of
//!   0..60 s at ms precision (`delay_ms`), or the baseline: random levels of `1s 5s 10s 30s 1m`.
//!   A second producer appends non-delayed 1 KiB messages to another topic at a fixed rate
//!   until the consumer is done. Lateness is when the consumer sees a message (wall clock, to
//!   the microsecond) minus its due time; the store's own (`delivered_ms - due_ms`) is reported
//!   beside it.
//! - `burst/same_second`: 1 M messages put ahead of time with `deliver_at_ms` spread at random
//!   over one whole second S (10 s ahead: they enter the wheel at tier 2); the time from S until
//!   the last one is in its target queue and until the consumer has seen it, and the lateness.
//!   `burst/day_ahead`: the same burst put a day ahead (it enters the wheel at tier 5), on the
//!   system clock plus an offset that then jumps to 60 s before the burst (the whole burst hops
//!   to tier 3: timed as a mass hop), then to 5 s before it. The burst second is the first of a
//!   tier-3 granule (32.8 s), the worst case: the whole burst hops out of tier 3 less than a
//!   second before it is due. The baseline, `burst/drain_levels`: a backlog of 1 M
//!   due level messages drained at once (on a `ManualClock` that jumps 3 hours), timed the
//!   same way from the jump.
//! - `puts/plain`, `puts/delay_ms`: N async puts of 16 B bodies into a fresh store, without
//!   and with random delays of 1 hour to 10 days. The `delay_ms` store is then the one the
//!   cancels run against: `cancel/1_thread` cancels K random pending messages from one thread,
//!   `cancel/4_threads` K others from 4 threads.
//!
//! Run: `cargo bench --bench timer -- [--quick] [--reps N] [--dir PATH]`. Prints a table and
//! writes one JSON line per figure to `target/bench-timer.jsonl` (see `docs/benchmarks.md`).

#[path = "support/figures.rs"]
mod figures;
#[path = "support/json_lines.rs"]
mod json_lines;
#[path = "support/machine.rs"]
mod machine;
#[path = "support/pull.rs"]
mod pull;
#[path = "support/run.rs"]
mod run;
#[path = "support/summary.rs"]
mod summary;
#[path = "support/timing.rs"]
mod timing;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use clap::Parser;
use delaystore::commit_log::COMMIT_LOG_DIR;
use delaystore::seeded::SeededRng;
use delaystore::signal::Signal;
use delaystore::timer::TIER_BITS;
use delaystore::{
    CancelOutcome, Clock, ManualClock, Message, MessageId, Options, Store, StoredMessage, SyncMode,
    SystemClock,
};
use figures::{
    figure, lateness_figures, per_rep_ratios, print_ratio, print_section, put_rate_figures,
    ratio_line, with_goal, Figure, Goal, Results,
};
use json_lines::{json_path, write_json_lines};
use machine::{machine_json, print_machine};
use parking_lot::Mutex;
use pull::{body_seq, consume_topic, Consumer, Seen};
use run::{
    close_shared, fresh_dir, join, open_store, put_retrying, remove_dir, run_dir,
    settle_after_open, spawn, with_store, PutFailures,
};
use serde_json::json;
use summary::percentile;
use timing::{now_us, sleep_until};

const TOPIC: &str = "timer";
const LOAD_TOPIC: &str = "load";
const SMALL_BODY: usize = 16;
const LATENESS_BODY: usize = 128;
const LOAD_BODY: usize = 1024;
const BIG_SEGMENT_BYTES: u64 = 1024 * 1024 * 1024;
const LOAD_SEGMENT_BYTES: u64 = 256 * 1024 * 1024;
const HOUR_MS: u64 = 3_600_000;
const DAY_MS: u64 = 24 * HOUR_MS;
/// Delays of the pending messages of the memory and cancel workloads.
const PENDING_DELAY_MIN_MS: u64 = HOUR_MS;
const PENDING_DELAY_MAX_MS: u64 = 10 * DAY_MS;
const DRAIN_CLOCK_JUMP_MS: u64 = 3 * HOUR_MS;
/// `burst/day_ahead` jumps its clock to this long before the burst second: the whole burst
/// hops from tier 5 to tier 3 (32.8 s granules), where it waits for its granule...
const DAY_AHEAD_FIRST_JUMP_LEAD_MS: u64 = 60_000;
/// ... and once it is all there, jumps again to this long before the burst second (still
/// before the granule starts), so the bench does not wait a minute of real time.
const DAY_AHEAD_FINAL_LEAD_MS: u64 = 5_000;
const CANCEL_THREADS: usize = 4;

/// Published figures for the memory per pending message of other designs (not measured here):
/// Redis sorted-set delay queues, QMQ's in-memory index, Pulsar's delayed-delivery tracker.
const PUBLISHED_BYTES_PER_PENDING: [(&str, f64); 3] =
    [("Redis sorted set", 125.0), ("QMQ", 32.0), ("Pulsar", 24.0)];
/// Target for anonymous memory per pending message: none. Held to 0.1 B, below the 0.125 B of
/// even a one-bit-per-message structure, so that noise of a few pages passes and any
/// per-message state fails.
const TARGET_ANON_BYTES_PER_PENDING: f64 = 0.1;

/// Timer benchmark for delaystore (see the module docs and docs/benchmarks.md).
#[derive(Parser, Debug)]
struct Args {
    /// Smaller sizes and shorter delays (smoke run, under 2 minutes).
    #[arg(long)]
    quick: bool,
    /// Repetitions; each runs every workload once (the memory workloads only in the first).
    /// Default 3 (quick: 1).
    #[arg(long)]
    reps: Option<usize>,
    /// Directory for the temporary stores; must be on the disk under test (not tmpfs).
    /// Default: `$DELAYSTORE_BENCH_DIR`, else the crate's `target/` directory.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// JSON-lines output file (overwritten). Default: the crate's `target/bench-timer.jsonl`.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Run only workloads whose name (e.g. `memory`, `lateness`, `burst`, `puts`) contains this.
    #[arg(long)]
    filter: Option<String>,
    /// Pending-message counts of the memory workloads, comma-separated (default 1000000,10000000;
    /// quick 100000,1000000).
    #[arg(long, value_delimiter = ',')]
    memory_sizes: Option<Vec<u64>>,
    /// Internal: run as the memory child (`build` or `open`) on `--store`.
    #[arg(long, hide = true)]
    child: Option<String>,
    /// Internal: the child's store directory.
    #[arg(long, hide = true)]
    store: Option<PathBuf>,
    /// Internal: messages the `build` child puts.
    #[arg(long, hide = true, default_value_t = 0)]
    count: u64,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

/// Sizes of one run (full or quick).
#[derive(Debug, Clone)]
struct Config {
    dir: PathBuf,
    memory_sizes: Vec<u64>,
    /// How long the delayed producer of the lateness workloads runs.
    lateness_window: Duration,
    /// Delayed messages per second in the lateness workloads (a multiple of 1000).
    lateness_rate: u64,
    /// Non-delayed 1 KiB messages per second of the load producer (a multiple of 1000).
    load_rate: u64,
    /// Longest random delay of `lateness/arbitrary`, in ms.
    delay_max_ms: u64,
    /// The delay levels of `lateness/levels` (their longest equals `delay_max_ms`).
    levels: &'static str,
    burst_count: u64,
    /// How far ahead of the burst second its messages are put, at least.
    burst_lead_ms: u64,
    /// Messages put by each `puts/*` workload (and pending for the cancels).
    put_count: u64,
    /// Messages cancelled by each `cancel/*` figure.
    cancel_count: u64,
}

impl Config {
    fn new(dir: PathBuf, quick: bool, memory_sizes: Option<Vec<u64>>) -> Self {
        if quick {
            Config {
                dir,
                memory_sizes: memory_sizes.unwrap_or_else(|| vec![100_000, 1_000_000]),
                lateness_window: Duration::from_secs(3),
                lateness_rate: 5_000,
                load_rate: 20_000,
                delay_max_ms: 6_000,
                levels: "100ms 500ms 1s 3s 6s",
                burst_count: 100_000,
                burst_lead_ms: 4_000,
                put_count: 100_000,
                cancel_count: 20_000,
            }
        } else {
            Config {
                dir,
                memory_sizes: memory_sizes.unwrap_or_else(|| vec![1_000_000, 10_000_000]),
                lateness_window: Duration::from_secs(10),
                lateness_rate: 10_000,
                load_rate: 20_000,
                delay_max_ms: 60_000,
                levels: "1s 5s 10s 30s 1m",
                burst_count: 1_000_000,
                burst_lead_ms: 10_000,
                put_count: 1_000_000,
                cancel_count: 200_000,
            }
        }
    }
}

/// One workload of one repetition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Workload {
    Memory {
        count: u64,
    },
    Lateness {
        delays: Delays,
    },
    Burst {
        ahead: Ahead,
    },
    Drain,
    PutsPlain,
    /// `puts/delay_ms`, then `cancel/*` on the same store.
    PutsDelayedThenCancel,
}

/// How far ahead a burst is put.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ahead {
    /// `burst_lead_ms` (10 s): the burst enters the timer wheel at tier 2.
    Seconds,
    /// A day, at the start of a tier-3 granule (see [`burst_store`]).
    Day,
}

/// How the lateness workloads delay their messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Delays {
    /// Random `delay_ms` in `0..=delay_max_ms`.
    Arbitrary,
    /// Random levels of the table.
    Levels,
}

impl Workload {
    fn name(self) -> String {
        match self {
            Workload::Memory { count } => format!("memory/{}", count_label(count)),
            Workload::Lateness {
                delays: Delays::Arbitrary,
            } => "lateness/arbitrary".to_owned(),
            Workload::Lateness {
                delays: Delays::Levels,
            } => "lateness/levels".to_owned(),
            Workload::Burst {
                ahead: Ahead::Seconds,
            } => "burst/same_second".to_owned(),
            Workload::Burst { ahead: Ahead::Day } => "burst/day_ahead".to_owned(),
            Workload::Drain => "burst/drain_levels".to_owned(),
            Workload::PutsPlain => "puts/plain".to_owned(),
            Workload::PutsDelayedThenCancel => "puts/delay_ms+cancel".to_owned(),
        }
    }

    fn run(self, config: &Config, rep: usize) -> Result<Vec<Figure>, String> {
        let seed = 0x7157_0000 + rep as u64;
        match self {
            Workload::Memory { count } => memory(config, count),
            Workload::Lateness { delays } => lateness(config, delays, seed),
            Workload::Burst { ahead } => burst(config, seed, ahead),
            Workload::Drain => drain(config),
            Workload::PutsPlain => puts_plain(config),
            Workload::PutsDelayedThenCancel => puts_delayed_then_cancel(config, seed),
        }
    }
}

/// `1M`, `10M`, `100k`, or the number.
fn count_label(count: u64) -> String {
    if count >= 1_000_000 && count.is_multiple_of(1_000_000) {
        format!("{}M", count / 1_000_000)
    } else if count >= 1_000 && count.is_multiple_of(1_000) {
        format!("{}k", count / 1_000)
    } else {
        count.to_string()
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers

fn store_options(segment_bytes: u64) -> Options {
    Options {
        sync_mode: SyncMode::Async,
        segment_bytes,
        ..Options::default()
    }
}

/// A message for `topic` whose body starts with `seq` (little-endian) and is `body` bytes long.
fn numbered(topic: &str, body: usize, seq: u64) -> Message {
    let mut bytes = vec![0u8; body.max(8)];
    bytes[..8].copy_from_slice(&seq.to_le_bytes());
    Message::new(topic, bytes)
}

fn set_seq(message: &mut Message, seq: u64) {
    message.body[..8].copy_from_slice(&seq.to_le_bytes());
}

/// Waits until every record written is dispatched into its consume queue.
fn wait_dispatched(store: &Store, timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    loop {
        let stats = store.stats();
        if stats.dispatched_end_offset >= stats.written_end_offset {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "dispatch did not catch up within {} s ({} of {} bytes)",
                timeout.as_secs(),
                stats.dispatched_end_offset,
                stats.written_end_offset
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Messages waiting in the timer wheel and in the delay levels.
fn pending(store: &Store) -> u64 {
    let stats = store.stats();
    stats.pending_per_tier.iter().sum::<u64>()
        + stats.pending_per_level.iter().map(|(_, n)| n).sum::<u64>()
}

/// Bytes allocated on disk (blocks) under `dir`.
fn disk_usage(dir: &Path) -> Result<u64, String> {
    let mut allocated = 0;
    let entries = std::fs::read_dir(dir).map_err(|e| format!("listing {dir:?}: {e}"))?;
    for entry in entries {
        let entry = entry.map_err(|e| format!("listing {dir:?}: {e}"))?;
        let meta = entry
            .metadata()
            .map_err(|e| format!("stat {:?}: {e}", entry.path()))?;
        allocated += if meta.is_dir() {
            disk_usage(&entry.path())?
        } else {
            meta.blocks() * 512
        };
    }
    Ok(allocated)
}

/// The memory counters of this process, in KiB, from `/proc/self/status`.
#[derive(Debug, Default, Clone, Copy)]
struct Memory {
    rss_kib: u64,
    anon_kib: u64,
    file_kib: u64,
    shmem_kib: u64,
}

impl Memory {
    fn read() -> Result<Memory, String> {
        let status = std::fs::read_to_string("/proc/self/status")
            .map_err(|e| format!("reading /proc/self/status: {e}"))?;
        let field = |name: &str| -> Result<u64, String> {
            status
                .lines()
                .find_map(|line| line.strip_prefix(name))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| format!("no {name} in /proc/self/status"))
        };
        Ok(Memory {
            rss_kib: field("VmRSS:")?,
            anon_kib: field("RssAnon:")?,
            file_kib: field("RssFile:")?,
            shmem_kib: field("RssShmem:")?,
        })
    }

    fn to_json(self) -> serde_json::Value {
        json!({
            "rss_kib": self.rss_kib, "anon_kib": self.anon_kib,
            "file_kib": self.file_kib, "shmem_kib": self.shmem_kib,
        })
    }

    fn from_json(value: &serde_json::Value) -> Memory {
        let kib = |name: &str| value[name].as_u64().unwrap_or(0);
        Memory {
            rss_kib: kib("rss_kib"),
            anon_kib: kib("anon_kib"),
            file_kib: kib("file_kib"),
            shmem_kib: kib("shmem_kib"),
        }
    }
}

/// A producer that puts `per_ms` messages each millisecond (then sleeps until the next one).
#[derive(Debug, Default)]
struct Paced {
    count: u64,
    secs: f64,
    /// Milliseconds whose batch finished after the millisecond was over.
    late_ticks: u64,
    slowest_put: Duration,
    failures: PutFailures,
}

/// Runs `put(seq)` `per_ms` times per millisecond for `ticks` milliseconds, or until `stop`.
fn paced(
    per_ms: u64,
    ticks: Option<u64>,
    stop: &AtomicBool,
    mut put: impl FnMut(u64, &mut PutFailures) -> Result<(), String>,
) -> Result<Paced, String> {
    let mut paced = Paced::default();
    let start = Instant::now();
    let mut tick = 0u64;
    while ticks.is_none_or(|t| tick < t) && !stop.load(Ordering::Relaxed) {
        for _ in 0..per_ms {
            let put_start = Instant::now();
            put(paced.count, &mut paced.failures)?;
            paced.slowest_put = paced.slowest_put.max(put_start.elapsed());
            paced.count += 1;
        }
        tick += 1;
        let next = start + Duration::from_millis(tick);
        if Instant::now() >= next {
            paced.late_ticks += 1;
        }
        sleep_until(next);
    }
    paced.secs = start.elapsed().as_secs_f64();
    Ok(paced)
}

/// What a consumer saw.
#[derive(Debug)]
struct Consumed {
    /// Distinct messages (by the sequence number in their body) and duplicates.
    seen: Seen,
    /// Wall-clock µs when the target queues first held all the messages.
    all_in_queue_us: Option<u64>,
    /// Wall-clock µs when the consumer saw the last new message.
    last_seen_us: Option<u64>,
}

/// Pulls every queue of `topic` until `total` distinct messages arrived or `timeout` passed,
/// calling `each(message, seen_us)` for each new one (`seen_us`: wall clock when its batch
/// arrived).
fn consume(
    store: &Store,
    topic: &str,
    total: u64,
    timeout: Duration,
    each: impl FnMut(&StoredMessage, u64),
) -> Result<Consumed, String> {
    let mut consumer = Consuming {
        topic,
        total,
        each,
        consumed: Consumed {
            seen: Seen::new(total),
            all_in_queue_us: None,
            last_seen_us: None,
        },
    };
    consume_topic(store, topic, Some("bench"), timeout, &mut consumer)?;
    Ok(consumer.consumed)
}

/// The consumer of [`consume`].
struct Consuming<'a, F> {
    topic: &'a str,
    total: u64,
    each: F,
    consumed: Consumed,
}

impl<F: FnMut(&StoredMessage, u64)> Consumer for Consuming<'_, F> {
    fn done(&self) -> bool {
        self.consumed.seen.complete()
    }

    /// Notes when the target queues first hold all the messages.
    fn round(&mut self, store: &Store) -> Result<(), String> {
        if self.consumed.all_in_queue_us.is_none() {
            let queues = store
                .queue_count(self.topic)
                .map_err(|e| format!("queue count: {e}"))?;
            let in_queue = (0..queues)
                .map(|q| store.queue_end_offset(self.topic, q))
                .sum::<delaystore::Result<u64>>()
                .map_err(|e| format!("queue end offset: {e}"))?;
            if in_queue >= self.total {
                self.consumed.all_in_queue_us = Some(now_us());
            }
        }
        Ok(())
    }

    fn take(&mut self, batch: &[StoredMessage]) -> Result<(), String> {
        let seen_us = now_us();
        for message in batch {
            if self.consumed.seen.mark(body_seq(&message.body)) {
                self.consumed.last_seen_us = Some(seen_us);
                (self.each)(message, seen_us);
            }
        }
        Ok(())
    }
}

/// Lateness samples of one workload, in ms.
#[derive(Debug, Default)]
struct Lateness {
    /// Consumer's wall clock when it saw the message, minus the due time.
    observed_ms: Vec<f64>,
    /// The store's delivery time (`delivered_ms`, or the store time of a message that was due
    /// when put), minus the due time.
    store_ms: Vec<f64>,
    early: u64,
    last_delivered_ms: u64,
    /// Store clock minus wall clock (a [`ShiftedClock`]'s offset; 0 on the system clock).
    clock_offset_ms: u64,
}

impl Lateness {
    fn with_capacity(n: u64) -> Self {
        Lateness {
            observed_ms: Vec::with_capacity(n as usize),
            store_ms: Vec::with_capacity(n as usize),
            ..Lateness::default()
        }
    }

    fn record(&mut self, message: &StoredMessage, seen_us: u64) {
        let due_ms = message.due_ms.unwrap_or(message.store_ms);
        let delivered_ms = message.delivered_ms.unwrap_or(message.store_ms);
        let observed = seen_us as f64 / 1000.0 + self.clock_offset_ms as f64 - due_ms as f64;
        let store = delivered_ms as f64 - due_ms as f64;
        if observed < 0.0 || store < 0.0 {
            self.early += 1;
        }
        self.observed_ms.push(observed);
        self.store_ms.push(store);
        self.last_delivered_ms = self.last_delivered_ms.max(delivered_ms);
    }

    fn figures(&mut self, workload: &str) -> Vec<Figure> {
        let mut figures =
            lateness_figures(workload, "observed_lateness", &mut self.observed_ms, None);
        figures.extend(lateness_figures(
            workload,
            "store_lateness",
            &mut self.store_ms,
            None,
        ));
        figures.push(with_goal(
            figure(workload, "early", "count", self.early as f64),
            Goal::AtMost(0.0),
        ));
        figures
    }
}

/// Figures every delivering workload checks: nothing missing, nothing twice.
fn delivery_checks(workload: &str, total: u64, consumed: &Consumed) -> Vec<Figure> {
    vec![
        with_goal(
            figure(
                workload,
                "missing",
                "count",
                total.saturating_sub(consumed.seen.unique) as f64,
            ),
            Goal::AtMost(0.0),
        ),
        with_goal(
            figure(
                workload,
                "duplicates",
                "count",
                consumed.seen.duplicates as f64,
            ),
            Goal::AtMost(0.0),
        ),
    ]
}

// ---------------------------------------------------------------------------------------------
// 1. Memory and disk per pending message

/// What a memory child reports (one JSON line on stdout).
fn child_main(args: &Args) -> Result<serde_json::Value, String> {
    let dir = args.store.as_deref().ok_or("--child needs --store")?;
    match args.child.as_deref() {
        Some("build") => child_build(dir, args.count),
        Some("open") => child_open(dir),
        other => Err(format!("unknown child {other:?}")),
    }
}

/// Lets the background threads settle after open or a load: dispatch caught up, a delivery
/// round done.
fn settle_store(store: &Store) -> Result<(), String> {
    wait_dispatched(store, Duration::from_secs(300))?;
    std::thread::sleep(Duration::from_millis(1500));
    Ok(())
}

/// Opens a fresh store, measures it empty, puts `count` messages with random delays of 1 h to
/// 10 days, measures it again.
fn child_build(dir: &Path, count: u64) -> Result<serde_json::Value, String> {
    let store = open_store(dir, store_options(BIG_SEGMENT_BYTES))?;
    settle_store(&store)?;
    let empty = Memory::read()?;
    let mut rng = SeededRng::new(0x6d65_6d00 ^ count);
    let mut message = numbered(TOPIC, SMALL_BODY, 0);
    let mut failures = PutFailures::default();
    let start = Instant::now();
    for seq in 0..count {
        set_seq(&mut message, seq);
        message.delay_ms = Some(rng.between(PENDING_DELAY_MIN_MS, PENDING_DELAY_MAX_MS));
        put_retrying(&store, &message, &mut failures)?;
    }
    let put_secs = start.elapsed().as_secs_f64();
    settle_store(&store)?;
    let loaded = Memory::read()?;
    let stats = store.stats();
    let pending = pending(&store);
    store.close().map_err(|e| format!("closing: {e}"))?;
    failures.report("memory child", "pending");
    Ok(json!({
        "empty": empty.to_json(), "loaded": loaded.to_json(), "pending": pending,
        "put_secs": put_secs, "put_failures": failures.count,
        "log_bytes": stats.written_end_offset - stats.log_start_offset,
        "pending_per_tier": stats.pending_per_tier,
    }))
}

/// Opens an existing store and measures it once settled.
fn child_open(dir: &Path) -> Result<serde_json::Value, String> {
    let options = Options {
        create_if_missing: false,
        ..store_options(BIG_SEGMENT_BYTES)
    };
    let start = Instant::now();
    let store = Store::open(dir, options).map_err(|e| format!("opening {dir:?}: {e}"))?;
    let open_secs = start.elapsed().as_secs_f64();
    settle_after_open(dir, BIG_SEGMENT_BYTES)?;
    settle_store(&store)?;
    let open = Memory::read()?;
    let pending = pending(&store);
    store.close().map_err(|e| format!("closing: {e}"))?;
    Ok(json!({ "open": open.to_json(), "pending": pending, "open_secs": open_secs }))
}

/// Runs this binary as a memory child and returns its report.
fn run_child(kind: &str, dir: &Path, count: u64) -> Result<serde_json::Value, String> {
    let exe = std::env::current_exe().map_err(|e| format!("finding this binary: {e}"))?;
    let output = std::process::Command::new(exe)
        .arg("--child")
        .arg(kind)
        .arg("--store")
        .arg(dir)
        .arg("--count")
        .arg(count.to_string())
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| format!("running the {kind} child: {e}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(format!(
            "the {kind} child failed ({}): {}",
            output.status,
            stdout.trim()
        ));
    }
    let last = stdout.lines().last().unwrap_or("");
    serde_json::from_str(last).map_err(|e| format!("the {kind} child said {last:?}: {e}"))
}

fn memory(config: &Config, count: u64) -> Result<Vec<Figure>, String> {
    let workload = Workload::Memory { count }.name();
    let empty_dir = fresh_dir(&config.dir, "memory-empty")?;
    let full_dir = fresh_dir(&config.dir, "memory-pending")?;
    let result = measure_memory(&workload, &empty_dir, &full_dir, count);
    remove_dir(&empty_dir);
    remove_dir(&full_dir);
    result
}

fn measure_memory(
    workload: &str,
    empty_dir: &Path,
    full_dir: &Path,
    count: u64,
) -> Result<Vec<Figure>, String> {
    run_child("build", empty_dir, 0)?;
    let empty_open = run_child("open", empty_dir, 0)?;
    let built = run_child("build", full_dir, count)?;
    // Commit-log segments are preallocated whole (1 GiB each, the current one and the next):
    // the log is counted by the bytes written, everything else by the blocks allocated.
    let disk_bytes = disk_usage(full_dir)?;
    let log_disk_bytes = disk_usage(&full_dir.join(COMMIT_LOG_DIR))?;
    let index_bytes = disk_bytes.saturating_sub(log_disk_bytes);
    let opened = run_child("open", full_dir, 0)?;
    for (what, report) in [("after the puts", &built), ("after reopening", &opened)] {
        let pending = report["pending"].as_u64().unwrap_or(0);
        if pending != count {
            return Err(format!(
                "{pending} messages pending {what}, expected {count}"
            ));
        }
    }
    let empty_open = Memory::from_json(&empty_open["open"]);
    let open = Memory::from_json(&opened["open"]);
    let before = Memory::from_json(&built["empty"]);
    let loaded = Memory::from_json(&built["loaded"]);
    let per_pending = |kib_delta: i64| kib_delta as f64 * 1024.0 / count as f64;
    let mib = |kib: u64| kib as f64 / 1024.0;
    // Below 1 M pending, the fixed state of the ~55 timer-slot queues in use (tens of KiB)
    // weighs more than the target per message: no target there.
    let anon_goal = |f: Figure| {
        if count >= 1_000_000 {
            with_goal(f, Goal::AtMost(TARGET_ANON_BYTES_PER_PENDING))
        } else {
            f
        }
    };
    let log_bytes = built["log_bytes"].as_u64().unwrap_or(0);
    eprintln!(
        "  {workload}: pending per tier {}; RssAnon empty/open {} / {} KiB, in the put process {} -> {} KiB",
        built["pending_per_tier"], empty_open.anon_kib, open.anon_kib, before.anon_kib, loaded.anon_kib
    );
    Ok(vec![
        anon_goal(figure(
            workload,
            "anon_bytes_per_pending_reopened",
            "B",
            per_pending(open.anon_kib as i64 - empty_open.anon_kib as i64),
        )),
        anon_goal(figure(
            workload,
            "anon_bytes_per_pending_after_puts",
            "B",
            per_pending(loaded.anon_kib as i64 - before.anon_kib as i64),
        )),
        figure(
            workload,
            "anon_delta_reopened",
            "KiB",
            open.anon_kib as f64 - empty_open.anon_kib as f64,
        ),
        figure(workload, "rss_anon_empty", "MiB", mib(empty_open.anon_kib)),
        figure(workload, "rss_anon_reopened", "MiB", mib(open.anon_kib)),
        figure(workload, "rss_file_reopened", "MiB", mib(open.file_kib)),
        figure(workload, "rss_total_reopened", "MiB", mib(open.rss_kib)),
        figure(workload, "rss_total_after_puts", "MiB", mib(loaded.rss_kib)),
        figure(
            workload,
            "disk_bytes_per_pending",
            "B",
            (log_bytes + index_bytes) as f64 / count as f64,
        ),
        figure(
            workload,
            "log_bytes_per_pending",
            "B",
            log_bytes as f64 / count as f64,
        ),
        figure(
            workload,
            "index_bytes_per_pending",
            "B",
            index_bytes as f64 / count as f64,
        ),
        figure(
            workload,
            "disk_allocated_total",
            "MiB",
            disk_bytes as f64 / 1048576.0,
        ),
        figure(
            workload,
            "put_rate",
            "msg/s",
            count as f64 / built["put_secs"].as_f64().unwrap_or(f64::NAN),
        ),
        figure(
            workload,
            "open_secs",
            "s",
            opened["open_secs"].as_f64().unwrap_or(f64::NAN),
        ),
    ])
}

// ---------------------------------------------------------------------------------------------
// 2. Lateness under load: arbitrary delays vs delay levels

fn lateness(config: &Config, delays: Delays, seed: u64) -> Result<Vec<Figure>, String> {
    let workload = Workload::Lateness { delays }.name();
    let dir = fresh_dir(&config.dir, "lateness")?;
    let options = Options {
        delay_levels: Some(config.levels.to_owned()),
        ..store_options(LOAD_SEGMENT_BYTES)
    };
    let store = Arc::new(open_store(&dir, options)?);
    let level_count = store.delay_levels_ms().len() as u64;
    let ticks = config.lateness_window.as_millis() as u64;
    let per_ms = (config.lateness_rate / 1000).max(1);
    let total = per_ms * ticks;
    let stop = Arc::new(AtomicBool::new(false));

    let load = {
        let (store, stop) = (store.clone(), stop.clone());
        let per_ms = (config.load_rate / 1000).max(1);
        spawn("bench-load", move || {
            let message = numbered(LOAD_TOPIC, LOAD_BODY, 0);
            paced(per_ms, None, &stop, |_, failures| {
                put_retrying(&store, &message, failures).map(|_| ())
            })
        })?
    };
    let producer = {
        let store = store.clone();
        let delay_max_ms = config.delay_max_ms;
        spawn("bench-delayed", move || {
            let mut rng = SeededRng::new(seed);
            let mut message = numbered(TOPIC, LATENESS_BODY, 0);
            let never = AtomicBool::new(false);
            paced(per_ms, Some(ticks), &never, |seq, failures| {
                set_seq(&mut message, seq);
                match delays {
                    Delays::Arbitrary => message.delay_ms = Some(rng.between(0, delay_max_ms)),
                    Delays::Levels => message.delay_level = rng.between(1, level_count) as u8,
                }
                put_retrying(&store, &message, failures).map(|_| ())
            })
        })?
    };

    let timeout = config.lateness_window
        + Duration::from_millis(config.delay_max_ms)
        + Duration::from_secs(60);
    let mut lateness = Lateness::with_capacity(total);
    let consumed = consume(&store, TOPIC, total, timeout, |m, seen| {
        lateness.record(m, seen)
    });
    stop.store(true, Ordering::Relaxed);
    let produced = join(producer, "delayed producer")?;
    let load = join(load, "load producer")?;
    let stats = store.stats();
    close_shared(store)?;
    remove_dir(&dir);
    let consumed = consumed?;
    let produced = produced?;
    let load = load?;
    produced.failures.report(&workload, "delayed");
    load.failures.report(&workload, "load");
    if consumed.seen.unique < total {
        eprintln!(
            "  {workload}: {} of {total} delayed messages not delivered within {} s; pending per \
             level {:?}, per tier {:?}",
            total - consumed.seen.unique,
            timeout.as_secs(),
            stats.pending_per_level,
            stats.pending_per_tier
        );
    }

    let mut figures = lateness.figures(&workload);
    figures.extend(delivery_checks(&workload, total, &consumed));
    figures.extend([
        figure(
            &workload,
            "delayed_put_rate",
            "msg/s",
            produced.count as f64 / produced.secs,
        ),
        figure(
            &workload,
            "delayed_put_max",
            "ms",
            produced.slowest_put.as_secs_f64() * 1000.0,
        ),
        figure(
            &workload,
            "load_put_rate",
            "msg/s",
            load.count as f64 / load.secs,
        ),
        figure(
            &workload,
            "load_put_max",
            "ms",
            load.slowest_put.as_secs_f64() * 1000.0,
        ),
        figure(
            &workload,
            "late_1ms_batches",
            "count",
            (produced.late_ticks + load.late_ticks) as f64,
        ),
        figure(
            &workload,
            "put_failures",
            "count",
            (produced.failures.count + load.failures.count) as f64,
        ),
    ]);
    Ok(figures)
}

// ---------------------------------------------------------------------------------------------
// 3. A same-second burst vs a backlog drain

/// The system clock plus an offset that the bench moves forward: lets a burst be put a day
/// ahead and then reached without waiting a day. Time runs at the real pace in between.
#[derive(Debug, Default)]
struct ShiftedClock {
    offset_ms: AtomicU64,
    wakers: Mutex<Vec<Arc<Signal>>>,
}

impl ShiftedClock {
    fn offset_ms(&self) -> u64 {
        self.offset_ms.load(Ordering::SeqCst)
    }

    /// Moves the clock forward so that it reads `at_ms` now.
    fn jump_to(&self, at_ms: u64) {
        let real_ms = SystemClock.now_ms();
        self.offset_ms
            .fetch_max(at_ms.saturating_sub(real_ms), Ordering::SeqCst);
        for signal in self.wakers.lock().iter() {
            signal.notify();
        }
    }
}

impl Clock for ShiftedClock {
    fn now_ms(&self) -> u64 {
        SystemClock.now_ms() + self.offset_ms()
    }

    fn register_waker(&self, signal: Arc<Signal>) {
        self.wakers.lock().push(signal);
    }
}

fn burst(config: &Config, seed: u64, ahead: Ahead) -> Result<Vec<Figure>, String> {
    let workload = Workload::Burst { ahead }.name();
    let dir = fresh_dir(&config.dir, "burst")?;
    let clock = Arc::new(ShiftedClock::default());
    let options = match ahead {
        Ahead::Seconds => store_options(BIG_SEGMENT_BYTES),
        Ahead::Day => Options {
            clock: clock.clone(),
            ..store_options(BIG_SEGMENT_BYTES)
        },
    };
    with_store(&dir, options, |store| {
        burst_store(config, store, &clock, seed, ahead, &workload)
    })
}

fn burst_store(
    config: &Config,
    store: &Store,
    clock: &ShiftedClock,
    seed: u64,
    ahead: Ahead,
    workload: &str,
) -> Result<Vec<Figure>, String> {
    let count = config.burst_count;
    let now_ms = SystemClock.now_ms();
    let tier3_granule_ms = 1u64 << (3 * TIER_BITS);
    let second_ms = match ahead {
        Ahead::Seconds => (now_ms + config.burst_lead_ms).div_ceil(1000) * 1000,
        // The first whole second of a tier-3 granule a day ahead: the granule is released (all
        // of the burst hops out of tier 3 at once) less than a second before the burst.
        Ahead::Day => {
            ((now_ms + DAY_MS).div_ceil(tier3_granule_ms) * tier3_granule_ms).div_ceil(1000) * 1000
        }
    };
    let mut rng = SeededRng::new(seed);
    let mut message = numbered(TOPIC, SMALL_BODY, 0);
    let mut failures = PutFailures::default();
    let start = Instant::now();
    for seq in 0..count {
        set_seq(&mut message, seq);
        message.deliver_at_ms = Some(second_ms + rng.below(1000));
        put_retrying(store, &message, &mut failures)?;
    }
    let put_secs = start.elapsed().as_secs_f64();
    failures.report(workload, "burst");
    wait_dispatched(store, Duration::from_secs(120))?;
    let per_tier_put = store.stats().pending_per_tier;
    let mut cascade_secs = None;
    if ahead == Ahead::Day {
        clock.jump_to(second_ms - DAY_AHEAD_FIRST_JUMP_LEAD_MS);
        let start = Instant::now();
        while store.stats().pending_per_tier.get(3).copied() != Some(count) {
            if start.elapsed() > Duration::from_secs(120) {
                return Err(format!(
                    "the burst did not reach tier 3 within 120 s: {:?}",
                    store.stats().pending_per_tier
                ));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        cascade_secs = Some(start.elapsed().as_secs_f64());
        clock.jump_to(second_ms - DAY_AHEAD_FINAL_LEAD_MS);
    }
    // Store time = real time + offset; the burst second in real time is `second_ms - offset`.
    let offset_ms = clock.offset_ms();
    // Margin left between the end of the puts (and the jump) and the burst second.
    let margin_ms = second_ms as f64 - (now_us() as f64 / 1000.0 + offset_ms as f64);
    if margin_ms < 1000.0 {
        eprintln!("  {workload}: the puts ended only {margin_ms:.0} ms before the burst second");
    }
    let timeout = Duration::from_millis(config.burst_lead_ms) + Duration::from_secs(120);
    let mut lateness = Lateness::with_capacity(count);
    lateness.clock_offset_ms = offset_ms;
    let consumed = consume(store, TOPIC, count, timeout, |m, seen| {
        lateness.record(m, seen)
    })?;
    eprintln!("  {workload}: pending per tier after the puts {per_tier_put:?}");
    let since_second = |us: Option<u64>| {
        us.map_or(f64::NAN, |us| {
            (us as f64 / 1000.0 + offset_ms as f64 - second_ms as f64) / 1000.0
        })
    };
    let mut figures = vec![
        figure(
            workload,
            "all_in_queue_after_second_start",
            "s",
            since_second(consumed.all_in_queue_us),
        ),
        figure(
            workload,
            "all_consumed_after_second_start",
            "s",
            since_second(consumed.last_seen_us),
        ),
        figure(
            workload,
            "last_delivered_ms_after_second_start",
            "s",
            (lateness.last_delivered_ms as f64 - second_ms as f64) / 1000.0,
        ),
        figure(workload, "put_rate", "msg/s", count as f64 / put_secs),
        figure(workload, "put_margin", "ms", margin_ms),
    ];
    if let Some(secs) = cascade_secs {
        // The jump released the whole burst from tier 5 at once: a mass hop to tier 3.
        figures.push(figure(workload, "tier5_to_tier3_hop_secs", "s", secs));
        figures.push(figure(workload, "hop_rate", "msg/s", count as f64 / secs));
    }
    figures.extend(lateness.figures(workload));
    figures.extend(delivery_checks(workload, count, &consumed));
    Ok(figures)
}

/// The baseline: `burst_count` due level messages drained at once, timed from the clock jump.
fn drain(config: &Config) -> Result<Vec<Figure>, String> {
    let workload = Workload::Drain.name();
    let dir = fresh_dir(&config.dir, "drain")?;
    let clock = ManualClock::new(now_us() / 1000);
    let options = Options {
        delay_levels: Some(config.levels.to_owned()),
        clock: Arc::new(clock.clone()),
        ..store_options(BIG_SEGMENT_BYTES)
    };
    with_store(&dir, options, |store| {
        drain_store(config, store, &clock, &workload)
    })
}

fn drain_store(
    config: &Config,
    store: &Store,
    clock: &ManualClock,
    workload: &str,
) -> Result<Vec<Figure>, String> {
    let count = config.burst_count;
    let mut message = numbered(TOPIC, SMALL_BODY, 0).with_delay_level(1);
    let mut failures = PutFailures::default();
    for seq in 0..count {
        set_seq(&mut message, seq);
        put_retrying(store, &message, &mut failures)?;
    }
    failures.report(workload, "backlog");
    store.flush().map_err(|e| format!("flush: {e}"))?;
    wait_dispatched(store, Duration::from_secs(120))?;
    let backlog = pending(store);
    if backlog != count {
        return Err(format!("{backlog} pending after putting {count}"));
    }
    let jump_us = now_us();
    clock.advance_ms(DRAIN_CLOCK_JUMP_MS);
    let timeout = Duration::from_secs(120);
    let consumed = consume(store, TOPIC, count, timeout, |_, _| {})?;
    let since_jump =
        |us: Option<u64>| us.map_or(f64::NAN, |us| us.saturating_sub(jump_us) as f64 / 1e6);
    let all_in_queue_s = since_jump(consumed.all_in_queue_us);
    let mut figures = vec![
        figure(workload, "all_in_queue_after_jump", "s", all_in_queue_s),
        figure(
            workload,
            "all_consumed_after_jump",
            "s",
            since_jump(consumed.last_seen_us),
        ),
        figure(
            workload,
            "drain_rate",
            "msg/s",
            count as f64 / all_in_queue_s,
        ),
    ];
    figures.extend(delivery_checks(workload, count, &consumed));
    Ok(figures)
}

// ---------------------------------------------------------------------------------------------
// 4. Put throughput with and without delay_ms; cancel throughput

fn puts_plain(config: &Config) -> Result<Vec<Figure>, String> {
    let workload = Workload::PutsPlain.name();
    let dir = fresh_dir(&config.dir, "puts-plain")?;
    put_rate_figures(
        &workload,
        "plain",
        &dir,
        store_options(BIG_SEGMENT_BYTES),
        numbered(TOPIC, SMALL_BODY, 0),
        config.put_count,
    )
}

fn puts_delayed_then_cancel(config: &Config, seed: u64) -> Result<Vec<Figure>, String> {
    let dir = fresh_dir(&config.dir, "puts-delayed")?;
    let store = Arc::new(open_store(&dir, store_options(BIG_SEGMENT_BYTES))?);
    let result = puts_delayed_then_cancel_store(config, &store, seed);
    close_shared(store)?;
    remove_dir(&dir);
    result
}

fn puts_delayed_then_cancel_store(
    config: &Config,
    store: &Arc<Store>,
    seed: u64,
) -> Result<Vec<Figure>, String> {
    let puts = "puts/delay_ms";
    let mut rng = SeededRng::new(seed);
    let mut message = numbered(TOPIC, SMALL_BODY, 0);
    let mut failures = PutFailures::default();
    let mut ids = Vec::with_capacity(config.put_count as usize);
    let start = Instant::now();
    for seq in 0..config.put_count {
        set_seq(&mut message, seq);
        message.delay_ms = Some(rng.between(PENDING_DELAY_MIN_MS, PENDING_DELAY_MAX_MS));
        ids.push(put_retrying(store, &message, &mut failures)?);
    }
    let secs = start.elapsed().as_secs_f64();
    failures.report(puts, "delayed");
    let mut figures = vec![
        figure(puts, "put_rate", "msg/s", config.put_count as f64 / secs),
        figure(puts, "put_failures", "count", failures.count as f64),
    ];

    // Cancel random pending messages: K from one thread, K others from 4.
    wait_dispatched(store, Duration::from_secs(120))?;
    for i in (1..ids.len()).rev() {
        ids.swap(i, rng.below(i as u64 + 1) as usize);
    }
    let k = (config.cancel_count as usize).min(ids.len() / 2);
    let (one, four) = ids.split_at(k);
    let four = &four[..k];

    let workload = "cancel/1_thread";
    let mut latencies_us = Vec::with_capacity(k);
    let mut unexpected = 0u64;
    let start = Instant::now();
    for &id in one {
        let t = Instant::now();
        let outcome = store
            .cancel(MessageId(id))
            .map_err(|e| format!("cancel: {e}"))?;
        latencies_us.push(t.elapsed().as_secs_f64() * 1e6);
        if outcome != CancelOutcome::Cancelled {
            unexpected += 1;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    latencies_us.sort_by(f64::total_cmp);
    figures.extend([
        figure(workload, "cancel_rate", "cancels/s", k as f64 / secs),
        figure(workload, "cancel_p50", "us", percentile(&latencies_us, 0.5)),
        figure(
            workload,
            "cancel_p99",
            "us",
            percentile(&latencies_us, 0.99),
        ),
        figure(workload, "cancel_max", "us", percentile(&latencies_us, 1.0)),
        with_goal(
            figure(workload, "not_cancelled", "count", unexpected as f64),
            Goal::AtMost(0.0),
        ),
    ]);

    let workload = "cancel/4_threads";
    let barrier = Arc::new(Barrier::new(CANCEL_THREADS + 1));
    let chunk = k.div_ceil(CANCEL_THREADS);
    let threads = four
        .chunks(chunk)
        .map(|ids| {
            let (store, barrier, ids) = (store.clone(), barrier.clone(), ids.to_vec());
            spawn("bench-cancel", move || -> Result<u64, String> {
                barrier.wait();
                let mut unexpected = 0;
                for id in ids {
                    let outcome = store
                        .cancel(MessageId(id))
                        .map_err(|e| format!("cancel: {e}"))?;
                    if outcome != CancelOutcome::Cancelled {
                        unexpected += 1;
                    }
                }
                Ok(unexpected)
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    barrier.wait();
    let start = Instant::now();
    let mut unexpected = 0;
    for thread in threads {
        unexpected += join(thread, "cancel")??;
    }
    let secs = start.elapsed().as_secs_f64();
    let stats = store.stats();
    figures.extend([
        figure(workload, "cancel_rate", "cancels/s", k as f64 / secs),
        with_goal(
            figure(workload, "not_cancelled", "count", unexpected as f64),
            Goal::AtMost(0.0),
        ),
        with_goal(
            figure(
                workload,
                "stats_cancelled_minus_cancels",
                "count",
                stats.cancelled as f64 - 2.0 * k as f64,
            ),
            Goal::AtMost(0.0),
        ),
        figure(
            workload,
            "stats_pending_after_cancels",
            "count",
            stats.pending_per_tier.iter().sum::<u64>() as f64,
        ),
    ]);
    Ok(figures)
}

// ---------------------------------------------------------------------------------------------
// Reporting

fn report(
    results: &Results,
    config: &Config,
    machine: &serde_json::Value,
    mode: &str,
    reps: usize,
    path: &Path,
) {
    println!(
        "\n== delaystore timer benchmark ({mode}, {reps} reps; median (min-max) over reps) =="
    );
    print_section(
        results,
        "1. Memory and disk per pending message (random delays 1 h..10 d, 16 B bodies; first rep only)",
        "memory/",
    );
    if results
        .series
        .iter()
        .any(|s| s.workload.starts_with("memory/"))
    {
        let published: Vec<String> = PUBLISHED_BYTES_PER_PENDING
            .iter()
            .map(|(name, bytes)| format!("{name} ~{bytes:.0} B"))
            .collect();
        println!(
            "published figures (not measured here): {}",
            published.join(", ")
        );
    }
    let marginal = marginal_anon_bytes(results, &config.memory_sizes);
    print_section(
        results,
        &format!(
            "2. Lateness under load ({} delayed msg/s of {LATENESS_BODY} B for {} s, delays 0..{} ms vs levels \"{}\"; {} msg/s of {LOAD_BODY} B alongside)",
            config.lateness_rate,
            config.lateness_window.as_secs(),
            config.delay_max_ms,
            config.levels,
            config.load_rate
        ),
        "lateness/",
    );
    let mut ratios = Vec::new();
    for name in [
        "observed_lateness_p50",
        "observed_lateness_p99",
        "observed_lateness_max",
    ] {
        if let (Some(a), Some(b)) = (
            results.get("lateness/arbitrary", name),
            results.get("lateness/levels", name),
        ) {
            ratios.push((
                "lateness/arbitrary",
                format!("{name} / levels"),
                per_rep_ratios(a, b),
            ));
        }
    }
    print_section(
        results,
        &format!(
            "3. Same-second burst of {} vs a backlog drain of as many due level messages",
            config.burst_count
        ),
        "burst/",
    );
    for workload in ["burst/same_second", "burst/day_ahead"] {
        if let (Some(a), Some(b)) = (
            results.get(workload, "all_in_queue_after_second_start"),
            results.get("burst/drain_levels", "all_in_queue_after_jump"),
        ) {
            ratios.push((
                workload,
                "all_in_queue / drain".to_owned(),
                per_rep_ratios(a, b),
            ));
        }
    }
    print_section(
        results,
        &format!(
            "4a. Puts ({} of {SMALL_BODY} B, fresh store) without and with delay_ms (1 h..10 d)",
            config.put_count
        ),
        "puts/",
    );
    print_section(
        results,
        &format!(
            "4b. Cancels of random pending messages ({} per figure) against the {} of puts/delay_ms",
            config.cancel_count, config.put_count
        ),
        "cancel/",
    );
    if let (Some(a), Some(b)) = (
        results.get("puts/delay_ms", "put_rate"),
        results.get("puts/plain", "put_rate"),
    ) {
        ratios.push((
            "puts/delay_ms",
            "put_rate / plain".to_owned(),
            per_rep_ratios(a, b),
        ));
    }
    if !ratios.is_empty() {
        println!("\nRatios (per repetition, same run)");
        for (workload, name, values) in &ratios {
            print_ratio(workload, name, values);
        }
    }
    for (workload, rep, failure) in &results.failures {
        println!("FAILED {workload} (rep {rep}): {failure}");
    }

    let mut lines = results.json_lines("timer", mode, machine);
    for (workload, name, values) in &ratios {
        lines.push(ratio_line("timer", mode, machine, workload, name, values));
    }
    if let Some((small, large, bytes)) = marginal {
        lines.push(json!({
            "bench": "timer", "mode": mode, "workload": format!("memory/{small}..{large}"),
            "figure": "anon_bytes_per_pending_marginal", "unit": "B", "median": bytes,
            "min": bytes, "max": bytes, "values": [bytes], "machine": machine,
        }));
    }
    for (name, bytes) in PUBLISHED_BYTES_PER_PENDING {
        lines.push(json!({
            "bench": "timer", "mode": mode, "workload": "memory/published",
            "figure": name, "unit": "B", "published": bytes, "measured": false,
        }));
    }
    if let Err(e) = write_json_lines(path, &lines) {
        eprintln!("{e}");
    }
}

/// Anonymous memory per extra pending message between the smallest and the largest memory
/// size measured (the fixed per-queue state cancels out), printed; `None` with fewer than two
/// sizes.
fn marginal_anon_bytes(results: &Results, sizes: &[u64]) -> Option<(String, String, f64)> {
    let delta_kib = |count: u64| {
        let name = Workload::Memory { count }.name();
        results
            .get(&name, "anon_delta_reopened")
            .and_then(|s| s.values.first().copied())
            .map(|kib| (count, kib))
    };
    let measured: Vec<(u64, f64)> = sizes.iter().filter_map(|&c| delta_kib(c)).collect();
    let small = measured.iter().min_by_key(|(count, _)| *count)?;
    let large = measured.iter().max_by_key(|(count, _)| *count)?;
    if large.0 <= small.0 {
        return None;
    }
    let bytes = (large.1 - small.1) * 1024.0 / (large.0 - small.0) as f64;
    let (small_label, large_label) = (count_label(small.0), count_label(large.0));
    println!(
        "{:<20} {:<34} {:>32} {:>16}",
        format!("memory/{small_label}..{large_label}"),
        "anon_bytes_per_pending_marginal [B]",
        format!("{bytes:.3}"),
        Goal::AtMost(TARGET_ANON_BYTES_PER_PENDING).describe("B")
    );
    Some((small_label, large_label, bytes))
}

fn main() {
    let args = Args::parse();
    if args.child.is_some() {
        match child_main(&args) {
            Ok(report) => println!("{report}"),
            Err(e) => {
                eprintln!("memory child: {e}");
                std::process::exit(1);
            }
        }
        return;
    }
    let dir = run_dir(args.dir.as_deref(), "timer").unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(2)
    });
    let json_path = json_path(args.json.as_deref(), "bench-timer.jsonl");
    let config = Config::new(dir.clone(), args.quick, args.memory_sizes.clone());
    let reps = args.reps.unwrap_or(if args.quick { 1 } else { 3 });
    let mode = if args.quick { "quick" } else { "full" };
    let machine = machine_json(&dir);
    print_machine(&machine, &dir);

    let mut workloads = vec![
        Workload::Lateness {
            delays: Delays::Arbitrary,
        },
        Workload::Lateness {
            delays: Delays::Levels,
        },
        Workload::Burst {
            ahead: Ahead::Seconds,
        },
        Workload::Burst { ahead: Ahead::Day },
        Workload::Drain,
        Workload::PutsPlain,
        Workload::PutsDelayedThenCancel,
    ];
    let memory: Vec<Workload> = config
        .memory_sizes
        .iter()
        .map(|&count| Workload::Memory { count })
        .collect();
    if let Some(filter) = &args.filter {
        workloads.retain(|w| w.name().contains(filter.as_str()));
    }
    let memory: Vec<Workload> = memory
        .into_iter()
        .filter(|w| {
            args.filter
                .as_ref()
                .is_none_or(|f| w.name().contains(f.as_str()))
        })
        .collect();

    let started = Instant::now();
    let mut results = Results::default();
    for rep in 0..reps {
        let mut order = workloads.clone();
        if rep % 2 == 1 {
            order.reverse();
        }
        if rep == 0 {
            order.splice(0..0, memory.iter().copied());
        }
        for workload in order {
            results.run_workload(workload.name(), rep, reps, || workload.run(&config, rep));
        }
    }
    eprintln!("total {:.0} s", started.elapsed().as_secs_f64());
    report(&results, &config, &machine, mode, reps, &json_path);
    remove_dir(&dir);
    if !results.failures.is_empty() {
        std::process::exit(1);
    }
}
