//! `delaystore cancel ID...`: cancels delayed messages, one outcome line each.

use std::path::Path;

use clap::Args;
use delaystore::{Error, MessageId};

use super::{emit, open_store, report_error, EXIT_PROBLEM};

#[derive(Debug, Args)]
pub struct CancelArgs {
    /// Message ids (16 hex digits, as `put` prints them).
    #[arg(required = true)]
    ids: Vec<String>,
    /// Answer only once the cancellation is durable (survives power loss).
    #[arg(long)]
    sync: bool,
}

pub fn run(dir: &Path, args: &CancelArgs) -> Result<i32, Error> {
    let store = open_store(dir, false)?;
    let durability = super::durability(args.sync);
    let mut code = 0;
    for (line, text) in (1u64..).zip(&args.ids) {
        let Ok(id) = text.parse::<MessageId>() else {
            report_error(&format!("{text:?} is not a message id"), Some(line));
            code = EXIT_PROBLEM;
            continue;
        };
        let outcome = store.cancel_with(id, durability)?;
        emit(&serde_json::json!({ "id": id.to_string(), "outcome": outcome.as_str() }));
    }
    store.close()?;
    Ok(code)
}
