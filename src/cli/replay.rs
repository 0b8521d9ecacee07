//! `delaystore replay`: re-posts chosen messages of a topic (for example those delivered
//! between two times, for a consumer that lost them) into a target topic and queue, each with
//! an idempotency key so that a second run posts nothing; or `--export`s them as JSON lines
//! (in `delaystore put`'s input format), or lists them with `--dry-run`.

use std::path::Path;

use clap::Args;
use delaystore::inspect::replay::{
    apply_replay, plan_replay, ReplayItem, ReplaySelection, ReplayTarget,
};
use delaystore::{Error, MessageId};

use super::dump::{body_json, BodyFormat};
use super::{emit, open_store, report_error, EXIT_FAILED};

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// Source topic.
    #[arg(long)]
    topic: String,
    /// Source queue (default: every queue of the topic).
    #[arg(long)]
    queue: Option<u32>,
    /// Only these message ids (hex); repeatable.
    #[arg(long = "id")]
    ids: Vec<String>,
    /// Visible to the topic's consumers from this time, in ms (delivery time of a delayed
    /// message, store time of an immediate one).
    #[arg(long)]
    since_ms: Option<u64>,
    /// Visible until this time, in ms (exclusive).
    #[arg(long)]
    until_ms: Option<u64>,
    /// Only delayed messages that were delivered.
    #[arg(long)]
    delivered_only: bool,
    /// From this queue offset (inclusive).
    #[arg(long)]
    from_queue_offset: Option<u64>,
    /// To this queue offset (exclusive).
    #[arg(long)]
    to_queue_offset: Option<u64>,
    /// Target topic (default: the source topic).
    #[arg(long)]
    to_topic: Option<String>,
    /// Target queue (default: the source message's queue id).
    #[arg(long)]
    to_queue: Option<u32>,
    /// List what would be posted (and what is already there); post nothing.
    #[arg(long, conflicts_with = "export")]
    dry_run: bool,
    /// Print the selected messages as `delaystore put` input lines instead of posting them.
    #[arg(long)]
    export: bool,
    /// Acknowledge each re-post only once durable.
    #[arg(long)]
    sync: bool,
}

pub fn run(dir: &Path, args: &ReplayArgs) -> Result<i32, Error> {
    let mut ids = Vec::new();
    for id in &args.ids {
        match id.parse::<MessageId>() {
            Ok(id) => ids.push(id),
            Err(_) => {
                report_error(&format!("--id {id:?} is not a message id (hex)"), None);
                return Ok(EXIT_FAILED);
            }
        }
    }
    let selection = ReplaySelection {
        topic: args.topic.clone(),
        queue: args.queue,
        ids,
        since_ms: args.since_ms,
        until_ms: args.until_ms,
        delivered_only: args.delivered_only,
        from_queue_offset: args.from_queue_offset,
        to_queue_offset: args.to_queue_offset,
    };
    let target = ReplayTarget {
        topic: args.to_topic.clone(),
        queue: args.to_queue,
    };
    let store = open_store(dir, false)?;
    let items = match plan_replay(&store, &selection, &target) {
        Ok(items) => items,
        Err(err) => {
            drop(store.close());
            return Err(err);
        }
    };
    let already = items.iter().filter(|i| i.already_replayed).count() as u64;
    if args.export {
        for item in &items {
            emit(&export_json(item));
        }
        store.close()?;
        // The summary goes to stderr: stdout stays a stream `delaystore put` accepts.
        eprintln!(
            "{}",
            serde_json::json!({"selected": items.len(), "exported": items.len()})
        );
        return Ok(0);
    }
    if args.dry_run {
        for item in &items {
            emit(&item_json(item));
        }
        store.close()?;
        emit(&serde_json::json!({
            "dry_run": true,
            "selected": items.len(),
            "would_post": items.len() as u64 - already,
            "already_replayed": already,
        }));
        return Ok(0);
    }
    let durability = super::durability(args.sync);
    let receipts = apply_replay(&store, &items, durability);
    let close = store.close();
    let receipts = receipts?;
    close?;
    for (key, receipt) in &receipts {
        emit(&serde_json::json!({
            "replay_key": key,
            "id": receipt.id.to_string(),
            "topic": receipt.topic,
            "queue": receipt.queue,
            "queue_offset": receipt.queue_offset,
        }));
    }
    emit(&serde_json::json!({
        "dry_run": false,
        "selected": items.len(),
        "posted": receipts.len(),
        "already_replayed": already,
    }));
    Ok(0)
}

fn item_json(item: &ReplayItem) -> serde_json::Value {
    serde_json::json!({
        "source_id": item.source.id.to_string(),
        "source_queue": item.source.queue,
        "source_queue_offset": item.source.queue_offset,
        "to_topic": item.topic,
        "to_queue": item.queue,
        "replay_key": item.key,
        "already_replayed": item.already_replayed,
    })
}

/// `delaystore put` input format, with the idempotency key among the properties.
fn export_json(item: &ReplayItem) -> serde_json::Value {
    let message = item.message();
    let (body, encoding) = body_json(&message.body, BodyFormat::Text);
    let properties: serde_json::Map<String, serde_json::Value> = message
        .properties
        .iter()
        .map(|(k, v)| (k.clone(), v.clone().into()))
        .collect();
    let mut value = serde_json::json!({
        "topic": message.topic,
        "queue": message.queue,
        "key": message.key,
        "properties": properties,
        "body": body,
    });
    if encoding != "text" {
        if let Some(object) = value.as_object_mut() {
            object.remove("body");
            object.insert("body_base64".into(), body.into());
        }
    }
    value
}
