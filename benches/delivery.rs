//! Delivery benchmark: how late delayed messages arrive and how fast a backlog drains, next to
//! the baselines they are judged against, measured in the same run.
//!
//! Workloads (each repetition runs every one of them once, the order reversed on odd
//! repetitions, so slow phases of a noisy machine hit every figure alike):
//!
//! - `load/10k`, `load/100k`: a store ([`SyncMode::Async`], 256 MiB segments, one delay level
//!   of 1 s) on the system clock. One producer puts level-1 messages with 128 B bodies at a
//!   steady rate (a batch every 1 ms, paced by sleeping until the next millisecond) for a fixed
//!   time, while a second producer appends non-delayed 1 KiB messages to another topic as fast
//!   as it can until the consumer is done. The consumer pulls every queue of the target topic
//!   (sleeping with `visibility_token`/`wait_for_entries`) and records, per message, the
//!   store's lateness `delivered_ms - due_ms` and its own `now - due_ms`. `load/100k_no_bulk`
//!   is the same 100k/s stream without the bulk producer: the reference that tells the store's
//!   own lateness from the effect of the competing writer.
//! - `drain/put_baseline`, `drain/1_level`, `drain/18_levels`: on a [`ManualClock`], a backlog
//!   of delayed 128 B messages (one level of 1 s; or RocketMQ's 18 default levels, round-robin)
//!   is put and flushed, the clock jumps 3 hours, and the time until every message is in the
//!   target topic (sum of `queue_end_offset`) gives re-posts per second. The baseline is the
//!   same number of async puts of a 20 B body (the size of a delivery record's body) into a
//!   fresh store.
//! - `orders`: the order-timeout scenario, (a) delayed messages through the store and (b) an
//!   in-memory orders table scanned every P seconds, fed by one order-creating thread, run
//!   side by side: closing lateness (close time - order deadline) and rows read per order.
//!
//! Run: `cargo bench --bench delivery -- [--quick] [--reps N] [--dir PATH]`. Prints a table and
//! writes one JSON line per figure to `target/bench-delivery.jsonl` (see `docs/benchmarks.md`).

#[path = "support/machine.rs"]
mod machine;
#[path = "support/orders.rs"]
mod orders;
#[path = "support/summary.rs"]
mod summary;
#[path = "support/timing.rs"]
mod timing;

use machine::{cpu_model, mem_total_kib, mount_of, read_trimmed};
use orders::{close_by_store, scan_table, Table};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use summary::{percentile, summarize};
use timing::{now_us, sleep_until};

use clap::Parser;
use delaystore::commit_log::COMMIT_LOG_DIR;
use delaystore::delay_levels::format_delay_levels;
use delaystore::naming::offset_file_name;
use delaystore::{Clock, ManualClock, Message, Options, Store, SyncMode, SystemClock};
use serde_json::json;

const LOAD_SEGMENT_BYTES: u64 = 256 * 1024 * 1024;
const ORDERS_SEGMENT_BYTES: u64 = 64 * 1024 * 1024;
const LOAD_RATES: [u64; 2] = [10_000, 100_000];
/// Rate of the reference run without the bulk producer.
const NO_BULK_RATE: u64 = 100_000;
const LOAD_BODY: usize = 128;
const BULK_BODY: usize = 1024;
const DRAIN_BODY: usize = 128;
/// Body of the baseline puts: a delivery record's body (an origin reference) is 20 bytes.
const BASELINE_BODY: usize = 20;
const TARGET_TOPIC: &str = "delayed";
const BULK_TOPIC: &str = "bulk";
/// The drain and its baseline use the same topic, so baseline records and delivery records
/// have the same size.
const DRAIN_TOPIC: &str = "drain";
const ORDER_TOPIC: &str = "order-close";
const DRAIN_CLOCK_JUMP_MS: u64 = 3 * 3_600_000;
const MANUAL_START_MS: u64 = 1_700_000_000_000;
const PULL_BATCH: usize = 1024;

/// Targets from the brief: figures to compare against, not assertions.
const TARGET_STORE_P99_MS: f64 = 5.0;
const TARGET_DRAIN_MSG_S: f64 = 500_000.0;

