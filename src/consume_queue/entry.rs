//! The consume-queue entry codec: 20 fixed bytes per message, as in RocketMQ.
//!
//! | bytes | field |
//! |---|---|
//! | 0..8 | commit-log offset of the record (u64 LE) |
//! | 8..12 | record length in bytes (u32 LE, never 0) |
//! | 12..20 | time tag (u64 LE): due time in a delay-level queue; in a topic queue the time the message became visible (store time, or delivery time for a delivered message) |
//!
//! An all-zero entry was never written. Entries carry no checksum: they are derived data,
//! checked against the record they point to (which stores its own queue offset).
#![deny(clippy::indexing_slicing, clippy::unwrap_used, clippy::expect_used)]

use crate::bytes::{get_u32, get_u64, put_u32, put_u64};
use crate::error::DecodeError;

/// Bytes per entry.
pub const ENTRY_BYTES: usize = 20;

/// One consume-queue entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// Commit-log offset of the record.
    pub log_offset: u64,
    /// Record length in bytes.
    pub record_bytes: u32,
    /// Due time (delay-level queues) or time of becoming visible (topic queues), in ms.
    pub time_ms: u64,
}

impl Entry {
    /// Encodes the entry.
    pub fn encode(&self) -> [u8; ENTRY_BYTES] {
        let mut out = [0u8; ENTRY_BYTES];
        put_u64(&mut out, 0, self.log_offset);
        put_u32(&mut out, 8, self.record_bytes);
        put_u64(&mut out, 12, self.time_ms);
        out
    }

    /// Decodes an entry; an unwritten (all-zero length) entry is `BadLength { 0 }`.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        if bytes.len() < ENTRY_BYTES {
            return Err(DecodeError::Truncated {
                needed: ENTRY_BYTES as u64,
                available: bytes.len() as u64,
            });
        }
        let entry = Entry {
            log_offset: get_u64(bytes, 0),
            record_bytes: get_u32(bytes, 8),
            time_ms: get_u64(bytes, 12),
        };
        if entry.record_bytes == 0 {
            return Err(DecodeError::BadLength { length: 0 });
        }
        Ok(entry)
    }
}
