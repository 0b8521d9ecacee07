//! Command line and the sizes of one run (full or `--quick`).

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

/// Compares delaystore with the stores a user would pick instead (see docs/benchmarks.md).
#[derive(Parser, Debug, Clone)]
pub struct Args {
    /// Which workloads: `all` or a comma-separated list of `async`, `sync`, `lateness`,
    /// `drain`, `recovery`, `memory`, `orders`.
    #[arg(long, default_value = "all")]
    pub suite: String,
    /// A smoke run: every workload and peer, sizes cut so the run takes under 3 minutes.
    #[arg(long)]
    pub quick: bool,
    /// Repetitions (default 3, quick 1); each runs every workload against every peer.
    #[arg(long)]
    pub reps: Option<usize>,
    /// Comma-separated peers to run (default: every one available): `delaystore`, `sqlite`,
    /// `redb`, `fjall`, `postgres`, `redis`, `rocksdb`.
    #[arg(long)]
    pub peers: Option<String>,
    /// Directory for the temporary stores and servers; must be on the disk under test.
    /// Default: `$DELAYSTORE_BENCH_DIR`, else the crate's `target/`.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// JSON-lines output (overwritten). Default: the crate's `target/compare.jsonl`.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Only render the report from this JSON-lines file (no measurement).
    #[arg(long)]
    pub render_only: Option<PathBuf>,
    /// Where the report goes: the generated section of this Markdown file (between the
    /// `compare:begin` and `compare:end` markers) and SVG plots in its `img/` directory.
    /// Default: the crate's `docs/benchmarks.md`.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Internal: run one measurement in this child process (JSON spec).
    #[arg(long, hide = true)]
    pub child: Option<String>,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    pub bench: bool,
}

/// The workloads, by the names `--suite` takes.
pub const SUITES: [&str; 7] = [
    "async", "sync", "lateness", "drain", "recovery", "memory", "orders",
];

/// Sizes of one run.
#[derive(Debug, Clone)]
pub struct Config {
    pub dir: PathBuf,
    pub reps: usize,
    /// Async append: bodies, and per peer at most this many messages or this much time.
    pub async_bodies: Vec<usize>,
    pub async_bytes: u64,
    pub async_time: Duration,
    /// Synced append: producer counts, time per (peer, count).
    pub sync_producers: Vec<usize>,
    pub sync_time: Duration,
    /// Lateness: due messages per second, for how long, with which delay.
    pub lateness_rates: Vec<u64>,
    pub lateness_time: Duration,
    pub lateness_delay_ms: u64,
    /// Backlog drain: messages.
    pub drain_count: u64,
    /// Recovery: bytes of 1 KiB bodies pending at the kill.
    pub recovery_bytes: u64,
    /// Memory: messages pending.
    pub memory_count: u64,
    /// Orders: orders, over how long, due after how long, scan periods.
    pub orders: u64,
    pub order_window_ms: u64,
    pub order_delay_ms: u64,
    pub scan_periods_ms: Vec<u64>,
    /// Ceilings: bytes of records copied into the map, time of the pwrite + fdatasync loop.
    pub ceiling_bytes: u64,
    pub ceiling_sync_time: Duration,
    /// Commit-log segment of the delaystore peer (async / sync).
    pub segment_bytes: u64,
    pub sync_segment_bytes: u64,
}

impl Config {
    pub fn new(dir: PathBuf, quick: bool, reps: Option<usize>) -> Self {
        if quick {
            Config {
                dir,
                reps: reps.unwrap_or(1),
                async_bodies: vec![128, 1024, 16 * 1024],
                async_bytes: 24 << 20,
                async_time: Duration::from_millis(700),
                sync_producers: vec![1, 4, 16, 64],
                sync_time: Duration::from_millis(400),
                lateness_rates: vec![10_000, 100_000],
                lateness_time: Duration::from_millis(1_500),
                lateness_delay_ms: 300,
                drain_count: 50_000,
                recovery_bytes: 8 << 20,
                memory_count: 100_000,
                orders: 2_000,
                order_window_ms: 1_000,
                order_delay_ms: 500,
                scan_periods_ms: vec![1_000],
                ceiling_bytes: 64 << 20,
                ceiling_sync_time: Duration::from_millis(500),
                segment_bytes: 64 << 20,
                sync_segment_bytes: 16 << 20,
            }
        } else {
            Config {
                dir,
                reps: reps.unwrap_or(3),
                async_bodies: vec![128, 1024, 16 * 1024],
                async_bytes: 256 << 20,
                async_time: Duration::from_secs(3),
                sync_producers: vec![1, 4, 16, 64],
                sync_time: Duration::from_secs(2),
                lateness_rates: vec![10_000, 100_000],
                lateness_time: Duration::from_secs(5),
                lateness_delay_ms: 1_000,
                drain_count: 1_000_000,
                recovery_bytes: 256 << 20,
                memory_count: 1_000_000,
                orders: 20_000,
                order_window_ms: 10_000,
                order_delay_ms: 3_000,
                scan_periods_ms: vec![1_000, 10_000, 60_000],
                ceiling_bytes: 512 << 20,
                ceiling_sync_time: Duration::from_secs(2),
                segment_bytes: 256 << 20,
                sync_segment_bytes: 64 << 20,
            }
        }
    }
}

/// "128B", "1KiB", "16KiB".
pub fn size_label(bytes: usize) -> String {
    if bytes >= 1024 && bytes.is_multiple_of(1024) {
        format!("{}KiB", bytes / 1024)
    } else {
        format!("{bytes}B")
    }
}
