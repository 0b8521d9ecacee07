//! Append benchmark: what one process gets out of `Store::put`, next to the raw ceilings of the
//! same machine, measured in the same run.
//!
//! Workloads (each repetition runs every one of them once, so slow phases of a noisy machine
//! hit every figure alike; the order of each store/ceiling pair flips between repetitions):
//!
//! - `async_put`: one producer, [`SyncMode::Async`], bodies of 128 B, 1 KiB and 16 KiB, a fixed
//!   amount of data per size. Only the put loop is timed: the store is opened first and the
//!   background creation of its second segment is waited for (later segments are created in the
//!   background while the loop runs, as in production).
//! - `raw_mmap`, `raw_mmap_reserved`: the ceilings for `async_put`: the same-sized records, each
//!   with a crc32fast CRC, copied into one plain memory-mapped file prepared the way the store
//!   prepares a segment: zero-filled in 4 KiB writes, synced and mapped with `MAP_POPULATE`
//!   (`SegmentFill::Zeroed`), or reserved with `fallocate` and synced (`SegmentFill::Reserved`).
//! - `sync_put`: [`SyncMode::Sync`], 1, 4, 16 and 64 producer threads sharing an `Arc<Store>`,
//!   1 KiB bodies, for a fixed time: total msg/s and put latency.
//! - `raw_fsync`: the ceiling for `sync_put`: one thread doing `pwrite` of one record +
//!   `fdatasync` on a pre-zeroed file.
//!
//! Run: `cargo bench --bench append -- [--quick] [--reps N] [--dir PATH]`. Prints a table and
//! writes one JSON line per figure to `target/bench-append.jsonl` (see `docs/benchmarks.md`).
// The raw ceiling maps a file; the store itself keeps its `unsafe` in `src/io/mmap.rs`.
#![allow(unsafe_code)]

#[path = "support/machine.rs"]
mod machine;
#[path = "support/raw_record.rs"]
mod raw_record;
#[path = "support/summary.rs"]
mod summary;

use machine::{cpu_model, mem_total_kib, mount_of, read_trimmed};
use raw_record::{create_zeroed, raw_record, record_bytes, seal_raw};
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use summary::{percentile, summarize};

use clap::Parser;
use delaystore::commit_log::COMMIT_LOG_DIR;
use delaystore::naming::offset_file_name;
use delaystore::{Error, Message, Options, Store, SyncMode};
use memmap2::MmapOptions;
use serde_json::json;

const TOPIC: &str = "bench";
const SEGMENT_BYTES: u64 = 256 * 1024 * 1024;
const ASYNC_BODIES: [usize; 3] = [128, 1024, 16 * 1024];
const SYNC_BODY: usize = 1024;
const SYNC_THREADS: [usize; 4] = [1, 4, 16, 64];
/// Async puts are timed in batches of this many, to tell steady throughput from stalls.
const BATCH: usize = 1024;
/// A batch slower than this many median batches counts as a stall.
const STALL_FACTOR: f64 = 10.0;

/// Targets from the brief: figures to compare against, not assertions.
const TARGET_ASYNC_1K_MSG_S: f64 = 2_000_000.0;
const TARGET_ASYNC_1K_RATIO: f64 = 0.40;
const TARGET_SYNC_64_MSG_S: f64 = 100_000.0;

/// Append benchmark for delaystore (see the module docs and docs/benchmarks.md).
#[derive(Parser, Debug)]
struct Args {
    /// Cut data volume and durations about 10x (smoke run).
    #[arg(long)]
    quick: bool,
    /// Repetitions; each runs every workload once.
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// Directory for the temporary stores and files; must be on the disk under test.
    /// Default: the crate's `target/` directory.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// JSON-lines output file (overwritten). Default: the crate's `target/bench-append.jsonl`.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Bytes of records per async body size (default 1 GiB, quick 100 MiB).
    #[arg(long)]
    async_bytes: Option<u64>,
    /// Cap on messages per async run (default 4 M, quick 400 k).
    #[arg(long)]
    async_max_msgs: Option<u64>,
    /// Seconds per sync workload (default 5, quick 1).
    #[arg(long)]
    sync_secs: Option<f64>,
    /// Run only these workloads: comma-separated names (`sync_put/64`) or kinds (`async_put`,
    /// `raw_mmap`, `sync_put`, `raw_fsync`).
    #[arg(long)]
    filter: Option<String>,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

struct Config {
    dir: PathBuf,
    async_bytes: u64,
    async_max_msgs: u64,
    sync_time: Duration,
}

fn async_count(config: &Config, body: usize) -> u64 {
    (config.async_bytes / record_bytes(TOPIC, body) as u64).clamp(1, config.async_max_msgs)
}

/// One workload of one repetition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Workload {
    AsyncPut { body: usize },
    RawMmap { body: usize, fill: Fill },
    SyncPut { threads: usize },
    RawFsync,
}

