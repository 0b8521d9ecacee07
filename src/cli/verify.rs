//! `delaystore verify`: the read-only whole-store check. One JSON line per problem, then a
//! summary line; exit 0 when no error was found, 1 when some were, 2 when it could not run.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use clap::Args;
use delaystore::inspect::probe_lock;
use delaystore::inspect::problem::Problem;
use delaystore::inspect::verify::{verify, VerifyOptions, VerifyReport};
use delaystore::io::{FileSystem, OverlayFs};
use delaystore::Error;

use super::progress::Progress;
use super::{emit, refuse_live, EXIT_PROBLEM};

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Entries per consume-queue file the store runs with; longer files are reported.
    #[arg(long, default_value_t = VerifyOptions::default().queue_file_entries)]
    queue_file_entries: u64,
}

pub fn run(dir: &Path, args: &VerifyArgs) -> Result<i32, Error> {
    let fs: Arc<dyn FileSystem> = Arc::new(OverlayFs::new());
    let _lock = match probe_lock(fs.as_ref(), dir) {
        Ok(lock) => lock,
        Err(err) => return refuse_live(err, "verify"),
    };
    let started = Instant::now();
    let progress = Progress::bytes("verify");
    let report = verify(
        &fs,
        dir,
        &VerifyOptions {
            queue_file_entries: args.queue_file_entries,
        },
        &mut |problem| emit(&problem_json(problem)),
        &mut |done, total| progress.set(done, total),
    )?;
    progress.finish();
    emit(&summary_json(&report, started));
    Ok(if report.errors > 0 { EXIT_PROBLEM } else { 0 })
}

/// `topic/queue`, `__delay/level` or `__timer/slot`.
pub fn queue_key_name(key: &delaystore::consume_queue::QueueKey) -> String {
    delaystore::inspect::verify::queue_name(key)
}

pub fn problem_json(problem: &Problem) -> serde_json::Value {
    serde_json::json!({
        "problem": problem.kind.as_str(),
        "severity": problem.severity.as_str(),
        "file": problem.file.display().to_string(),
        "offset": problem.offset,
        "log_offset": problem.log_offset,
        "detail": problem.detail,
    })
}

fn summary_json(report: &VerifyReport, started: Instant) -> serde_json::Value {
    let elapsed = started.elapsed();
    let secs = elapsed.as_secs_f64().max(1e-9);
    let by_kind: serde_json::Map<String, serde_json::Value> = report
        .by_kind
        .iter()
        .map(|(kind, count)| (kind.as_str().to_owned(), (*count).into()))
        .collect();
    serde_json::json!({
        "records": report.records,
        "bytes": report.record_bytes,
        "problems": report.errors,
        "warnings": report.warnings,
        "by_kind": by_kind,
        "messages": report.messages,
        "delayed_messages": report.delayed_messages,
        "deliveries": report.deliveries,
        "hops": report.hops,
        "cancels": report.cancels,
        "discards": report.discards,
        "fillers": report.fillers,
        "pending_delayed": report.pending_delayed,
        "cancelled_messages": report.cancelled_messages,
        "discarded_messages": report.discarded_messages,
        "decision_slots": report.decision_slots,
        "segments": report.segments,
        "log_start_offset": report.log_start_offset,
        "queues": report.queues,
        "queue_entries": report.queue_entries,
        "log_end_offset": report.log_end_offset,
        "records_after_end": report.records_after_end,
        "checkpoint": report.checkpoint.map(|c| serde_json::json!({
            "log_end_offset": c.log_end_offset,
            "last_record_offset": c.last_record_offset,
            "written_ms": c.written_ms,
            "clean_shutdown": c.clean_shutdown,
        })),
        "needs_recovery": report.needs_recovery(),
        "scanned_bytes": report.scanned_bytes,
        "elapsed_ms": elapsed.as_millis() as u64,
        "mb_per_s": ((report.scanned_bytes as f64 / 1e6) / secs).round(),
    })
}
