//! `delaystore stats`: the store's state as one JSON object: the open store's own statistics
//! (pending messages per delay level and per timer tier, cancellations, forced deletions),
//! then, once it is closed, the file-level facts of `inspect` (segment files with their offset
//! ranges, disk usage, the delay horizon per level and tier).

use std::path::Path;

use delaystore::consume_queue::QueueKey;
use delaystore::Error;

use delaystore::inspect::overview::overview;
use delaystore::io::OverlayFs;

use super::inspect::overview_json;
use super::{emit, open_store};

pub fn run(dir: &Path) -> Result<i32, Error> {
    let store = open_store(dir, false)?;
    let stats = store.stats();
    let outlook = store.due_outlook();
    let levels = store.delay_levels_ms();
    store.close()?;
    // The store is closed (its checkpoint clean): the files now say exactly what it held.
    let files = overview(&OverlayFs::new(), dir, &mut |_, _| {})?;
    let files = overview_json(&files);
    let messages: u64 = stats
        .queues
        .iter()
        .filter(|(key, _)| matches!(key, QueueKey::Topic { .. }))
        .map(|(_, count)| count)
        .sum();
    let pending: serde_json::Map<String, serde_json::Value> = stats
        .pending_per_level
        .iter()
        .map(|(level, count)| (level.to_string(), (*count).into()))
        .collect();
    let consumers: Vec<serde_json::Value> = stats
        .consumers
        .iter()
        .map(|c| {
            serde_json::json!({
                "group": c.group, "topic": c.topic, "queue": c.queue,
                "committed_offset": c.committed_offset, "lag": c.lag,
            })
        })
        .collect();
    emit(&serde_json::json!({
        "messages": messages,
        "pending_delayed": stats.pending_per_level.iter().map(|(_, c)| c).sum::<u64>()
            + stats.pending_per_tier.iter().sum::<u64>(),
        "pending_per_level": pending,
        "pending_per_timer_tier": stats.pending_per_tier,
        "next_due_ms": stats.next_due_ms,
        "due_per_second": outlook.due_per_second,
        "overdue": outlook.overdue,
        "delivery_lag_ms": outlook.delivery_lag_ms,
        "outlook_truncated": outlook.truncated,
        "cancelled": stats.cancelled,
        "forced_deleted_messages": stats.forced_deleted_messages,
        "undeliverable": stats.undeliverable,
        "levels_ms": levels,
        "consumer_lag": consumers,
        "log_start_offset": stats.log_start_offset,
        "log_end_offset": stats.written_end_offset,
        "segments": stats.segment_count,
        "segment_bytes": stats.segment_bytes_total,
        "horizon_ms": files["horizon_ms"],
        "segment_files": files["segments"],
        "delay_levels": files["pending_per_level"],
        "timer_tiers": files["pending_per_tier"],
        "disk_bytes": files["disk_bytes"],
    }));
    Ok(0)
}