impl Workload {
    fn name(self) -> String {
        match self {
            Workload::AsyncPut { body } => format!("async_put/{}", size_label(body)),
            Workload::RawMmap { body, fill } => format!("{}/{}", fill.kind(), size_label(body)),
            Workload::SyncPut { threads } => format!("sync_put/{threads}"),
            Workload::RawFsync => "raw_fsync".to_owned(),
        }
    }

    fn kind(self) -> &'static str {
        match self {
            Workload::AsyncPut { .. } => "async_put",
            Workload::RawMmap { fill, .. } => fill.kind(),
            Workload::SyncPut { .. } => "sync_put",
            Workload::RawFsync => "raw_fsync",
        }
    }

    fn body(self) -> usize {
        match self {
            Workload::AsyncPut { body } | Workload::RawMmap { body, .. } => body,
            Workload::SyncPut { .. } | Workload::RawFsync => SYNC_BODY,
        }
    }

    fn threads(self) -> usize {
        match self {
            Workload::SyncPut { threads } => threads,
            _ => 1,
        }
    }
}

/// How a ceiling file is prepared, after the store's two ways of preparing a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Fill {
    /// Zeros in 4 KiB `write`s, `fsync`, then mapped with `MAP_POPULATE` (`SegmentFill::Zeroed`).
    Zeroed,
    /// Blocks reserved with `fallocate`, `fsync`, mapped without pre-faulting
    /// (`SegmentFill::Reserved`, also what a roll creates inline when no segment is ready).
    Reserved,
}

impl Fill {
    fn kind(self) -> &'static str {
        match self {
            Fill::Zeroed => "raw_mmap",
            Fill::Reserved => "raw_mmap_reserved",
        }
    }
}

fn size_label(bytes: usize) -> String {
    if bytes >= 1024 && bytes.is_multiple_of(1024) {
        format!("{}KiB", bytes / 1024)
    } else {
        format!("{bytes}B")
    }
}

/// Figures of one run: (figure name, unit, value).
type Sample = Vec<(&'static str, &'static str, f64)>;

/// The workloads of repetition `rep`, store/ceiling pairs flipped on odd repetitions.
fn schedule(rep: usize) -> Vec<Workload> {
    let flip = rep % 2 == 1;
    let mut out = Vec::new();
    for body in ASYNC_BODIES {
        let group = [
            Workload::AsyncPut { body },
            Workload::RawMmap {
                body,
                fill: Fill::Zeroed,
            },
            Workload::RawMmap {
                body,
                fill: Fill::Reserved,
            },
        ];
        if flip {
            out.extend(group.iter().rev());
        } else {
            out.extend(group);
        }
    }
    let sync = SYNC_THREADS.map(|threads| Workload::SyncPut { threads });
    if flip {
        out.extend(sync);
        out.push(Workload::RawFsync);
    } else {
        out.push(Workload::RawFsync);
        out.extend(sync);
    }
    out
}

fn run(workload: Workload, config: &Config) -> Result<Sample, String> {
    let dir = tempfile::Builder::new()
        .prefix("delaystore-bench-")
        .tempdir_in(&config.dir)
        .map_err(|e| format!("creating a temporary directory in {:?}: {e}", config.dir))?;
    let cpu_before = CpuTicks::read();
    let sample = match workload {
        Workload::AsyncPut { body } => async_put(dir.path(), body, async_count(config, body)),
        Workload::RawMmap { body, fill } => {
            raw_mmap(dir.path(), body, fill, async_count(config, body))
        }
        Workload::SyncPut { threads } => sync_put(dir.path(), threads, config.sync_time),
        Workload::RawFsync => raw_fsync(dir.path(), config.sync_time),
    };
    let noise = cpu_before
        .zip(CpuTicks::read())
        .map(|(a, b)| b.noise_since(&a));
    dir.close()
        .map_err(|e| format!("removing the temporary directory: {e}"))?;
    let mut sample = sample?;
    if let Some((foreign_cpus, steal_pct)) = noise {
        sample.push(("foreign_cpus", "cpus", foreign_cpus));
        sample.push(("steal_pct", "%", steal_pct));
    }
    Ok(sample)
}

