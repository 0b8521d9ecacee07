//! `delaystore consume`: prints a topic's messages for a group, one JSON line each, and
//! commits the group's offsets after each printed batch. While it runs, the store's delivery
//! dispatcher runs too, so delayed messages arrive as they fall due.

use std::path::Path;
use std::time::{Duration, Instant};

use clap::Args;
use delaystore::{Error, StoredMessage};

use super::{emit, open_store};

#[derive(Debug, Args)]
pub struct ConsumeArgs {
    /// Topic to read.
    #[arg(long)]
    topic: String,
    /// Consumer group whose offsets are used and committed.
    #[arg(long)]
    group: String,
    /// Stop after this many messages.
    #[arg(long)]
    max: Option<u64>,
    /// Stop after this long without a new message, in ms.
    #[arg(long, default_value_t = 1000)]
    idle_exit_ms: u64,
}

/// Messages pulled per queue per round.
const BATCH_MAX: usize = 256;

pub fn run(dir: &Path, args: &ConsumeArgs) -> Result<i32, Error> {
    let store = open_store(dir, false)?;
    let queues = store.queue_count(&args.topic)?;
    let mut next: Vec<u64> = (0..queues)
        .map(|q| {
            store
                .committed_offset(&args.group, &args.topic, q)
                .unwrap_or(0)
        })
        .collect();
    let max = args.max.unwrap_or(u64::MAX);
    let idle = Duration::from_millis(args.idle_exit_ms);
    let mut printed = 0u64;
    let mut last_message = Instant::now();
    'outer: loop {
        let token = store.visibility_token();
        let mut got_any = false;
        for (queue, offset) in (0..queues).zip(next.iter_mut()) {
            let room = usize::try_from(max - printed)
                .unwrap_or(BATCH_MAX)
                .min(BATCH_MAX);
            let batch = store.pull(&args.topic, queue, *offset, room)?;
            let Some(last) = batch.last() else { continue };
            *offset = last.queue_offset + 1;
            for message in &batch {
                emit(&message_json(message));
            }
            printed += batch.len() as u64;
            got_any = true;
            store.commit_offset(&args.group, &args.topic, queue, *offset)?;
            if printed >= max {
                break 'outer;
            }
        }
        if got_any {
            last_message = Instant::now();
            continue;
        }
        let waited = last_message.elapsed();
        if waited >= idle {
            break;
        }
        store.wait_for_entries(token, idle - waited);
    }
    store.close()?;
    Ok(0)
}

fn message_json(message: &StoredMessage) -> serde_json::Value {
    serde_json::json!({
        "id": message.id.to_string(),
        "topic": message.topic,
        "queue": message.queue,
        "offset": message.queue_offset,
        "key": message.key,
        "body": String::from_utf8_lossy(&message.body),
        "born_ms": message.store_ms,
        "due_ms": message.due_ms,
        "delivered_ms": message.delivered_ms,
    })
}