/// Delivery benchmark for delaystore (see the module docs and docs/benchmarks.md).
#[derive(Parser, Debug)]
struct Args {
    /// Cut sizes and durations about 10x (smoke run, under 2 minutes).
    #[arg(long)]
    quick: bool,
    /// Repetitions; each runs every workload once.
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// Directory for the temporary stores; must be on the disk under test (not tmpfs).
    /// Default: `$DELAYSTORE_BENCH_DIR`, else the crate's `target/` directory.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// JSON-lines output file (overwritten). Default: the crate's `target/bench-delivery.jsonl`.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Run only workloads whose name (e.g. `load/100k`, `drain`, `orders`) contains this.
    #[arg(long)]
    filter: Option<String>,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

/// Sizes of one run (full or quick).
#[derive(Debug, Clone)]
struct Config {
    dir: PathBuf,
    load_time: Duration,
    drain_count: u64,
    drain_segment_bytes: u64,
    orders: u64,
    order_window_ms: u64,
    order_delay_ms: u64,
    scan_periods_ms: Vec<u64>,
}

impl Config {
    fn new(dir: PathBuf, quick: bool) -> Self {
        if quick {
            Config {
                dir,
                load_time: Duration::from_secs(3),
                drain_count: 100_000,
                drain_segment_bytes: 64 * 1024 * 1024,
                orders: 5_000,
                order_window_ms: 2_000,
                order_delay_ms: 1_000,
                scan_periods_ms: vec![1_000],
            }
        } else {
            Config {
                dir,
                load_time: Duration::from_secs(10),
                drain_count: 1_000_000,
                drain_segment_bytes: LOAD_SEGMENT_BYTES,
                orders: 20_000,
                order_window_ms: 10_000,
                order_delay_ms: 3_000,
                scan_periods_ms: vec![10_000, 1_000],
            }
        }
    }
}

/// One workload of one repetition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Workload {
    Load { rate: u64, bulk: bool },
    DrainBaseline,
    Drain { levels: DrainLevels },
    Orders,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DrainLevels {
    One,
    RocketMqDefault,
}

impl Workload {
    fn name(self) -> String {
        match self {
            Workload::Load { rate, bulk: true } => format!("load/{}k", rate / 1000),
            Workload::Load { rate, bulk: false } => format!("load/{}k_no_bulk", rate / 1000),
            Workload::DrainBaseline => "drain/put_baseline".to_owned(),
            Workload::Drain {
                levels: DrainLevels::One,
            } => "drain/1_level".to_owned(),
            Workload::Drain {
                levels: DrainLevels::RocketMqDefault,
            } => "drain/18_levels".to_owned(),
            Workload::Orders => "orders".to_owned(),
        }
    }

    fn run(self, config: &Config) -> Result<Vec<Figure>, String> {
        match self {
            Workload::Load { rate, bulk } => load_lateness(config, rate, bulk),
            Workload::DrainBaseline => drain_baseline(config),
            Workload::Drain { levels } => drain(config, levels),
            Workload::Orders => orders(config),
        }
    }
}

/// Whether a figure should be low or high, and the bound it is held to.
#[derive(Debug, Clone, Copy)]
enum Goal {
    AtMost(f64),
    AtLeast(f64),
}

impl Goal {
    fn met(self, value: f64) -> bool {
        match self {
            Goal::AtMost(bound) => value <= bound,
            Goal::AtLeast(bound) => value >= bound,
        }
    }

    fn describe(self, unit: &str) -> String {
        match self {
            Goal::AtMost(bound) => format!("<= {}", human(bound, unit)),
            Goal::AtLeast(bound) => format!(">= {}", human(bound, unit)),
        }
    }
}

/// One measured number of one repetition.
#[derive(Debug, Clone)]
struct Figure {
    workload: String,
    name: String,
    unit: &'static str,
    value: f64,
    goal: Option<Goal>,
}

fn figure(workload: &str, name: &str, unit: &'static str, value: f64) -> Figure {
    Figure {
        workload: workload.to_owned(),
        name: name.to_owned(),
        unit,
        value,
        goal: None,
    }
}

fn with_goal(mut figure: Figure, goal: Goal) -> Figure {
    figure.goal = Some(goal);
    figure
}

/// A figure over all repetitions, in first-seen order.
#[derive(Debug)]
struct Series {
    workload: String,
    name: String,
    unit: &'static str,
    goal: Option<Goal>,
    values: Vec<f64>,
}

#[derive(Debug, Default)]
struct Results {
    series: Vec<Series>,
    failures: Vec<(String, usize, String)>,
}

impl Results {
    fn add(&mut self, figure: Figure) {
        let found = self
            .series
            .iter_mut()
            .find(|s| s.workload == figure.workload && s.name == figure.name);
        match found {
            Some(series) => series.values.push(figure.value),
            None => self.series.push(Series {
                workload: figure.workload,
                name: figure.name,
                unit: figure.unit,
                goal: figure.goal,
                values: vec![figure.value],
            }),
        }
    }