/// CPU time counters, to tell how busy the rest of the machine was during a workload.
struct CpuTicks {
    /// Ticks of all CPUs: busy (user, nice, system, irq, softirq), steal, total.
    busy: u64,
    steal: u64,
    total: u64,
    /// Ticks of this process (all threads, user + system).
    own: u64,
}

impl CpuTicks {
    fn read() -> Option<CpuTicks> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let fields: Vec<u64> = stat
            .lines()
            .next()?
            .split_whitespace()
            .skip(1)
            .take(8)
            .map(|f| f.parse().ok())
            .collect::<Option<_>>()?;
        let [user, nice, system, idle, iowait, irq, softirq, steal] = fields[..] else {
            return None;
        };
        let own_stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let mut own_fields = own_stat.rsplit_once(')')?.1.split_whitespace().skip(11);
        let utime: u64 = own_fields.next()?.parse().ok()?;
        let stime: u64 = own_fields.next()?.parse().ok()?;
        Some(CpuTicks {
            busy: user + nice + system + irq + softirq,
            steal,
            total: user + nice + system + idle + iowait + irq + softirq + steal,
            own: utime + stime,
        })
    }

    /// CPUs kept busy by everything but this process (other processes and kernel threads,
    /// including the writeback this process causes), and the steal percentage, since `before`.
    fn noise_since(&self, before: &CpuTicks) -> (f64, f64) {
        let nproc = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        let total = self.total.saturating_sub(before.total) as f64;
        if total == 0.0 {
            return (0.0, 0.0);
        }
        let foreign = self
            .busy
            .saturating_sub(before.busy)
            .saturating_sub(self.own.saturating_sub(before.own)) as f64;
        let steal = self.steal.saturating_sub(before.steal) as f64;
        (foreign / total * nproc, steal / total * 100.0)
    }
}

fn bench_message(body: usize) -> Message {
    let body: Vec<u8> = (0..body).map(|i| (i * 31 + 7) as u8).collect();
    Message::new(TOPIC, body)
}

fn store_options(sync_mode: SyncMode) -> Options {
    Options {
        segment_bytes: SEGMENT_BYTES,
        sync_mode,
        ..Options::default()
    }
}

