//! Command-line parsing and the shared conventions: `--dir`, JSON lines on stdout, errors as
//! one JSON object on stderr with a non-zero exit code.

mod cancel;
mod consume;
mod demo;
mod dump;
mod inspect;
mod progress;
mod put;
mod recover;
mod replay;
mod stats;
mod verify;

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};
use delaystore::io::RealFs;
use delaystore::meta::StoreMeta;
use delaystore::{Error, Options, Store};

/// Exit code when the command ran but found or met a problem it reports (bad input line...).
pub const EXIT_PROBLEM: i32 = 1;
/// Exit code when the command could not run.
pub const EXIT_FAILED: i32 = 2;

#[derive(Debug, Parser)]
#[command(name = "delaystore", version, about = "Embedded delayed-message store")]
struct Cli {
    /// Store directory.
    #[arg(long, global = true, default_value = "./delaystore-data")]
    dir: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Creates a store.
    Init {
        /// Delay-level table, e.g. "200ms 1s 5s" (units ms s m h d).
        #[arg(long)]
        levels: Option<String>,
        /// Commit-log segment size in bytes.
        #[arg(long)]
        segment_bytes: Option<u64>,
        /// Queues per topic.
        #[arg(long)]
        queues: Option<u32>,
    },
    /// Puts messages: JSON lines from stdin, or generated with --count.
    Put(put::PutArgs),
    /// Cancels delayed messages by id: one line `{"id", "outcome"}` each.
    Cancel(cancel::CancelArgs),
    /// Prints a topic's messages for a consumer group, committing its offsets as it goes.
    Consume(consume::ConsumeArgs),
    /// Prints the store's state as one JSON object.
    Stats,
    /// Runs the order-timeout scenario on an embedded store in a temporary directory.
    Demo(demo::DemoArgs),
    /// Checks the whole store without changing it: one JSON line per problem, then a summary.
    /// Exit 0: no error; 1: errors found; 2: could not run (no store, held by a live process).
    Verify(verify::VerifyArgs),
    /// Runs recovery explicitly and prints what it did (records dropped, bytes cut, queues
    /// truncated or rebuilt, checkpoint fallback); --dry-run prints the plan, changing nothing.
    Recover(recover::RecoverArgs),
    /// Prints records as JSON lines, selected by topic, queue, offsets, time, id, delay state.
    /// Read-only.
    Dump(dump::DumpArgs),
    /// Re-posts chosen messages into a target topic/queue with an idempotency key (a second
    /// run posts nothing); or exports them as JSON lines; --dry-run lists them.
    Replay(replay::ReplayArgs),
    /// Prints what the store holds, from its files, without opening it: segments, queues,
    /// pending per level, next due, consumer lag, disk usage. Read-only.
    Inspect,
}

/// Parses the command line and runs the command; returns the exit code.
pub fn run() -> i32 {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Init {
            levels,
            segment_bytes,
            queues,
        } => init(&cli.dir, levels, segment_bytes, queues),
        Command::Put(args) => put::run(&cli.dir, &args),
        Command::Cancel(args) => cancel::run(&cli.dir, &args),
        Command::Consume(args) => consume::run(&cli.dir, &args),
        Command::Stats => stats::run(&cli.dir),
        Command::Demo(args) => demo::run(&args),
        Command::Verify(args) => verify::run(&cli.dir, &args),
        Command::Recover(args) => recover::run(&cli.dir, &args),
        Command::Dump(args) => dump::run(&cli.dir, &args),
        Command::Replay(args) => replay::run(&cli.dir, &args),
        Command::Inspect => inspect::run(&cli.dir),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            report_error(&err.to_string(), None);
            EXIT_FAILED
        }
    }
}

/// The durability a command's `--sync` flag asks for.
pub fn durability(sync: bool) -> delaystore::Durability {
    if sync {
        delaystore::Durability::Sync
    } else {
        delaystore::Durability::Default
    }
}

/// Prints one JSON value as a line on stdout and flushes, so a reader sees it at once.
pub fn emit(value: &serde_json::Value) {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    // A closed stdout (the reader went away) is not worth a panic; the exit code still tells.
    if writeln!(out, "{value}").and_then(|()| out.flush()).is_err() {
        eprintln!("delaystore: stdout is closed");
    }
}

/// Prints an error as one JSON line on stderr.
pub fn report_error(message: &str, line: Option<u64>) {
    let value = match line {
        Some(line) => serde_json::json!({ "error": message, "line": line }),
        None => serde_json::json!({ "error": message }),
    };
    eprintln!("{value}");
}

/// What a read-only command does when its lock probe failed: a store held by a live process
/// is refused with a message saying what to do (exit 2); other errors pass through.
pub fn refuse_live(err: Error, command: &str) -> Result<i32, Error> {
    match err {
        Error::Locked { dir } => {
            report_error(
                &format!(
                    "{} is held by a live process (its LOCK is taken): {command} does not touch \
                     a store in use; stop that process first (or ask it: `delaystore stats` \
                     works on a store it opens itself)",
                    dir.display()
                ),
                None,
            );
            Ok(EXIT_FAILED)
        }
        other => Err(other),
    }
}

/// Opens an existing store with the segment size it was created with (or creates one with
/// defaults when `create` is set).
pub fn open_store(dir: &Path, create: bool) -> Result<Store, Error> {
    let defaults = Options::default();
    let stored = StoreMeta::load(&RealFs, dir)?.and_then(|meta| meta.segment_bytes);
    Store::open(
        dir,
        Options {
            create_if_missing: create,
            segment_bytes: stored.unwrap_or(defaults.segment_bytes),
            ..defaults
        },
    )
}

fn init(
    dir: &Path,
    levels: Option<String>,
    segment_bytes: Option<u64>,
    queues: Option<u32>,
) -> Result<i32, Error> {
    if dir.join(delaystore::meta::META_FILE).exists() {
        report_error(
            &format!("a store already exists in {}", dir.display()),
            None,
        );
        return Ok(EXIT_FAILED);
    }
    let defaults = Options::default();
    let store = Store::open(
        dir,
        Options {
            delay_levels: levels,
            segment_bytes: segment_bytes.unwrap_or(defaults.segment_bytes),
            default_queue_count: queues,
            ..defaults
        },
    )?;
    let levels_ms = store.delay_levels_ms();
    store.close()?;
    emit(&serde_json::json!({
        "dir": dir.display().to_string(),
        "created": true,
        "levels_ms": levels_ms,
    }));
    Ok(0)
}