    fn get(&self, workload: &str, name: &str) -> Option<&Series> {
        self.series
            .iter()
            .find(|s| s.workload == workload && s.name == name)
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers

/// p50, p99 and max figures of `values` (sorted in place), named `{prefix}_p50` and so on.
fn lateness_figures(
    workload: &str,
    prefix: &str,
    values: &mut [f64],
    p99_goal: Option<Goal>,
) -> Vec<Figure> {
    values.sort_by(f64::total_cmp);
    let mut p99 = figure(
        workload,
        &format!("{prefix}_p99"),
        "ms",
        percentile(values, 0.99),
    );
    p99.goal = p99_goal;
    vec![
        figure(
            workload,
            &format!("{prefix}_p50"),
            "ms",
            percentile(values, 0.5),
        ),
        p99,
        figure(
            workload,
            &format!("{prefix}_max"),
            "ms",
            percentile(values, 1.0),
        ),
    ]
}

/// A fresh, empty store directory under the run's directory.
fn fresh_dir(config: &Config, name: &str) -> Result<PathBuf, String> {
    let dir = config.dir.join(name);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(|e| format!("removing {dir:?}: {e}"))?;
    }
    Ok(dir)
}

fn remove_dir(dir: &Path) {
    if let Err(e) = std::fs::remove_dir_all(dir) {
        eprintln!("warning: removing {dir:?}: {e}");
    }
}

fn open_store(dir: &Path, options: Options) -> Result<Store, String> {
    let segment_bytes = options.segment_bytes;
    let store = Store::open(dir, options).map_err(|e| format!("opening {dir:?}: {e}"))?;
    settle_after_open(dir, segment_bytes)?;
    Ok(store)
}

/// Waits until the background preallocator has created, zero-filled and synced the second
/// segment, which it starts right after `Store::open`, so that this open-time disk work does
/// not land inside a measurement. Later segments are prepared while the workload runs.
fn settle_after_open(store_dir: &Path, segment_bytes: u64) -> Result<(), String> {
    let path = store_dir
        .join(COMMIT_LOG_DIR)
        .join(offset_file_name(segment_bytes));
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        match std::fs::metadata(&path) {
            Ok(meta) if meta.len() == segment_bytes => break,
            _ if Instant::now() > deadline => {
                return Err(format!("second segment {path:?} not prepared within 120 s"));
            }
            _ => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    std::fs::File::open(&path)
        .and_then(|f| f.sync_all())
        .map_err(|e| format!("syncing {path:?}: {e}"))?;
    std::thread::sleep(Duration::from_millis(300));
    Ok(())
}

/// Flushes other dirty data (earlier workloads, other users of the disk) before a workload, so
/// its writeback does not land inside the next measurement. Best effort.
fn settle_disk() {
    let _ = std::process::Command::new("sync").status();
    std::thread::sleep(Duration::from_millis(200));
}

/// Closes a store shared with threads that have all been joined.
fn close_shared(store: Arc<Store>) -> Result<(), String> {
    match Arc::into_inner(store) {
        Some(store) => store.close().map_err(|e| format!("closing the store: {e}")),
        None => Err("the store is still shared at close".to_owned()),
    }
}

/// Put failures retried by [`put_retrying`].
#[derive(Debug, Default)]
struct PutFailures {
    count: u64,
    first: Option<String>,
}

/// Puts `message`, retrying a failed put (after 1 ms) for up to 30 s, so that a transient store
/// error shows up as a counted failure instead of a lost message.
fn put_retrying(
    store: &Store,
    message: &Message,
    failures: &mut PutFailures,
) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match store.put(message) {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() < deadline => {
                failures.count += 1;
                failures.first.get_or_insert_with(|| e.to_string());
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => return Err(format!("put failed for 30 s: {e}")),
        }
    }
}

fn join<T>(handle: JoinHandle<T>, what: &str) -> Result<T, String> {
    handle
        .join()
        .map_err(|_| format!("the {what} thread panicked"))
}

fn spawn<T: Send + 'static>(
    name: &str,
    body: impl FnOnce() -> T + Send + 'static,
) -> Result<JoinHandle<T>, String> {
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(body)
        .map_err(|e| format!("spawning {name}: {e}"))
}

// ---------------------------------------------------------------------------------------------
// 1. Delivery lateness under load

#[derive(Debug)]
struct Paced {
    secs: f64,
    late_ticks: u64,
    slowest: Duration,
    failures: PutFailures,
}

#[derive(Debug)]
struct Bulk {
    count: u64,
    secs: f64,
    slowest: Duration,
    failures: PutFailures,
}

#[derive(Debug, Default)]
struct Received {
    store_lateness_ms: Vec<f64>,
    observed_lateness_ms: Vec<f64>,
    unique: u64,
    duplicates: u64,
    early: u64,
}

fn load_lateness(config: &Config, rate: u64, bulk_on: bool) -> Result<Vec<Figure>, String> {
    let workload = Workload::Load {
        rate,
        bulk: bulk_on,
    }
    .name();
    let dir = fresh_dir(config, &format!("load-{rate}"))?;
    let store = Arc::new(open_store(
        &dir,
        Options {
            sync_mode: SyncMode::Async,
            segment_bytes: LOAD_SEGMENT_BYTES,
            delay_levels: Some("1s".to_owned()),
            ..Options::default()
        },
    )?);
    let per_tick = (rate / 1000).max(1);
    let ticks = config.load_time.as_millis() as u64;
    let total = per_tick * ticks;
    let stop = Arc::new(AtomicBool::new(false));

    let bulk = {
        let (store, stop) = (store.clone(), stop.clone());
        spawn("bench-bulk", move || {
            let message = Message::new(BULK_TOPIC, vec![0x5a; BULK_BODY]);
            let start = Instant::now();
            let mut count = 0u64;
            let mut failures = PutFailures::default();
            let mut slowest = Duration::ZERO;
            while bulk_on && !stop.load(Ordering::Relaxed) {
                let put_start = Instant::now();
                match store.put(&message) {
                    Ok(_) => {
                        count += 1;
                        slowest = slowest.max(put_start.elapsed());
                    }
                    Err(e) => {
                        failures.count += 1;
                        failures.first.get_or_insert_with(|| e.to_string());
                        std::thread::sleep(Duration::from_millis(1));
                    }
                }
            }
            Bulk {
                count,
                secs: start.elapsed().as_secs_f64(),
                slowest,
                failures,
            }
        })?
    };
    let producer = {
        let store = store.clone();
        spawn("bench-delayed", move || -> Result<Paced, String> {
            let mut message = Message::new(TARGET_TOPIC, vec![0u8; LOAD_BODY]).with_delay_level(1);
            let mut failures = PutFailures::default();
            let mut late_ticks = 0;
            let mut slowest = Duration::ZERO;
            let start = Instant::now();
            for tick in 0..ticks {
                for i in 0..per_tick {
                    let seq = tick * per_tick + i;
                    message.body[..8].copy_from_slice(&seq.to_le_bytes());
                    let put_start = Instant::now();
                    put_retrying(&store, &message, &mut failures)?;
                    slowest = slowest.max(put_start.elapsed());
                }
                let next = start + Duration::from_millis(tick + 1);
                if Instant::now() >= next {
                    late_ticks += 1;
                }
                sleep_until(next);
            }
            Ok(Paced {
                secs: start.elapsed().as_secs_f64(),
                late_ticks,
                slowest,
                failures,
            })
        })?
    };

    // Messages put at the end are due 1 s later; leave a generous margin on a loaded machine.
    let timeout = config.load_time + Duration::from_secs(60);
    let received = receive_load(&store, total, timeout);
    stop.store(true, Ordering::Relaxed);
    let paced = join(producer, "delayed producer")?;
    let bulk = join(bulk, "bulk producer")?;
    let stats = store.stats();
    close_shared(store)?;
    remove_dir(&dir);
    let mut received = received?;
    let paced = paced?;

    let missing = total - received.unique;
    if missing > 0 {
        eprintln!(
            "  {workload}: {missing} of {total} delayed messages not delivered within {} s; \
             store stats at the end: pending {:?}, next due {:?}, undeliverable {}",
            timeout.as_secs(),
            stats.pending_per_level,
            stats.next_due_ms,
            stats.undeliverable
        );
    }
    let mut figures = Vec::new();
    figures.extend(lateness_figures(
        &workload,
        "store_lateness",
        &mut received.store_lateness_ms,
        Some(Goal::AtMost(TARGET_STORE_P99_MS)),
    ));
    figures.extend(lateness_figures(
        &workload,
        "observed_lateness",
        &mut received.observed_lateness_ms,
        None,
    ));
    figures.push(figure(
        &workload,
        "delayed_put_rate",
        "msg/s",
        total as f64 / paced.secs,
    ));
    figures.push(figure(
        &workload,
        "delayed_put_max",
        "ms",
        paced.slowest.as_secs_f64() * 1000.0,
    ));
    figures.push(figure(
        &workload,
        "late_1ms_batches",
        "count",
        paced.late_ticks as f64,
    ));
    if bulk_on {
        figures.push(figure(
            &workload,
            "bulk_put_rate",
            "msg/s",
            bulk.count as f64 / bulk.secs,
        ));
        figures.push(figure(
            &workload,
            "bulk_mb_per_s",
            "MB/s",
            (bulk.count * BULK_BODY as u64) as f64 / bulk.secs / 1e6,
        ));
        figures.push(figure(
            &workload,
            "bulk_put_max",
            "ms",
            bulk.slowest.as_secs_f64() * 1000.0,
        ));
    }
    figures.push(figure(
        &workload,
        "segment_rolls",
        "count",
        stats.segment_count.saturating_sub(1) as f64,
    ));
    figures.push(with_goal(
        figure(&workload, "missing", "count", missing as f64),
        Goal::AtMost(0.0),
    ));
    figures.push(with_goal(
        figure(&workload, "duplicates", "count", received.duplicates as f64),
        Goal::AtMost(0.0),
    ));
    figures.push(with_goal(
        figure(&workload, "early", "count", received.early as f64),
        Goal::AtMost(0.0),
    ));
    let put_failures = paced.failures.count + bulk.failures.count;
    figures.push(figure(
        &workload,
        "put_failures",
        "count",
        put_failures as f64,
    ));
    for (who, failures) in [("delayed", &paced.failures), ("bulk", &bulk.failures)] {
        if let Some(first) = &failures.first {
            eprintln!(
                "  {workload}: {} {who} puts failed (retried); first: {first}",
                failures.count
            );
        }
    }
    Ok(figures)
}

/// The consumer of the load workload: pulls every queue of the target topic until all `total`
/// messages arrived or `timeout` passed.
fn receive_load(store: &Store, total: u64, timeout: Duration) -> Result<Received, String> {
    let queues = store
        .queue_count(TARGET_TOPIC)
        .map_err(|e| format!("queue count: {e}"))?;
    let mut next = vec![0u64; queues as usize];
    let mut seen = vec![false; total as usize];
    let mut received = Received {
        store_lateness_ms: Vec::with_capacity(total as usize),
        observed_lateness_ms: Vec::with_capacity(total as usize),
        ..Received::default()
    };
    let start = Instant::now();
    while received.unique < total && start.elapsed() < timeout {
        let token = store.visibility_token();
        let mut got_any = false;
        for (queue, offset) in (0..queues).zip(next.iter_mut()) {
            let batch = store
                .pull(TARGET_TOPIC, queue, *offset, PULL_BATCH)
                .map_err(|e| format!("pull: {e}"))?;
            let Some(last) = batch.last() else { continue };
            *offset = last.queue_offset + 1;
            got_any = true;
            let now_ms = now_us() as f64 / 1000.0;
            for message in &batch {
                let due = message.due_ms.unwrap_or(0);
                let delivered = message.delivered_ms.unwrap_or(0);
                if delivered < due || (now_ms < due as f64) {
                    received.early += 1;
                }
                received
                    .store_lateness_ms
                    .push(delivered as f64 - due as f64);
                received.observed_lateness_ms.push(now_ms - due as f64);
                let seq = message
                    .body
                    .get(..8)
                    .and_then(|b| b.try_into().ok())
                    .map_or(u64::MAX, u64::from_le_bytes);
                match seen.get_mut(seq as usize) {
                    Some(slot) if !*slot => {
                        *slot = true;
                        received.unique += 1;
                    }
                    _ => received.duplicates += 1,
                }
            }
            store
                .commit_offset("bench", TARGET_TOPIC, queue, *offset)
                .map_err(|e| format!("commit offset: {e}"))?;
        }
        if !got_any {
            store.wait_for_entries(token, Duration::from_millis(100));
        }
    }
    Ok(received)
}

// ---------------------------------------------------------------------------------------------
// 2. Backlog drain

fn drain_options(config: &Config, clock: Option<ManualClock>) -> Options {
    let mut options = Options {
        sync_mode: SyncMode::Async,
        segment_bytes: config.drain_segment_bytes,
        ..Options::default()
    };
    if let Some(clock) = clock {
        options.clock = Arc::new(clock);
    }
    options
}

/// The same number of async puts as the drain re-posts, of records the size of a delivery
/// record, into a fresh store.
fn drain_baseline(config: &Config) -> Result<Vec<Figure>, String> {
    let workload = Workload::DrainBaseline.name();
    let dir = fresh_dir(config, "drain-baseline")?;
    let store = open_store(&dir, drain_options(config, None))?;
    let message = Message::new(DRAIN_TOPIC, vec![0x33; BASELINE_BODY]);
    let mut failures = PutFailures::default();
    let start = Instant::now();
    for _ in 0..config.drain_count {
        put_retrying(&store, &message, &mut failures)?;
    }
    let secs = start.elapsed().as_secs_f64();
    store
        .close()
        .map_err(|e| format!("closing the store: {e}"))?;
    remove_dir(&dir);
    if let Some(first) = failures.first {
        eprintln!(
            "  {workload}: {} puts failed (retried); first: {first}",
            failures.count
        );
    }
    Ok(vec![
        figure(
            &workload,
            "put_rate",
            "msg/s",
            config.drain_count as f64 / secs,
        ),
        figure(&workload, "put_failures", "count", failures.count as f64),
    ])
}

/// Puts a backlog on a manual clock, jumps the clock 3 hours and times the re-posts.
fn drain(config: &Config, levels: DrainLevels) -> Result<Vec<Figure>, String> {
    let workload = Workload::Drain { levels }.name();
    let dir = fresh_dir(config, "drain")?;
    let clock = ManualClock::new(MANUAL_START_MS);
    let mut options = drain_options(config, Some(clock.clone()));
    options.delay_levels = match levels {
        DrainLevels::One => Some("1s".to_owned()),
        DrainLevels::RocketMqDefault => None,
    };
    let store = open_store(&dir, options)?;
    let result = drain_store(config, &store, &clock, levels, &workload);
    store
        .close()
        .map_err(|e| format!("closing the store: {e}"))?;
    remove_dir(&dir);
    result
}

fn drain_store(
    config: &Config,
    store: &Store,
    clock: &ManualClock,
    levels: DrainLevels,
    workload: &str,
) -> Result<Vec<Figure>, String> {
    let count = config.drain_count;
    let table = store.delay_levels_ms();
    let expected_levels = match levels {
        DrainLevels::One => 1,
        DrainLevels::RocketMqDefault => 18,
    };
    if table.len() != expected_levels {
        return Err(format!(
            "the store has {} delay levels, expected {expected_levels}",
            table.len()
        ));
    }
    if table.iter().any(|&delay| delay >= DRAIN_CLOCK_JUMP_MS) {
        return Err(format!(
            "a delay level is not below the {DRAIN_CLOCK_JUMP_MS} ms jump"
        ));
    }
    let level_count = table.len() as u64;
    let mut message = Message::new(DRAIN_TOPIC, vec![0xa5; DRAIN_BODY]);
    let mut failures = PutFailures::default();
    for i in 0..count {
        message.delay_level = (i % level_count + 1) as u8;
        put_retrying(store, &message, &mut failures)?;
    }
    let flush_failures = flush_retrying(store, workload)?;
    let stats = store.stats();
    let pending: u64 = stats.pending_per_level.iter().map(|(_, n)| n).sum();
    if pending != count {
        return Err(format!(
            "{pending} messages pending after putting {count} and flushing"
        ));
    }
    let queues = store
        .queue_count(DRAIN_TOPIC)
        .map_err(|e| format!("queue count: {e}"))?;
    let delivered = || -> Result<u64, String> {
        (0..queues)
            .map(|q| store.queue_end_offset(DRAIN_TOPIC, q))
            .sum::<delaystore::Result<u64>>()
            .map_err(|e| format!("queue end offset: {e}"))
    };
    let before = delivered()?;
    if before != 0 {
        return Err(format!(
            "{before} messages delivered before the clock moved"
        ));
    }

    let start = Instant::now();
    clock.advance_ms(DRAIN_CLOCK_JUMP_MS);
    let timeout = Duration::from_secs(120);
    let done = loop {
        let token = store.visibility_token();
        let done = delivered()?;
        if done >= count {
            break done;
        }
        if start.elapsed() > timeout {
            let stats = store.stats();
            return Err(format!(
                "drain stalled: {done} of {count} delivered after {} s; pending {:?}, \
                 undeliverable {}",
                timeout.as_secs(),
                stats.pending_per_level,
                stats.undeliverable
            ));
        }
        store.wait_for_entries(token, Duration::from_millis(1));
    };
    let secs = start.elapsed().as_secs_f64();
    // Anything more than `count` would be a duplicate delivery; give it a moment to show.
    std::thread::sleep(Duration::from_millis(200));
    let after = delivered()?;
    let stats = store.stats();
    let still_pending: u64 = stats.pending_per_level.iter().map(|(_, n)| n).sum();
    Ok(vec![
        with_goal(
            figure(workload, "drain_rate", "msg/s", count as f64 / secs),
            Goal::AtLeast(TARGET_DRAIN_MSG_S),
        ),
        figure(workload, "drain_secs", "s", secs),
        with_goal(
            figure(
                workload,
                "extra_deliveries",
                "count",
                (after.max(done) - count) as f64,
            ),
            Goal::AtMost(0.0),
        ),
        with_goal(
            figure(workload, "pending_after", "count", still_pending as f64),
            Goal::AtMost(0.0),
        ),
        figure(workload, "flush_failures", "count", flush_failures as f64),
    ])
}

/// `Store::flush`, retried up to 5 times. A flush can fail spuriously with `ENOENT` on
/// `checkpoint` when the background flusher writes a checkpoint at the same moment: both write
/// `checkpoint.tmp` and rename it, and the second rename finds nothing (a store bug, reported
/// in docs/benchmarks.md). The data is not affected, so the backlog is still measured; the
/// failures are counted.
fn flush_retrying(store: &Store, workload: &str) -> Result<u64, String> {
    let mut failures = 0;
    loop {
        match store.flush() {
            Ok(()) => return Ok(failures),
            Err(e) if failures < 5 => {
                failures += 1;
                eprintln!("  {workload}: flush failed, retrying: {e}");
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(format!("flush failed {failures} times; last: {e}")),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 3. The seed baseline: order timeouts by delayed messages vs. by scanning a table

fn orders(config: &Config) -> Result<Vec<Figure>, String> {
    let workload = Workload::Orders.name();
    let dir = fresh_dir(config, "orders")?;
    let store = Arc::new(open_store(
        &dir,
        Options {
            sync_mode: SyncMode::Async,
            segment_bytes: ORDERS_SEGMENT_BYTES,
            delay_levels: Some(format_delay_levels(&[config.order_delay_ms])),
            ..Options::default()
        },
    )?);
    let n = config.orders as usize;
    let delay_ms = config.order_delay_ms;
    let store_orders = Arc::new(Table::new(n));
    let tables: Vec<Arc<Table>> = config
        .scan_periods_ms
        .iter()
        .map(|_| Arc::new(Table::new(n)))
        .collect();
    let max_period = config.scan_periods_ms.iter().copied().max().unwrap_or(0);
    let timeout = Duration::from_millis(config.order_window_ms + delay_ms + max_period)
        + Duration::from_secs(30);
    let start = Instant::now() + Duration::from_millis(100);

    let scanners = config
        .scan_periods_ms
        .iter()
        .zip(&tables)
        .map(|(&period, table)| {
            let table = table.clone();
            spawn("bench-scanner", move || {
                scan_table(&table, period, delay_ms, start, timeout)
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    let producer = {
        let (store, store_orders, tables) = (store.clone(), store_orders.clone(), tables.clone());
        let window_us = config.order_window_ms * 1000;
        spawn("bench-orders", move || -> Result<u64, String> {
            let mut message = Message::new(ORDER_TOPIC, vec![0u8; 8]).with_delay_level(1);
            let mut failures = PutFailures::default();
            let mut puts = 0;
            for order in 0..n {
                sleep_until(start + Duration::from_micros(order as u64 * window_us / n as u64));
                let created_ms = SystemClock.now_ms();
                for table in tables.iter().chain(std::iter::once(&store_orders)) {
                    table.created_ms[order].store(created_ms, Ordering::Relaxed);
                    table.inserted.store(order + 1, Ordering::Release);
                }
                message.body.copy_from_slice(&(order as u64).to_le_bytes());
                put_retrying(&store, &message, &mut failures)?;
                puts += 1;
            }
            if let Some(first) = failures.first {
                eprintln!(
                    "  orders: {} puts failed (retried); first: {first}",
                    failures.count
                );
            }
            Ok(puts)
        })?
    };
    let by_store = close_by_store(&store, ORDER_TOPIC, &store_orders, delay_ms, timeout);
    let puts = join(producer, "order producer")?;
    let scanned = scanners
        .into_iter()
        .map(|s| join(s, "scanner"))
        .collect::<Result<Vec<_>, String>>()?;
    close_shared(store)?;
    remove_dir(&dir);
    let puts = puts?;
    let mut by_store = by_store?;

    let orders = config.orders as f64;
    let mut figures = Vec::new();
    figures.extend(lateness_figures(
        &workload,
        "store_closing_lateness",
        &mut by_store.lateness_ms,
        None,
    ));
    figures.push(figure(
        &workload,
        "store_rows_read_per_order",
        "rows",
        by_store.rows_read as f64 / orders,
    ));
    figures.push(figure(
        &workload,
        "store_puts_per_order",
        "puts",
        puts as f64 / orders,
    ));
    figures.push(with_goal(
        figure(
            &workload,
            "store_missed",
            "count",
            (config.orders - by_store.closed) as f64,
        ),
        Goal::AtMost(0.0),
    ));
    figures.push(with_goal(
        figure(
            &workload,
            "store_duplicates",
            "count",
            by_store.duplicates as f64,
        ),
        Goal::AtMost(0.0),
    ));
    for (&period, mut scan) in config.scan_periods_ms.iter().zip(scanned) {
        let prefix = format!("scan_{}s", period / 1000);
        figures.extend(lateness_figures(
            &workload,
            &format!("{prefix}_closing_lateness"),
            &mut scan.lateness_ms,
            None,
        ));
        figures.push(figure(
            &workload,
            &format!("{prefix}_rows_read_per_order"),
            "rows",
            scan.rows_read as f64 / orders,
        ));
        figures.push(figure(
            &workload,
            &format!("{prefix}_scans"),
            "count",
            scan.scans as f64,
        ));
        figures.push(with_goal(
            figure(
                &workload,
                &format!("{prefix}_missed"),
                "count",
                (config.orders - scan.closed) as f64,
            ),
            Goal::AtMost(0.0),
        ));
    }
    Ok(figures)
}

// ---------------------------------------------------------------------------------------------
// Reporting

fn human(value: f64, unit: &str) -> String {
    match unit {
        "msg/s" => {
            if value >= 1e6 {
                format!("{:.2} M", value / 1e6)
            } else if value >= 1e3 {
                format!("{:.1} k", value / 1e3)
            } else {
                format!("{value:.0}")
            }
        }
        "ratio" => format!("{value:.2}x"),
        "count" => format!("{value:.0}"),
        "s" => format!("{value:.2}"),
        "rows" | "puts" => format!("{value:.2}"),
        _ => {
            if value.abs() >= 100.0 {
                format!("{value:.0}")
            } else {
                format!("{value:.1}")
            }
        }
    }
}

fn cell(series: Option<&Series>) -> String {
    match series {
        Some(s) => {
            let sum = summarize(&s.values);
            if s.values.len() > 1 {
                format!(
                    "{} ({}-{})",
                    human(sum.median, s.unit),
                    human(sum.min, s.unit),
                    human(sum.max, s.unit)
                )
            } else {
                human(sum.median, s.unit)
            }
        }
        None => "-".to_owned(),
    }
}

fn machine_info(dir: &Path) -> serde_json::Value {
    let cpu = cpu_model();
    let mem_kib = mem_total_kib();
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let (device, fs_type) = mount_of(dir);
    let git = std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    // Uncommitted changes under src/ mean the commit alone does not identify the code measured.
    let src_dirty = std::process::Command::new("git")
        .args(["status", "--porcelain", "--", "src"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| !o.stdout.is_empty());
    json!({
        "nproc": nproc,
        "kernel": read_trimmed("/proc/version"),
        "cpu": cpu,
        "mem_gib": mem_kib / (1024 * 1024),
        "device": device,
        "fs_type": fs_type,
        "git": git,
        "src_dirty": src_dirty,
    })
}

fn print_section(results: &Results, title: &str, prefix: &str) {
    let rows: Vec<&Series> = results
        .series
        .iter()
        .filter(|s| s.workload.starts_with(prefix))
        .collect();
    if rows.is_empty() {
        return;
    }
    println!("\n{title}");
    println!(
        "{:<20} {:<28} {:>32} {:>16}",
        "workload", "figure", "median (min-max)", "target"
    );
    for s in rows {
        let target = s.goal.map_or(String::new(), |goal| {
            let met = goal.met(summarize(&s.values).median);
            format!(
                "{} {}",
                goal.describe(s.unit),
                if met { "met" } else { "MISSED" }
            )
        });
        println!(
            "{:<20} {:<28} {:>32} {:>16}",
            s.workload,
            format!("{} [{}]", s.name, s.unit),
            cell(Some(s)),
            target
        );
    }
}

fn print_orders_side_by_side(results: &Results, config: &Config) {
    if results
        .get("orders", "store_closing_lateness_p50")
        .is_none()
    {
        return;
    }
    let mut columns = vec![("(a) delayed msgs".to_owned(), "store".to_owned())];
    for &period in &config.scan_periods_ms {
        columns.push((
            format!("(b) scan P={}s", period / 1000),
            format!("scan_{}s", period / 1000),
        ));
    }
    println!(
        "\n3. Order timeouts side by side ({} orders over {} s, deadline +{} s)",
        config.orders,
        config.order_window_ms / 1000,
        config.order_delay_ms / 1000
    );
    print!("{:<26}", "");
    for (title, _) in &columns {
        print!(" {title:>26}");
    }
    println!();
    for (label, suffix) in [
        ("closing lateness p50 ms", "closing_lateness_p50"),
        ("closing lateness p99 ms", "closing_lateness_p99"),
        ("closing lateness max ms", "closing_lateness_max"),
        ("rows read / order", "rows_read_per_order"),
        ("delay writes / order", "puts_per_order"),
        ("orders missed", "missed"),
    ] {
        print!("{label:<26}");
        for (_, prefix) in &columns {
            let series = results.get("orders", &format!("{prefix}_{suffix}"));
            let text = match (series, suffix) {
                (None, "puts_per_order") => "0 (table row only)".to_owned(),
                _ => cell(series),
            };
            print!(" {text:>26}");
        }
        println!();
    }
}

fn report(
    results: &Results,
    config: &Config,
    machine: &serde_json::Value,
    mode: &str,
    reps: usize,
    path: &Path,
) {
    println!(
        "\n== delaystore delivery benchmark ({mode}, {reps} reps; median (min-max) over reps) =="
    );
    print_section(
        results,
        &format!(
            "1. Delivery lateness under load (1 s level, 128 B, for {} s; a 1 KiB bulk producer alongside, except in _no_bulk)",
            config.load_time.as_secs()
        ),
        "load/",
    );
    print_section(
        results,
        &format!(
            "2. Backlog drain ({} messages, clock jumps 3 h)",
            config.drain_count
        ),
        "drain/",
    );
    let baseline = results.get("drain/put_baseline", "put_rate");
    let mut ratios = Vec::new();
    for workload in ["drain/1_level", "drain/18_levels"] {
        if let (Some(drain), Some(base)) = (results.get(workload, "drain_rate"), baseline) {
            let values: Vec<f64> = drain
                .values
                .iter()
                .zip(&base.values)
                .map(|(d, b)| d / b)
                .collect();
            let sum = summarize(&values);
            println!(
                "{workload:<20} {:<28} {:>32}",
                "drain / put_baseline [ratio]",
                format!(
                    "{} ({}-{})",
                    human(sum.median, "ratio"),
                    human(sum.min, "ratio"),
                    human(sum.max, "ratio")
                )
            );
            ratios.push((workload, values));
        }
    }
    print_orders_side_by_side(results, config);
    print_section(results, "3. Order timeouts, every figure", "orders");
    for (workload, rep, failure) in &results.failures {
        println!("FAILED {workload} (rep {rep}): {failure}");
    }

    let mut out = String::new();
    let time = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut line = |value: serde_json::Value| {
        out.push_str(&value.to_string());
        out.push('\n');
    };
    for s in &results.series {
        let sum = summarize(&s.values);
        line(json!({
            "bench": "delivery", "mode": mode, "workload": s.workload, "figure": s.name,
            "unit": s.unit, "min": sum.min, "median": sum.median, "max": sum.max,
            "values": s.values,
            "target": s.goal.map(|g| g.describe(s.unit)),
            "met": s.goal.map(|g| g.met(sum.median)),
            "unix_time": time, "machine": machine,
        }));
    }
    for (workload, values) in ratios {
        let sum = summarize(&values);
        line(json!({
            "bench": "delivery", "mode": mode, "workload": workload,
            "figure": "drain_to_put_ratio", "unit": "ratio",
            "min": sum.min, "median": sum.median, "max": sum.max, "values": values,
            "unix_time": time, "machine": machine,
        }));
    }
    for (workload, rep, failure) in &results.failures {
        line(json!({
            "bench": "delivery", "mode": mode, "workload": workload, "rep": rep,
            "error": failure, "unix_time": time, "machine": machine,
        }));
    }
    let written = path
        .parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|()| std::fs::write(path, out));
    match written {
        Ok(()) => println!("\nJSON lines: {}", path.display()),
        Err(e) => eprintln!("writing {path:?}: {e}"),
    }
}

fn main() {
    let args = Args::parse();
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let root = args
        .dir
        .clone()
        .or_else(|| std::env::var_os("DELAYSTORE_BENCH_DIR").map(PathBuf::from))
        .unwrap_or_else(|| manifest.join("target"));
    let json_path = args
        .json
        .clone()
        .unwrap_or_else(|| manifest.join("target").join("bench-delivery.jsonl"));
    let dir = root.join(format!("bench-delivery-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("creating the benchmark directory");
    let config = Config::new(dir.clone(), args.quick);
    let mode = if args.quick { "quick" } else { "full" };
    let machine = machine_info(&dir);
    println!(
        "machine: {} cpus ({}), {} GiB; {}",
        machine["nproc"], machine["cpu"], machine["mem_gib"], machine["kernel"]
    );
    println!(
        "stores in {} ({}, {})",
        dir.display(),
        machine["device"],
        machine["fs_type"]
    );
    if machine["fs_type"] == "tmpfs" {
        eprintln!("warning: the store directory is on tmpfs; the figures do not describe a disk");
    }

    let mut workloads: Vec<Workload> = LOAD_RATES
        .iter()
        .map(|&rate| Workload::Load { rate, bulk: true })
        .collect();
    workloads.extend([
        // The reference: the same delayed stream without the competing bulk producer.
        Workload::Load {
            rate: NO_BULK_RATE,
            bulk: false,
        },
        Workload::DrainBaseline,
        Workload::Drain {
            levels: DrainLevels::One,
        },
        Workload::Drain {
            levels: DrainLevels::RocketMqDefault,
        },
        Workload::Orders,
    ]);
    if let Some(filter) = &args.filter {
        workloads.retain(|w| w.name().contains(filter.as_str()));
    }

    let started = Instant::now();
    let mut results = Results::default();
    for rep in 0..args.reps {
        let mut order = workloads.clone();
        if rep % 2 == 1 {
            order.reverse();
        }
        for workload in order {
            let name = workload.name();
            eprint!("rep {}/{}: {name} ... ", rep + 1, args.reps);
            let _ = std::io::stderr().flush();
            settle_disk();
            let t = Instant::now();
            match workload.run(&config) {
                Ok(figures) => {
                    eprintln!("{:.1} s", t.elapsed().as_secs_f64());
                    for f in figures {
                        results.add(f);
                    }
                }
                Err(e) => {
                    eprintln!("FAILED: {e}");
                    results.failures.push((name, rep + 1, e));
                }
            }
        }
    }
    eprintln!("total {:.0} s", started.elapsed().as_secs_f64());
    report(&results, &config, &machine, mode, args.reps, &json_path);
    remove_dir(&dir);
    if !results.failures.is_empty() {
        std::process::exit(1);
    }
}