/// Waits until the background preallocator has created, zero-filled and synced the second
/// segment, which it starts right after `Store::open`, so that this open-time work does not
/// land inside the timed loop. Later segments are prepared while the loop runs.
fn settle_after_open(store_dir: &Path) -> Result<(), String> {
    let path = store_dir
        .join(COMMIT_LOG_DIR)
        .join(offset_file_name(SEGMENT_BYTES));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match std::fs::metadata(&path) {
            Ok(meta) if meta.len() == SEGMENT_BYTES => break,
            _ if Instant::now() > deadline => {
                // The store no longer prepares it at open: time the loop anyway, and say so.
                eprintln!("warning: second segment {path:?} not prepared within 60 s");
                return Ok(());
            }
            _ => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    // fsync waits for the preallocator's own sync of the same pages; then leave it time to map.
    File::open(&path)
        .and_then(|f| f.sync_all())
        .map_err(|e| format!("syncing {path:?}: {e}"))?;
    std::thread::sleep(Duration::from_millis(300));
    Ok(())
}

fn async_put(dir: &Path, body: usize, count: u64) -> Result<Sample, String> {
    let store_dir = dir.join("store");
    let store = Store::open(&store_dir, store_options(SyncMode::Async))
        .map_err(|e| format!("opening the store: {e}"))?;
    settle_after_open(&store_dir)?;
    let message = bench_message(body);
    let mut batches: Vec<f64> = Vec::with_capacity((count as usize).div_ceil(BATCH));
    let start = Instant::now();
    let mut batch_start = start;
    let mut roll_races = 0u64;
    for i in 1..=count {
        roll_races += put_retrying_roll_race(&store, &message)
            .map_err(|e| format!("put {i} of {count}: {e}"))?;
        if i.is_multiple_of(BATCH as u64) {
            let now = Instant::now();
            batches.push((now - batch_start).as_secs_f64());
            batch_start = now;
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let segments = store.stats().segment_count;
    store
        .close()
        .map_err(|e| format!("closing the store: {e}"))?;

    let mut sorted = batches.clone();
    sorted.sort_by(f64::total_cmp);
    let median_batch = percentile(&sorted, 0.5);
    let stall: f64 = batches
        .iter()
        .filter(|&&t| t > STALL_FACTOR * median_batch)
        .fold(0.0, |sum, t| sum + (t - median_batch));
    let max_batch = sorted.last().copied().unwrap_or(0.0);
    let steady = if median_batch > 0.0 {
        BATCH as f64 / median_batch
    } else {
        0.0
    };
    let bytes = count as f64 * record_bytes(TOPIC, body) as f64;
    Ok(vec![
        ("msg_per_s", "msg/s", count as f64 / elapsed),
        ("mb_per_s", "MB/s", bytes / elapsed / 1e6),
        ("steady_msg_per_s", "msg/s", steady),
        ("stall_ms", "ms", stall * 1e3),
        ("max_batch_ms", "ms", max_batch * 1e3),
        ("segments", "count", segments as f64),
        ("roll_race_errors", "count", roll_races as f64),
        ("elapsed_s", "s", elapsed),
    ])
}

/// Puts `message`, retrying while the put fails because the segment it rolls into already
/// exists. This benchmark found that store bug at `64c888d` (fixed in `3916e6e`): when the
/// producer filled a segment before the background preallocator had finished the next one, the
/// roll created that segment inline with `create_new` and collided with the preallocator's
/// half-made file (`EEXIST`); the store stayed consistent and a later put succeeded once the
/// preallocator was done. Retrying (after a 1 ms sleep) makes the producer wait for the
/// preallocator, so a regression shows up as a count (`roll_race_errors`) instead of aborting
/// the run. Returns how many attempts failed that way; any other error is returned.
fn put_retrying_roll_race(store: &Store, message: &Message) -> Result<u64, String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut failures = 0;
    loop {
        match store.put(message) {
            Ok(_) => return Ok(failures),
            Err(Error::Io { source, .. })
                if source.kind() == io::ErrorKind::AlreadyExists && Instant::now() < deadline =>
            {
                failures += 1;
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => return Err(format!("{e} (after {failures} roll-race retries)")),
        }
    }
}

/// Creates a file with `len_bytes` of blocks reserved by `fallocate` (read as zeros, never
/// written), then syncs it, as the store reserves a segment.
fn create_reserved(path: &Path, len_bytes: u64) -> io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(path)?;
    rustix::fs::fallocate(&file, rustix::fs::FallocateFlags::empty(), 0, len_bytes)?;
    file.sync_all()?;
    Ok(file)
}

fn raw_mmap(dir: &Path, body: usize, fill: Fill, count: u64) -> Result<Sample, String> {
    let mut record = raw_record(TOPIC, body);
    let len = record.len();
    let total = count as usize * len;
    let file_len = total.div_ceil(4096) * 4096;
    let path = dir.join("raw-mmap");
    let file = match fill {
        Fill::Zeroed => create_zeroed(&path, file_len as u64),
        Fill::Reserved => create_reserved(&path, file_len as u64),
    }
    .map_err(|e| format!("creating {path:?}: {e}"))?;
    let mut options = MmapOptions::new();
    options.len(file_len);
    if fill == Fill::Zeroed {
        options.populate();
    }
    // SAFETY: the file was just created in a private temporary directory; nothing else maps or
    // truncates it while the map lives (it is dropped before the directory is removed).
    let mut map =
        unsafe { options.map_mut(&file) }.map_err(|e| format!("mapping {path:?}: {e}"))?;
    let start = Instant::now();
    let mut at = 0usize;
    while at < total {
        seal_raw(&mut record, at as u64);
        map[at..at + len].copy_from_slice(&record);
        at += len;
    }
    let elapsed = start.elapsed().as_secs_f64();
    std::hint::black_box(&map);
    drop(map);
    Ok(vec![
        ("msg_per_s", "msg/s", count as f64 / elapsed),
        ("mb_per_s", "MB/s", total as f64 / elapsed / 1e6),
        ("elapsed_s", "s", elapsed),
    ])
}

fn sync_put(dir: &Path, threads: usize, duration: Duration) -> Result<Sample, String> {
    let store_dir = dir.join("store");
    let store = Arc::new(
        Store::open(&store_dir, store_options(SyncMode::Sync))
            .map_err(|e| format!("opening the store: {e}"))?,
    );
    settle_after_open(&store_dir)?;
    let stop = Arc::new(AtomicBool::new(false));
    let barrier = Arc::new(Barrier::new(threads + 1));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (store, stop, barrier) = (store.clone(), stop.clone(), barrier.clone());
            std::thread::Builder::new()
                .name(format!("producer-{t}"))
                .spawn(move || -> Result<(Vec<u64>, u64), String> {
                    let message = bench_message(SYNC_BODY);
                    let mut latencies = Vec::with_capacity(1 << 16);
                    let mut roll_races = 0;
                    barrier.wait();
                    while !stop.load(Ordering::Relaxed) {
                        let t0 = Instant::now();
                        roll_races += put_retrying_roll_race(&store, &message)
                            .map_err(|e| format!("sync put: {e}"))?;
                        latencies.push(t0.elapsed().as_nanos() as u64);
                    }
                    Ok((latencies, roll_races))
                })
                .expect("spawning a producer thread")
        })
        .collect();
    barrier.wait();
    let start = Instant::now();
    std::thread::sleep(duration);
    stop.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    let mut roll_races = 0;
    let mut failure = None;
    for handle in handles {
        match handle.join() {
            Ok(Ok((l, races))) => {
                latencies.extend(l);
                roll_races += races;
            }
            Ok(Err(e)) => failure = Some(e),
            Err(_) => failure = Some("a producer thread panicked".to_owned()),
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let store = Arc::try_unwrap(store).map_err(|_| "store still shared after join".to_owned())?;
    store
        .close()
        .map_err(|e| format!("closing the store: {e}"))?;
    if let Some(e) = failure {
        return Err(e);
    }
    let mut sample = latency_sample(latencies, elapsed);
    sample.push(("roll_race_errors", "count", roll_races as f64));
    Ok(sample)
}

fn latency_sample(mut latencies: Vec<u64>, elapsed: f64) -> Sample {
    latencies.sort_unstable();
    let us: Vec<f64> = latencies.iter().map(|&ns| ns as f64 / 1e3).collect();
    vec![
        ("msg_per_s", "msg/s", latencies.len() as f64 / elapsed),
        ("p50_us", "us", percentile(&us, 0.50)),
        ("p99_us", "us", percentile(&us, 0.99)),
        ("max_us", "us", us.last().copied().unwrap_or(0.0)),
    ]
}

fn raw_fsync(dir: &Path, duration: Duration) -> Result<Sample, String> {
    let mut record = raw_record(TOPIC, SYNC_BODY);
    let len = record.len() as u64;
    let path = dir.join("raw-fsync");
    let file =
        create_zeroed(&path, SEGMENT_BYTES).map_err(|e| format!("creating {path:?}: {e}"))?;
    let mut latencies = Vec::with_capacity(1 << 16);
    let start = Instant::now();
    let mut at = 0u64;
    while start.elapsed() < duration {
        let t0 = Instant::now();
        seal_raw(&mut record, at);
        file.write_all_at(&record, at)
            .and_then(|()| file.sync_data())
            .map_err(|e| format!("pwrite + fdatasync at {at}: {e}"))?;
        latencies.push(t0.elapsed().as_nanos() as u64);
        at += len;
        if at + len > SEGMENT_BYTES {
            at = 0;
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    Ok(latency_sample(latencies, elapsed))
}

/// Flushes other dirty data (earlier workloads, other users of the disk) before a workload, so
/// its writeback does not land inside the next measurement. Best effort.
fn settle_disk() {
    let _ = std::process::Command::new("sync").status();
    std::thread::sleep(Duration::from_millis(200));
}

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
        "ratio" => format!("{:.0} %", value * 100.0),
        "count" => format!("{value:.0}"),
        "s" => format!("{value:.2}"),
        _ => {
            if value >= 100.0 {
                format!("{value:.0}")
            } else {
                format!("{value:.1}")
            }
        }
    }
}

/// A JSON string without its quotes (`?` for anything else).
fn text(value: &serde_json::Value) -> &str {
    value.as_str().unwrap_or("?")
}

fn machine_info(dir: &Path) -> serde_json::Value {
    let cpu = cpu_model();
    let mem_kib = mem_total_kib();
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let (device, fs_type) = mount_of(dir);
    // `BENCH_GIT_REV` names the source when the bench runs outside a checkout.
    let git = std::env::var("BENCH_GIT_REV").ok().or_else(|| {
        std::process::Command::new("git")
            .args(["describe", "--always", "--dirty"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    });
    json!({
        "nproc": nproc,
        "kernel": read_trimmed("/proc/version"),
        "cpu": cpu,
        "mem_gib": (mem_kib as f64 / 1048576.0 * 10.0).round() / 10.0,
        "bench_dir": dir.display().to_string(),
        "device": device,
        "fs_type": fs_type,
        "git": git,
        "crate_dir": env!("CARGO_MANIFEST_DIR"),
    })
}

/// A figure's value in one repetition.
type RepValue = (usize, f64);

/// Figures collected across repetitions, keyed by (workload, figure).
#[derive(Default)]
struct Results {
    /// (workload, figure) -> (unit, [(repetition, value)]).
    figures: BTreeMap<(Workload, &'static str), (&'static str, Vec<RepValue>)>,
    failures: Vec<String>,
}

impl Results {
    fn record(&mut self, rep: usize, workload: Workload, sample: &Sample) {
        for &(figure, unit, value) in sample {
            self.figures
                .entry((workload, figure))
                .or_insert((unit, Vec::new()))
                .1
                .push((rep, value));
        }
    }

    fn by_rep(&self, workload: Workload, figure: &str) -> &[RepValue] {
        self.figures
            .iter()
            .find(|((w, f), _)| *w == workload && *f == figure)
            .map_or(&[], |(_, (_, v))| v)
    }

    fn values(&self, workload: Workload, figure: &str) -> Vec<f64> {
        self.by_rep(workload, figure)
            .iter()
            .map(|&(_, v)| v)
            .collect()
    }

    /// Per-repetition ratios of `figure_a` of `a` over the largest `figure_b` of `b` in the
    /// same repetition (a repetition is left out unless every one of `b` ran in it).
    fn ratios(&self, a: Workload, figure_a: &str, b: &[Workload], figure_b: &str) -> Vec<f64> {
        self.by_rep(a, figure_a)
            .iter()
            .filter_map(|&(rep, x)| {
                let ceilings: Option<Vec<f64>> = b
                    .iter()
                    .map(|&w| {
                        self.by_rep(w, figure_b)
                            .iter()
                            .find(|&&(r, _)| r == rep)
                            .map(|&(_, y)| y)
                    })
                    .collect();
                let best = ceilings?.into_iter().fold(f64::NAN, f64::max);
                Some(x / best)
            })
            .collect()
    }
}

fn main() {
    let args = Args::parse();
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let dir = args.dir.clone().unwrap_or_else(|| manifest.join("target"));
    std::fs::create_dir_all(&dir).expect("creating the bench directory");
    let json_path = args
        .json
        .clone()
        .unwrap_or_else(|| manifest.join("target").join("bench-append.jsonl"));
    let scale = if args.quick { 10 } else { 1 };
    let config = Config {
        dir: dir.clone(),
        async_bytes: args.async_bytes.unwrap_or((1 << 30) / scale),
        async_max_msgs: args.async_max_msgs.unwrap_or(4_000_000 / scale),
        sync_time: Duration::from_secs_f64(args.sync_secs.unwrap_or(if args.quick {
            1.0
        } else {
            5.0
        })),
    };
    let machine = machine_info(&dir);
    let mode = if args.quick { "quick" } else { "full" };
    println!("delaystore append benchmark ({mode}, {} reps)", args.reps);
    println!(
        "machine: {} cpus ({}), {} GiB, {}",
        machine["nproc"],
        text(&machine["cpu"]),
        machine["mem_gib"],
        text(&machine["kernel"])
    );
    println!(
        "dir: {} on {} ({}); async {} MiB/size (cap {} msgs), sync {:.1} s/workload",
        dir.display(),
        text(&machine["device"]),
        text(&machine["fs_type"]),
        config.async_bytes >> 20,
        config.async_max_msgs,
        config.sync_time.as_secs_f64()
    );
    if machine["fs_type"] == "tmpfs" {
        println!("WARNING: the bench directory is on tmpfs: disk figures are meaningless");
    }

    let mut results = Results::default();
    let bench_start = Instant::now();
    for rep in 0..args.reps {
        for workload in schedule(rep) {
            let name = workload.name();
            if !selected(args.filter.as_deref(), &name) {
                continue;
            }
            settle_disk();
            let t0 = Instant::now();
            match run(workload, &config) {
                Ok(sample) => {
                    let (_, unit, value) = sample[0];
                    let foreign = sample
                        .iter()
                        .find(|(figure, _, _)| *figure == "foreign_cpus")
                        .map_or(f64::NAN, |s| s.2);
                    eprintln!(
                        "rep {}/{} {name:<24} {:>10} {unit:<6} ({:.1} s with setup; \
                         other load {foreign:.2} CPUs)",
                        rep + 1,
                        args.reps,
                        human(value, unit),
                        t0.elapsed().as_secs_f64()
                    );
                    results.record(rep, workload, &sample);
                }
                Err(e) => {
                    eprintln!("rep {}/{} {name}: FAILED: {e}", rep + 1, args.reps);
                    results
                        .failures
                        .push(format!("rep {}: {name}: {e}", rep + 1));
                }
            }
        }
    }
    eprintln!("total {:.0} s", bench_start.elapsed().as_secs_f64());

    report(&results, &machine, mode, args.reps, &json_path);
}

/// Whether `--filter` selects the workload called `name` (`kind/variant`).
fn selected(filter: Option<&str>, name: &str) -> bool {
    filter.is_none_or(|filter| {
        filter.split(',').map(str::trim).any(|f| {
            name == f
                || name
                    .strip_prefix(f)
                    .is_some_and(|rest| rest.starts_with('/'))
        })
    })
}

/// A derived figure: ratio of a store figure to its ceiling (the faster of `to` in each
/// repetition when there are several).
struct Ratio {
    name: String,
    of: Workload,
    figure: &'static str,
    to: Vec<Workload>,
}

fn ratios() -> Vec<Ratio> {
    let mut out = Vec::new();
    for body in ASYNC_BODIES {
        let zeroed = Workload::RawMmap {
            body,
            fill: Fill::Zeroed,
        };
        let reserved = Workload::RawMmap {
            body,
            fill: Fill::Reserved,
        };
        for (figure, label) in [("msg_per_s", ""), ("steady_msg_per_s", " steady")] {
            for (ceiling, to) in [
                ("raw_mmap", vec![zeroed]),
                ("raw_mmap_reserved", vec![reserved]),
                ("best raw", vec![zeroed, reserved]),
            ] {
                out.push(Ratio {
                    name: format!("async_put/{}{label} / {ceiling}", size_label(body)),
                    of: Workload::AsyncPut { body },
                    figure,
                    to,
                });
            }
        }
    }
    out.extend(SYNC_THREADS.iter().map(|&threads| Ratio {
        name: format!("sync_put/{threads} / raw_fsync"),
        of: Workload::SyncPut { threads },
        figure: "msg_per_s",
        to: vec![Workload::RawFsync],
    }));
    out
}

fn report(results: &Results, machine: &serde_json::Value, mode: &str, reps: usize, path: &Path) {
    let run_id = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut lines: Vec<serde_json::Value> = Vec::new();
    let base = |workload: Workload| {
        json!({
            "bench": "append",
            "run": run_id,
            "mode": mode,
            "reps": reps,
            "workload": workload.kind(),
            "body_bytes": workload.body(),
            "record_bytes": record_bytes(TOPIC, workload.body()),
            "threads": workload.threads(),
            "machine": machine,
        })
    };

    println!();
    println!(
        "{:<24} {:<25} {:>10} {:>10} {:>10}",
        "workload", "figure", "median", "min", "max"
    );
    let mut last_kind = "";
    for ((workload, figure), (unit, values)) in &results.figures {
        if *figure == "elapsed_s" {
            continue;
        }
        if workload.kind() != last_kind {
            println!();
            last_kind = workload.kind();
        }
        let reps: Vec<usize> = values.iter().map(|&(rep, _)| rep + 1).collect();
        let values: Vec<f64> = values.iter().map(|&(_, v)| v).collect();
        let s = summarize(&values);
        println!(
            "{:<24} {:<25} {:>10} {:>10} {:>10}",
            workload.name(),
            format!("{figure} ({unit})"),
            human(s.median, unit),
            human(s.min, unit),
            human(s.max, unit)
        );
        let mut line = base(*workload);
        line["figure"] = json!(figure);
        line["unit"] = json!(unit);
        line["median"] = json!(s.median);
        line["min"] = json!(s.min);
        line["max"] = json!(s.max);
        line["samples"] = json!(values);
        line["sample_reps"] = json!(reps);
        lines.push(line);
    }

    println!();
    println!("ratio to ceiling (msg/s, per repetition)");
    let mut ratio_medians = BTreeMap::new();
    for ratio in ratios() {
        let values = results.ratios(ratio.of, ratio.figure, &ratio.to, "msg_per_s");
        if values.is_empty() {
            continue;
        }
        let s = summarize(&values);
        println!(
            "{:<44} {:>10} {:>10} {:>10}",
            ratio.name,
            human(s.median, "ratio"),
            human(s.min, "ratio"),
            human(s.max, "ratio")
        );
        ratio_medians.insert(ratio.name.clone(), s.median);
        let mut line = base(ratio.of);
        line["figure"] = json!(format!("{}_to_ceiling", ratio.figure));
        line["ceiling"] = json!(ratio.to.iter().map(|w| w.name()).collect::<Vec<_>>());
        line["ratio"] = json!(ratio.name);
        line["unit"] = json!("ratio");
        line["median"] = json!(s.median);
        line["min"] = json!(s.min);
        line["max"] = json!(s.max);
        line["samples"] = json!(values);
        lines.push(line);
    }

    println!();
    println!("targets (median)");
    let median_of = |w: Workload| {
        let values = results.values(w, "msg_per_s");
        (!values.is_empty()).then(|| summarize(&values).median)
    };
    let targets = [
        (
            "async 1 KiB >= 2 M msg/s",
            median_of(Workload::AsyncPut { body: 1024 }),
            TARGET_ASYNC_1K_MSG_S,
            "msg/s",
        ),
        (
            "async 1 KiB >= 40 % of best raw mmap",
            ratio_medians.get("async_put/1KiB / best raw").copied(),
            TARGET_ASYNC_1K_RATIO,
            "ratio",
        ),
        (
            "sync 64 threads >= 100 k msg/s",
            median_of(Workload::SyncPut { threads: 64 }),
            TARGET_SYNC_64_MSG_S,
            "msg/s",
        ),
    ];
    for (name, value, target, unit) in targets {
        let (shown, met) = match value {
            Some(v) => (human(v, unit), if v >= target { "MET" } else { "MISSED" }),
            None => ("n/a".to_owned(), "NOT RUN"),
        };
        println!("{name:<44} {shown:>10}  {met}");
        lines.push(json!({
            "bench": "append", "run": run_id, "mode": mode, "reps": reps,
            "figure": "target", "target": name, "threshold": target, "unit": unit,
            "median": value, "met": value.map(|v| v >= target), "machine": machine,
        }));
    }
    if !results.failures.is_empty() {
        println!();
        println!("failures");
        for failure in &results.failures {
            println!("  {failure}");
        }
        for failure in &results.failures {
            lines.push(json!({
                "bench": "append", "run": run_id, "mode": mode, "figure": "failure",
                "error": failure, "machine": machine,
            }));
        }
    }

    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("creating the JSON output directory");
    }
    let mut out = File::create(path).expect("creating the JSON-lines output");
    for line in &lines {
        writeln!(out, "{line}").expect("writing the JSON-lines output");
    }
    println!();
    println!("{} JSON lines written to {}", lines.len(), path.display());
}
