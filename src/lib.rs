//! # delaystore
//!
//! An embedded, persistent, crash-safe delayed-message store: RocketMQ's commit-log and
//! consume-queue design, with its durability gaps closed.
//!
//! ## Data flow
//!
//! `put` -> [`commit_log`] (append-only mmap segments, every record CRC-checked and stamped with
//! its own offset) -> [`dispatch`] (a thread tailing the log) -> [`consume_queue`] (20-byte
//! entries per queue) -> `pull` -> consumer, who `commit_offset`s its progress. A delayed
//! message waits in a delay level's queue or in the [`timer`] wheel's slot queues; the
//! [`delivery`] thread re-posts it to its target queue when due (or discards it if
//! [`Store::cancel`] cancelled it, see [`decisions`]). [`recovery`] rebuilds everything
//! derived from the commit log when the store opens; retention deletes old segments nothing
//! needs any more (`Options::retention_ms`).
//!
//! ## Durability contract
//!
//! *Acknowledged* means a call returned `Ok` under a durability that promises survival of the
//! failure in question:
//!
//! | acknowledged under | survives a process crash | survives power loss |
//! |---|---|---|
//! | [`SyncMode::Async`] / [`Durability::Buffered`] | yes | only what the flusher synced: the writes of the last `flush_interval_ms` (default 200 ms) plus the time one flush takes may be lost |
//! | [`SyncMode::Sync`] / [`Durability::Sync`] | yes | yes |
//!
//! Whatever is lost is lost as a suffix: the recovered log is always a prefix of what was
//! appended, and no record ever half-appears (every record carries a CRC over all its bytes and
//! its own offset). After any failed `msync`/`fsync` the store is *poisoned*: every later write
//! returns [`Error::Poisoned`] and nothing more is acknowledged until it is reopened, because
//! the kernel may have dropped the dirty pages while reporting the retry as a success.
//!
//! **Visibility.** In [`SyncMode::Sync`] a consumer never sees a record that is not durable.
//! In [`SyncMode::Async`] it may see a record that a power loss later removes.
//!
//! **Delayed messages.** An acknowledged delayed message is delivered exactly once to its
//! target queue, never before its due time (by the store clock), and no later than the delivery
//! thread can get to it; in [`SyncMode::Async`] a power loss can make a delivery a consumer saw
//! happen again (same id). A [`CancelOutcome::Cancelled`] acknowledged under a syncing
//! durability holds through any failure: the message is never delivered. `AlreadyDelivered`
//! means consumers get (or got) the message. Retention never deletes a pending delayed message
//! or data unread by a registered consumer group, except past `Options::disk_usage_hard_bytes`,
//! and then every such message is counted in [`Stats::forced_deleted_messages`].
//!
//! ## Fault model
//!
//! Process crash: the page cache survives. Power loss, per file and independently: synced
//! ranges are intact; unsynced pages may keep old bytes, new bytes, zeros or garbage; unsynced
//! creates, renames and removes may revert unless the directory was synced. Corruption (bit
//! rot) is detected by CRCs and reported as [`Error::Corruption`] or a counted truncation;
//! it is never delivered. See `docs/recovery.md` for every case recovery handles.
//!
//! ## Example
//!
//! ```
//! use delaystore::{Message, Options, Store};
//! # fn main() -> Result<(), delaystore::Error> {
//! let dir = tempfile::tempdir().map_err(|e| delaystore::Error::Io { path: "tmp".into(), source: e })?;
//! let options = Options { segment_bytes: 1 << 20, ..Options::default() };
//! let store = Store::open(dir.path(), options)?;
//! let receipt = store.put(&Message::new("orders", "close order 17").with_key("o-17"))?;
//! store.flush()?;
//! let messages = store.pull("orders", receipt.queue, 0, 10)?;
//! assert_eq!(messages[0].body, b"close order 17");
//! store.commit_offset("closer", "orders", receipt.queue, messages[0].queue_offset + 1)?;
//! store.close()?;
//! # Ok(())
//! # }
//! ```
#![deny(unsafe_code)]
#![deny(clippy::unwrap_used, clippy::expect_used)]
#![warn(missing_docs)]

/// Evaluates a failpoint (`src/failpoint.rs`): with the cargo feature `failpoints`, returns
/// early from the enclosing function with an error if the point is armed with `error` (the error
/// converts into [`Error`] or [`std::io::Error`] by `?`), or aborts the process if armed with
/// `abort`. Without the feature it expands to nothing.
macro_rules! failpoint {
    ($name:literal) => {
        #[cfg(feature = "failpoints")]
        $crate::failpoint::hit($name)?;
    };
}

mod bytes;
pub mod checkpoint;
pub mod clock;
pub mod commit_log;
pub mod consume_queue;
pub mod consumer_offsets;
pub mod decisions;
pub mod delay_levels;
pub mod delivery;
pub mod dispatch;
pub mod error;
#[cfg(feature = "failpoints")]
pub mod failpoint;
pub mod framed;
pub mod inspect;
pub mod io;
pub mod message;
pub mod meta;
pub mod naming;
pub mod options;
pub mod recovery;
pub mod seeded;
pub mod signal;
pub mod store;
pub mod timer;
pub mod topic;

pub use clock::{Clock, ManualClock, SystemClock};
pub use error::{DecodeError, Error, Result};
pub use message::{CancelOutcome, Message, MessageId, PutReceipt, StoredMessage};
pub use options::{Durability, Options, SegmentFill, SyncMode};
pub use recovery::RecoveryReport;
pub use store::{ConsumerLag, DueOutlook, Stats, Store};
