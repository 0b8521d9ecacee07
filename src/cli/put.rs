//! `delaystore put`: JSON lines from stdin, one acknowledgement line each; or `--count N`
//! generated messages with one summary line.

use std::io::BufRead;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use clap::Args;
use delaystore::{Durability, Error, Message, Store};
use serde::Deserialize;

use super::{emit, open_store, report_error, EXIT_PROBLEM};

#[derive(Debug, Args)]
pub struct PutArgs {
    /// Acknowledge each message only once it is durable (survives power loss).
    #[arg(long)]
    sync: bool,
    /// Generate this many messages instead of reading stdin.
    #[arg(long)]
    count: Option<u64>,
    /// Body size of generated messages.
    #[arg(long, default_value_t = 128)]
    body_bytes: usize,
    /// Topic of generated messages.
    #[arg(long, default_value = "load")]
    topic: String,
    /// Delay level of generated messages (0 = none).
    #[arg(long, default_value_t = 0)]
    delay_level: u8,
    /// Arbitrary delay of generated messages, in ms (instead of a level).
    #[arg(long, conflicts_with = "delay_level")]
    delay_ms: Option<u64>,
    /// Producer threads for generated messages.
    #[arg(long, default_value_t = 1)]
    producers: u32,
}

/// One input line.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PutLine {
    topic: String,
    body: String,
    key: Option<String>,
    queue: Option<u32>,
    delay_level: Option<u8>,
    /// An arbitrary delay in ms.
    delay_ms: Option<u64>,
    /// An absolute due time, ms since the epoch.
    deliver_at_ms: Option<u64>,
    #[serde(default)]
    properties: std::collections::BTreeMap<String, String>,
}

impl PutLine {
    fn into_message(self) -> Message {
        Message {
            topic: self.topic,
            queue: self.queue,
            key: self.key,
            properties: self.properties.into_iter().collect(),
            body: self.body.into_bytes(),
            delay_level: self.delay_level.unwrap_or(0),
            delay_ms: self.delay_ms,
            deliver_at_ms: self.deliver_at_ms,
        }
    }
}

pub fn run(dir: &Path, args: &PutArgs) -> Result<i32, Error> {
    let store = open_store(dir, true)?;
    let durability = super::durability(args.sync);
    let code = match args.count {
        Some(count) => generate(store, args, count, durability)?,
        None => from_stdin(&store, durability).and_then(|code| {
            store.close()?;
            Ok(code)
        })?,
    };
    Ok(code)
}

fn from_stdin(store: &Store, durability: Durability) -> Result<i32, Error> {
    let stdin = std::io::stdin();
    for (index, line) in stdin.lock().lines().enumerate() {
        let number = index as u64 + 1;
        let line = match line {
            Ok(line) => line,
            Err(err) => {
                report_error(&format!("cannot read stdin: {err}"), Some(number));
                return Ok(EXIT_PROBLEM);
            }
        };
        if line.trim().is_empty() {
            continue;
        }
        let parsed: PutLine = match serde_json::from_str(&line) {
            Ok(parsed) => parsed,
            Err(err) => {
                report_error(&format!("bad input line: {err}"), Some(number));
                return Ok(EXIT_PROBLEM);
            }
        };
        match store.put_with(&parsed.into_message(), durability) {
            Ok(receipt) => emit(&serde_json::json!({
                "id": receipt.id.to_string(),
                "topic": receipt.topic,
                "queue": receipt.queue,
                "due_ms": receipt.due_ms,
            })),
            Err(err @ (Error::Poisoned | Error::Io { .. } | Error::Closed)) => return Err(err),
            Err(err) => {
                report_error(&err.to_string(), Some(number));
                return Ok(EXIT_PROBLEM);
            }
        }
    }
    Ok(0)
}

fn generate(
    store: Store,
    args: &PutArgs,
    count: u64,
    durability: Durability,
) -> Result<i32, Error> {
    let store = Arc::new(store);
    let producers = u64::from(args.producers.max(1));
    let body = vec![b'x'; args.body_bytes];
    let started = Instant::now();
    let handles: Vec<_> = (0..producers)
        .map(|p| {
            let store = store.clone();
            let mut message =
                Message::new(args.topic.clone(), body.clone()).with_delay_level(args.delay_level);
            message.delay_ms = args.delay_ms;
            let share = count / producers + u64::from(p < count % producers);
            std::thread::spawn(move || -> Result<(), Error> {
                for _ in 0..share {
                    store.put_with(&message, durability)?;
                }
                Ok(())
            })
        })
        .collect();
    for handle in handles {
        match handle.join() {
            Ok(result) => result?,
            Err(_) => report_error("a producer thread panicked", None),
        }
    }
    let elapsed = started.elapsed();
    let store = Arc::into_inner(store);
    if let Some(store) = store {
        store.close()?;
    }
    let secs = elapsed.as_secs_f64().max(1e-9);
    emit(&serde_json::json!({
        "count": count,
        "body_bytes": args.body_bytes,
        "producers": producers,
        "sync": args.sync,
        "elapsed_ms": elapsed.as_millis() as u64,
        "msgs_per_s": (count as f64 / secs).round(),
    }));
    Ok(0)
}
