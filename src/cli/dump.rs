//! `delaystore dump`: records as JSON lines, selected by topic, queue, log-offset range, time
//! range, id and delay state; bodies as text (UTF-8) or base64. Read-only: it works on a
//! crashed store as it is, and on a live one as far as its files are written.

use std::path::Path;

use base64::Engine;
use clap::{Args, ValueEnum};
use delaystore::inspect::delay_state::{first_timed_queue, DelayState};
use delaystore::inspect::dump::{dump, kind_name, DumpedRecord, RecordFilter, TimeField};
use delaystore::inspect::verify::timed_queue_name;
use delaystore::io::OverlayFs;
use delaystore::{Error, MessageId};

use super::progress::Progress;
use super::{emit, report_error, EXIT_FAILED};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum BodyFormat {
    /// UTF-8 text (a body that is not UTF-8 is printed as base64 and says so).
    Text,
    /// Base64 (standard alphabet, padded).
    Base64,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum TimeArg {
    /// Store time.
    Store,
    /// Due time of a delayed message.
    Due,
    /// Delivery time of a delayed message.
    Delivered,
}

#[derive(Debug, Args)]
pub struct DumpArgs {
    /// Only this topic.
    #[arg(long)]
    topic: Option<String>,
    /// Only this queue id.
    #[arg(long)]
    queue: Option<u32>,
    /// From this log offset (inclusive).
    #[arg(long)]
    from_offset: Option<u64>,
    /// To this log offset (exclusive).
    #[arg(long)]
    to_offset: Option<u64>,
    /// From this time in ms since the epoch (inclusive), on --time.
    #[arg(long)]
    since_ms: Option<u64>,
    /// Until this time in ms (exclusive), on --time.
    #[arg(long)]
    until_ms: Option<u64>,
    /// Which time --since-ms/--until-ms apply to.
    #[arg(long, value_enum, default_value = "store")]
    time: TimeArg,
    /// Only these message ids (16 hex digits, as put and consume print them); repeatable.
    #[arg(long = "id")]
    ids: Vec<String>,
    /// Only these delay states: immediate, pending, delivered, cancelled, discarded;
    /// repeatable.
    #[arg(long = "state")]
    states: Vec<String>,
    /// Also print delivery records (kind "delivery", naming their message).
    #[arg(long)]
    deliveries: bool,
    /// Also print hop, cancel and discard records (naming their message; topic and queue
    /// filters select them by their message).
    #[arg(long)]
    control: bool,
    /// How bodies are printed.
    #[arg(long, value_enum, default_value = "text")]
    body: BodyFormat,
}

pub fn run(dir: &Path, args: &DumpArgs) -> Result<i32, Error> {
    let mut ids = Vec::new();
    for id in &args.ids {
        match id.parse::<MessageId>() {
            Ok(id) => ids.push(id.0),
            Err(_) => {
                report_error(&format!("--id {id:?} is not a message id (hex)"), None);
                return Ok(EXIT_FAILED);
            }
        }
    }
    let mut states = Vec::new();
    for name in &args.states {
        match DelayState::parse(name) {
            Some(state) => states.push(state),
            None => {
                report_error(
                    &format!(
                        "--state {name:?}: expected immediate, pending, delivered, cancelled \
                         or discarded"
                    ),
                    None,
                );
                return Ok(EXIT_FAILED);
            }
        }
    }
    let filter = RecordFilter {
        topic: args.topic.clone(),
        queue: args.queue,
        from_offset: args.from_offset,
        to_offset: args.to_offset,
        since_ms: args.since_ms,
        until_ms: args.until_ms,
        time_field: match args.time {
            TimeArg::Store => TimeField::Store,
            TimeArg::Due => TimeField::Due,
            TimeArg::Delivered => TimeField::Delivered,
        },
        ids,
        states,
        include_deliveries: args.deliveries,
        include_control: args.control,
    };
    let fs = OverlayFs::new();
    if !dir.join(delaystore::meta::META_FILE).exists() {
        return Err(Error::StoreNotFound {
            dir: dir.to_path_buf(),
        });
    }
    let progress = Progress::bytes("dump");
    let totals = dump(
        &fs,
        dir,
        &filter,
        &mut |record| emit(&record_json(record, args.body)),
        &mut |done, total| progress.set(done, total),
    )?;
    progress.finish();
    if totals.damaged > 0 {
        eprintln!(
            "{}",
            serde_json::json!({
                "warning": format!(
                    "{} damaged places in the log were skipped; run delaystore verify",
                    totals.damaged
                )
            })
        );
    }
    Ok(0)
}

/// A body as JSON: (value, encoding).
pub fn body_json(body: &[u8], format: BodyFormat) -> (String, &'static str) {
    let base64 = || base64::engine::general_purpose::STANDARD.encode(body);
    match format {
        BodyFormat::Base64 => (base64(), "base64"),
        BodyFormat::Text => match std::str::from_utf8(body) {
            Ok(text) => (text.to_owned(), "text"),
            Err(_) => (base64(), "base64"),
        },
    }
}

fn record_json(dumped: &DumpedRecord<'_>, format: BodyFormat) -> serde_json::Value {
    let record = dumped.record;
    let header = &record.header;
    let properties: serde_json::Map<String, serde_json::Value> = dumped
        .properties
        .iter()
        .map(|(k, v)| (k.clone(), v.clone().into()))
        .collect();
    let has_topic = header.kind.has_topic();
    let mut value = serde_json::json!({
        "id": MessageId(dumped.at.log_offset).to_string(),
        "kind": kind_name(header.kind),
        "topic": has_topic.then_some(record.topic),
        "queue": has_topic.then_some(header.queue_id),
        "queue_offset": header.queue_offset,
        "delay_level": header.delay_level,
        "store_ms": header.store_ms,
        "due_ms": (header.due_ms > 0).then_some(header.due_ms),
        "state": dumped.state.as_str(),
        "file": dumped.file.display().to_string(),
        "offset": dumped.at.file_offset,
        "log_offset": dumped.at.log_offset,
    });
    let Some(object) = value.as_object_mut() else {
        return value;
    };
    match dumped.origin {
        Some(origin) => {
            object.insert(
                "origin_id".into(),
                MessageId(origin.log_offset).to_string().into(),
            );
            object.insert("origin_first".into(), timed_queue_name(origin.first).into());
            object.insert("origin_first_offset".into(), origin.first_offset.into());
            if header.kind != delaystore::commit_log::record::RecordKind::Cancel {
                // A cancel consumes no entry; the others consume this one.
                object.insert("consumes".into(), timed_queue_name(origin.source).into());
                object.insert("consumes_offset".into(), origin.source_offset.into());
            }
            if header.kind == delaystore::commit_log::record::RecordKind::Hop {
                let slot = u8::try_from(header.queue_id).unwrap_or(u8::MAX);
                let queue = delaystore::consume_queue::TimedQueue::TimerSlot(slot);
                object.insert("delay_queue".into(), timed_queue_name(queue).into());
            }
        }
        None => {
            let (body, encoding) = body_json(record.body, format);
            if let Some(first) = first_timed_queue(header) {
                object.insert("delay_queue".into(), timed_queue_name(first).into());
            }
            object.insert(
                "key".into(),
                (!record.key.is_empty()).then_some(record.key).into(),
            );
            object.insert("properties".into(), properties.into());
            if !dumped.properties_ok {
                object.insert("properties_error".into(), true.into());
            }
            object.insert("body".into(), body.into());
            object.insert("body_encoding".into(), encoding.into());
            if let Some(delivery) = dumped.delivery {
                object.insert("delivered_ms".into(), delivery.delivered_ms.into());
                object.insert(
                    "delivery_id".into(),
                    MessageId(delivery.log_offset).to_string().into(),
                );
                object.insert("delivery_queue_offset".into(), delivery.queue_offset.into());
            }
            if let Some(cancellation) = dumped.cancellation {
                object.insert("cancelled_ms".into(), cancellation.cancelled_ms.into());
                object.insert(
                    "cancel_id".into(),
                    MessageId(cancellation.log_offset).to_string().into(),
                );
            }
        }
    }
    value
}
