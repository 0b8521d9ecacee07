//! `delaystore inspect`: what the store holds, read from its files without opening it (no
//! recovery, nothing written): segments with their offset ranges, queues, pending messages per
//! delay level with the next and last due time, pending messages per timer tier (arbitrary
//! delays, by delay horizon), consumer lag, disk usage. One JSON object.

use std::path::Path;

use delaystore::inspect::overview::{overview, Overview};
use delaystore::io::OverlayFs;
use delaystore::Error;

use super::emit;
use super::progress::Progress;
use super::verify::queue_key_name;

pub fn run(dir: &Path) -> Result<i32, Error> {
    if !dir.join(delaystore::meta::META_FILE).exists() {
        return Err(Error::StoreNotFound {
            dir: dir.to_path_buf(),
        });
    }
    let fs = OverlayFs::new();
    let live = delaystore::inspect::probe_lock(&fs, dir).is_err();
    let progress = Progress::bytes("inspect");
    let view = overview(&fs, dir, &mut |done, total| progress.set(done, total))?;
    progress.finish();
    let mut value = overview_json(&view);
    if let Some(object) = value.as_object_mut() {
        // A live store's files are read as far as they are written: a consistent prefix.
        object.insert("live".into(), live.into());
    }
    emit(&value);
    Ok(0)
}

pub fn overview_json(view: &Overview) -> serde_json::Value {
    let segments: Vec<serde_json::Value> = view
        .segments
        .iter()
        .map(|s| {
            serde_json::json!({
                "file": s.path.display().to_string(),
                "base_offset": s.base_offset,
                "end_offset": s.base_offset.saturating_add(s.len_bytes),
                "len_bytes": s.len_bytes,
                "data_end_offset": s.data_end_offset,
            })
        })
        .collect();
    let queues: Vec<serde_json::Value> = view
        .queues
        .iter()
        .map(|q| {
            serde_json::json!({
                "queue": queue_key_name(&q.key),
                "files": q.files,
                "bytes": q.bytes,
                "entries": q.entries,
            })
        })
        .collect();
    let levels: Vec<serde_json::Value> = view
        .levels
        .iter()
        .map(|l| {
            serde_json::json!({
                "level": l.level,
                "delay_ms": l.delay_ms,
                "entries": l.entries,
                "delivered": l.delivered,
                "pending": l.pending,
                "next_due_ms": l.next_due_ms,
                "last_due_ms": l.last_due_ms,
            })
        })
        .collect();
    let tiers: Vec<serde_json::Value> = view
        .tiers
        .iter()
        .map(|t| {
            serde_json::json!({
                "tier": t.tier,
                "granule_ms": t.granule_ms,
                "slots": t.slots,
                "entries": t.entries,
                "consumed": t.consumed,
                "pending": t.pending,
                "next_release_ms": t.next_release_ms,
                "last_due_ms": t.last_due_ms,
            })
        })
        .collect();
    let consumers: Vec<serde_json::Value> = view
        .consumers
        .iter()
        .map(|c| {
            serde_json::json!({
                "group": c.group, "topic": c.topic, "queue": c.queue,
                "committed_offset": c.committed_offset, "end_offset": c.end_offset, "lag": c.lag,
            })
        })
        .collect();
    let disk = &view.disk;
    serde_json::json!({
        "segments": segments,
        "log_end_offset": view.log_end_offset,
        "queues": queues,
        "log_start_offset": view.log_start_offset(),
        "pending_per_level": levels,
        "pending_per_tier": tiers,
        "pending_delayed": view.pending_delayed(),
        "next_due_ms": view.next_due_ms(),
        "horizon_ms": view.horizon_ms(),
        "consumer_lag": consumers,
        "consumer_offsets_error": view.consumers_error,
        "checkpoint": view.checkpoint.map(|c| serde_json::json!({
            "log_end_offset": c.log_end_offset,
            "last_record_offset": c.last_record_offset,
            "written_ms": c.written_ms,
            "clean_shutdown": c.clean_shutdown,
        })),
        "levels_ms": view.meta.as_ref().map(|m| m.delay_levels_ms.clone()),
        "disk_bytes": {
            "commit_log": disk.commit_log_bytes,
            "consume_queues": disk.consume_queue_bytes,
            "decisions": disk.decision_bytes,
            "small_files": disk.small_file_bytes,
            "total": disk.commit_log_bytes
                + disk.consume_queue_bytes
                + disk.decision_bytes
                + disk.small_file_bytes,
        },
    })
}
