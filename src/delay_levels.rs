//! The delay-level table: RocketMQ's fixed delays, given as a string such as
//! `"1s 5s 10s 30s 1m 2m"` (units `ms s m h d`). Level `n` (1-based) waits the `n`-th delay;
//! level 0 means no delay. The table is stored with the store (in `meta`).

use crate::error::{Error, Result};

/// RocketMQ's default table.
pub const DEFAULT_DELAY_LEVELS: &str = "1s 5s 10s 30s 1m 2m 3m 4m 5m 6m 7m 8m 9m 10m 20m 30m 1h 2h";
/// Most levels a table may have (the level is one byte; 0 means none).
pub const DELAY_LEVELS_MAX: usize = 255;
/// Longest delay a level may have: 400 days, in ms.
pub const LEVEL_DELAY_MS_MAX: u64 = 400 * 24 * 3_600_000;

/// Parses a table of delays into milliseconds. Every entry must be a positive integer with a
/// unit (`ms`, `s`, `m`, `h`, `d`), at most [`LEVEL_DELAY_MS_MAX`]; 1 to
/// [`DELAY_LEVELS_MAX`] entries separated by white space.
pub fn parse_delay_levels(table: &str) -> Result<Vec<u64>> {
    let invalid = |reason: String| Error::InvalidOptions {
        name: "delay_levels",
        reason,
    };
    let mut levels = Vec::new();
    for token in table.split_whitespace() {
        let digits_end = token
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(token.len());
        let (digits, unit) = token.split_at(digits_end);
        let value: u64 = digits
            .parse()
            .map_err(|_| invalid(format!("{token:?} does not start with a number")))?;
        let unit_ms: u64 = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => {
                return Err(invalid(format!(
                    "{token:?} has unit {unit:?}; use ms, s, m, h or d"
                )))
            }
        };
        let delay_ms = value
            .checked_mul(unit_ms)
            .filter(|ms| (1..=LEVEL_DELAY_MS_MAX).contains(ms))
            .ok_or_else(|| invalid(format!("{token:?} is not between 1 ms and 400 days")))?;
        levels.push(delay_ms);
    }
    if levels.is_empty() || levels.len() > DELAY_LEVELS_MAX {
        return Err(invalid(format!(
            "{} levels given; 1..={DELAY_LEVELS_MAX} allowed",
            levels.len()
        )));
    }
    Ok(levels)
}

/// Formats a table back into the string form (`1500ms`, `5s`, `2h`...).
pub fn format_delay_levels(levels_ms: &[u64]) -> String {
    let format_one = |ms: u64| {
        for (unit, unit_ms) in [
            ("d", 86_400_000),
            ("h", 3_600_000),
            ("m", 60_000),
            ("s", 1_000),
        ] {
            if ms.is_multiple_of(unit_ms) {
                return format!("{}{unit}", ms / unit_ms);
            }
        }
        format!("{ms}ms")
    };
    levels_ms
        .iter()
        .map(|&ms| format_one(ms))
        .collect::<Vec<_>>()
        .join(" ")
}
