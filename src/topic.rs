//! Topic and consumer-group names, and how a message finds its queue.
//!
//! Names become directory names under `consumequeue/`, so they are restricted to
//! `[A-Za-z0-9._-]`, 1..=127 bytes, not `.` or `..`, and must not start with `__` (reserved for
//! the store's internal queues, such as the delay levels).

use crate::commit_log::record::TOPIC_BYTES_MAX;
use crate::error::{Error, Result};

/// Prefix reserved for internal topics.
pub const RESERVED_PREFIX: &str = "__";

/// Checks a user-supplied topic (or group) name.
pub fn validate_topic(name: &str) -> Result<()> {
    let invalid = |reason| {
        Err(Error::InvalidTopic {
            name: name.chars().take(200).collect(),
            reason,
        })
    };
    if name.is_empty() {
        return invalid("empty");
    }
    if name.len() > TOPIC_BYTES_MAX {
        return invalid("longer than 127 bytes");
    }
    if name == "." || name == ".." {
        return invalid("`.` and `..` are not names");
    }
    if name.starts_with(RESERVED_PREFIX) {
        return invalid("names starting with `__` are reserved");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return invalid("only A-Z a-z 0-9 . _ - are allowed");
    }
    Ok(())
}

/// The queue a keyed message goes to: FNV-1a of the key, modulo the queue count. Stable across
/// versions and platforms, so one key always lands in one queue (per-key order).
pub fn queue_for_key(key: &str, queue_count: u32) -> u32 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in key.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    u32::try_from(hash % u64::from(queue_count.max(1))).unwrap_or(0)
}
