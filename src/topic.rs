//! Topic and consumer-group names, and how a message finds its queue.
//!
//! Names become directory names under `consumequeue/`, so they are restricted to
//! `[A-Za-z0-9._-]`, 1..=127 bytes, not `.` or `..`, and must not start with `__` (reserved for
//! the store's internal queues, such as the delay levels).

use crate::commit_log::record::TOPIC_BYTES_MAX;
use crate::error::{Error, Result};

/// Prefix reserved for internal topics.
pub const RESERVED_PREFIX: &str = "__";

/// Why `name` is not a valid topic (or group) name, or `None` if it is. Pure: also used by the
/// record codec, since a name read from disk becomes a directory name too.
pub fn topic_name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("empty")
    } else if name.len() > TOPIC_BYTES_MAX {
        Some("longer than 127 bytes")
    } else if name == "." || name == ".." {
        Some("`.` and `..` are not names")
    } else if name.starts_with(RESERVED_PREFIX) {
        Some("names starting with `__` are reserved")
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        Some("only A-Z a-z 0-9 . _ - are allowed")
    } else {
        None
    }
}

/// Checks a user-supplied topic (or group) name.
pub fn validate_topic(name: &str) -> Result<()> {
    match topic_name_problem(name) {
        Some(reason) => Err(Error::InvalidTopic {
            name: name.chars().take(200).collect(),
            reason,
        }),
        None => Ok(()),
    }
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
