//! `delaystore recover`: runs recovery explicitly and prints what it did; `--dry-run` prints
//! what it would do without changing anything. Output: one JSON line per record the cut drops
//! (and, in a dry run, per change it would make), then a summary line.

use std::path::Path;

use clap::Args;
use delaystore::inspect::dump::kind_name;
use delaystore::inspect::recovery_plan::{plan_recovery, PlanConfig, RecoveryPlan};
use delaystore::io::{Change, RealFs};
use delaystore::meta::StoreMeta;
use delaystore::recovery::{CheckpointUse, RecoveryReport};
use delaystore::{Error, Options};

use super::verify::queue_key_name;
use super::{emit, open_store, refuse_live};

#[derive(Debug, Args)]
pub struct RecoverArgs {
    /// Show what recovery would do; change nothing.
    #[arg(long)]
    dry_run: bool,
}

pub fn run(dir: &Path, args: &RecoverArgs) -> Result<i32, Error> {
    let defaults = Options::default();
    let segment_bytes = StoreMeta::load(&RealFs, dir)?
        .and_then(|m| m.segment_bytes)
        .unwrap_or(defaults.segment_bytes);
    let config = PlanConfig {
        segment_bytes,
        queue_file_entries: defaults.consume_queue_file_entries,
        segment_fill: defaults.segment_fill(),
    };
    let plan = match plan_recovery(dir, &config) {
        Ok(plan) => plan,
        Err(err) => return refuse_live(err, "recover"),
    };
    for record in &plan.dropped {
        emit(&serde_json::json!({
            "dropped_record": {
                "id": format!("{:016x}", record.log_offset),
                "log_offset": record.log_offset,
                "file": record.file.display().to_string(),
                "offset": record.file_offset,
                "kind": kind_name(record.kind),
                "topic": record.topic,
                "queue": record.queue_id,
                "queue_offset": record.queue_offset,
                "delay_level": record.delay_level,
                "store_ms": record.store_ms,
                "record_bytes": record.record_bytes,
            }
        }));
    }
    if args.dry_run {
        for change in &plan.changes {
            emit(&serde_json::json!({ "change": change_json(change) }));
        }
        emit(&summary(&plan.report, &plan, true, None));
        return Ok(0);
    }
    let store = open_store(dir, false)?;
    let report = store.recovery_report().clone();
    store.close()?;
    let as_planned = report == plan.report;
    emit(&summary(&report, &plan, false, Some(as_planned)));
    Ok(0)
}

fn change_json(change: &Change) -> serde_json::Value {
    let path = |p: &Path| p.display().to_string();
    match change {
        Change::CreateDir { path: p } => serde_json::json!({"create_dir": path(p)}),
        Change::CreateFile { path: p, len_bytes } => {
            serde_json::json!({"create_file": path(p), "len_bytes": len_bytes})
        }
        Change::Write {
            path: p,
            offset,
            len_bytes,
        } => serde_json::json!({"write": path(p), "offset": offset, "len_bytes": len_bytes}),
        Change::ZeroTail {
            path: p,
            offset,
            zeroed_bytes,
        } => {
            serde_json::json!({"zero_after": path(p), "offset": offset, "zeroed_bytes": zeroed_bytes})
        }
        Change::SetLen { path: p, len_bytes } => {
            serde_json::json!({"extend_file": path(p), "len_bytes": len_bytes})
        }
        Change::WriteFile { path: p, len_bytes } => {
            serde_json::json!({"replace_file": path(p), "len_bytes": len_bytes})
        }
        Change::Rename { from, to } => serde_json::json!({"rename": path(from), "to": path(to)}),
        Change::Remove { path: p } => serde_json::json!({"remove": path(p)}),
    }
}

fn summary(
    report: &RecoveryReport,
    plan: &RecoveryPlan,
    dry_run: bool,
    as_planned: Option<bool>,
) -> serde_json::Value {
    let checkpoint = match &report.checkpoint {
        CheckpointUse::Missing => serde_json::json!({"use": "missing"}),
        CheckpointUse::Used { clean_shutdown } => {
            serde_json::json!({"use": "used", "clean_shutdown": clean_shutdown})
        }
        CheckpointUse::Rejected { reason } => {
            serde_json::json!({"use": "rejected", "reason": reason})
        }
    };
    let keys = |keys: &[delaystore::consume_queue::QueueKey]| -> Vec<String> {
        keys.iter().map(queue_key_name).collect()
    };
    serde_json::json!({
        "dry_run": dry_run,
        "as_planned": as_planned,
        "checkpoint": checkpoint,
        "scan_from": report.scan_from,
        "log_end_offset": report.log_end_offset,
        "records_scanned": report.records_scanned,
        "torn_tail": report.torn_tail.as_ref().map(|t| serde_json::json!({
            "file": t.file.display().to_string(),
            "offset": t.offset,
            "log_offset": t.log_offset,
            "check": t.kind.to_string(),
        })),
        "records_dropped": plan.dropped_count,
        "bytes_dropped": plan.dropped_bytes,
        "discarded_tail_bytes": report.discarded_tail_bytes,
        "segments_removed": report.segments_removed.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
        "segments_removed_with_data": report.segments_removed_with_data,
        "queues_truncated": keys(&report.queues_truncated),
        "queues_rebuilt": keys(&report.queues_rebuilt),
        "entries_replayed": report.entries_replayed,
        "decision_files_rebuilt": report.decision_files_rebuilt.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
        "consumer_offsets_clamped": report.consumer_offsets_clamped.iter().map(|(g, t, q, from, to)| serde_json::json!({
            "group": g, "topic": t, "queue": q, "from": from, "to": to,
        })).collect::<Vec<_>>(),
        "lost_anything": report.lost_anything() || plan.dropped_count > 0,
    })
}
