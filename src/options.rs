//! Options for opening a store. Every field states its unit, default and bounds;
//! [`Options::validate`] checks them at open and names the offending field.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use crate::clock::{Clock, SystemClock};
use crate::commit_log::record::HEADER_BYTES;
use crate::error::{Error, Result};
use crate::io::{FileSystem, RealFs};

/// Smallest commit-log segment: 64 KiB.
pub const SEGMENT_BYTES_MIN: u64 = 64 * 1024;
/// Largest commit-log segment: 2 GiB (record lengths are 32-bit).
pub const SEGMENT_BYTES_MAX: u64 = 2 * 1024 * 1024 * 1024;
/// Largest queue count of a topic.
pub const QUEUE_COUNT_MAX: u32 = 1024;

/// What the store does before acknowledging a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncMode {
    /// Acknowledge once the record is in the page cache (survives a process crash). A
    /// background flusher syncs every `flush_interval_ms`, bounding the power-loss window in
    /// time. Consumers may see records that are not yet durable.
    Async,
    /// Acknowledge only after `msync(MS_SYNC)` covered the record (survives power loss).
    /// Concurrent puts share one sync (group commit). Consumers see only durable records.
    Sync,
}

/// How new commit-log segments (in the background) and consume-queue files (by the
/// dispatcher) are prepared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegmentFill {
    /// Write zeros over the whole segment (with 4 KiB writes) and sync it. Each later small
    /// sync then writes only its own pages: measured ~90 us per 4 KiB sync on the project's
    /// machines, vs ~140 us on a reserved file. Costs a second write of every segment's bytes,
    /// which halves the disk bandwidth left for data under sustained load.
    Zeroed,
    /// Reserve the blocks (`fallocate`) without writing them: no extra disk traffic; small
    /// syncs cost ~50 us more (they also record the blocks as written).
    Reserved,
}

/// Per-call durability, for [`crate::Store::put_with`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Follow the store's [`SyncMode`].
    Default,
    /// Return once the record is in the page cache.
    Buffered,
    /// Return once the record is durable (group-committed sync).
    Sync,
}

/// Options for [`crate::Store::open`].
#[derive(Clone)]
pub struct Options {
    /// Size of each commit-log segment file, in bytes. Default 1 GiB; bounds
    /// [`SEGMENT_BYTES_MIN`]..=[`SEGMENT_BYTES_MAX`]. May change between opens: each segment
    /// keeps the size it was created with.
    pub segment_bytes: u64,
    /// Largest encoded record (64-byte header + topic + key + properties + body), in bytes.
    /// Default `None`: 4 MiB, or a quarter of `segment_bytes` if smaller. Bounds:
    /// 256 ..= `segment_bytes / 2`.
    pub message_bytes_max: Option<u64>,
    /// Durability of acknowledged writes. Default [`SyncMode::Async`].
    pub sync_mode: SyncMode,
    /// How segments are prepared. Default `None`: [`SegmentFill::Zeroed`] in
    /// [`SyncMode::Sync`] (latency of each sync matters), [`SegmentFill::Reserved`] in
    /// [`SyncMode::Async`] (disk bandwidth matters).
    pub segment_fill: Option<SegmentFill>,
    /// In async mode, the longest time an acknowledged record stays unsynced, in ms. Default
    /// 200; bounds 1..=60_000.
    pub flush_interval_ms: u64,
    /// How often the checkpoint is rewritten while running, in ms. Default 1_000; bounds
    /// 10..=600_000. Bounds the recovery scan after a crash to about this much log.
    pub checkpoint_interval_ms: u64,
    /// Entries per consume-queue file (20 bytes each). Default 300_000 (6 MB files); bounds
    /// 64..=10_000_000. May change between opens.
    pub consume_queue_file_entries: u64,
    /// Queue count of topics not listed in `topic_queue_counts`. `None` keeps the count stored
    /// with the store (4 when creating). Bounds 1..=[`QUEUE_COUNT_MAX`]; may grow between
    /// opens, never shrink.
    pub default_queue_count: Option<u32>,
    /// Queue count per topic, overriding `default_queue_count`. Same bounds; merged into the
    /// counts stored with the store.
    pub topic_queue_counts: BTreeMap<String, u32>,
    /// The delay-level table, e.g. `"1s 5s 10s"` (units `ms s m h d`, see
    /// [`crate::delay_levels::parse_delay_levels`]). `None` keeps the table stored with the
    /// store (RocketMQ's 18 levels, [`crate::delay_levels::DEFAULT_DELAY_LEVELS`], when
    /// creating). A different table replaces the stored one; messages already stored keep the
    /// due time they were stored with.
    pub delay_levels: Option<String>,
    /// Longest arbitrary delay a put may ask for (`Message::delay_ms`, or `deliver_at_ms`
    /// minus the store clock), in ms. Default 400 days; bounds 1 ms..=10 years. May change
    /// between opens: it only limits new puts.
    pub delay_ms_max: u64,
    /// Commit-log segments whose newest record is older than this are deleted, unless they
    /// still hold a pending delayed message or data a registered consumer group (one that has
    /// committed an offset) has not consumed. `None` (default) keeps every segment; RocketMQ
    /// deletes after 72 hours. Bounds 1 s..=10 years. The segment being written is never
    /// deleted.
    pub retention_ms: Option<u64>,
    /// When the commit-log segments take more than this many bytes, the oldest segments are
    /// deleted whatever their age, still never one that holds pending or unconsumed data.
    /// `None` (default): no limit. At least 2 segments.
    pub disk_usage_soft_bytes: Option<u64>,
    /// When the segments take more than this many bytes, the oldest are deleted even if they
    /// hold pending or unconsumed messages: each message lost so is counted
    /// ([`crate::Stats::forced_deleted_messages`]) and reported on stderr, never silent. `None`
    /// (default): no limit (a full disk then fails puts with [`Error::DiskFull`]). At least 2
    /// segments, and at least `disk_usage_soft_bytes`.
    pub disk_usage_hard_bytes: Option<u64>,
    /// Create the store if the directory holds none. Default true; when false, opening a
    /// directory without a store fails with [`Error::StoreNotFound`].
    pub create_if_missing: bool,
    /// Source of time. Default [`SystemClock`]; tests inject a [`crate::ManualClock`].
    pub clock: Arc<dyn Clock>,
    /// File system. Default [`RealFs`]; tests may inject a simulated one.
    pub fs: Arc<dyn FileSystem>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            segment_bytes: 1024 * 1024 * 1024,
            message_bytes_max: None,
            sync_mode: SyncMode::Async,
            segment_fill: None,
            flush_interval_ms: 200,
            checkpoint_interval_ms: 1_000,
            consume_queue_file_entries: 300_000,
            default_queue_count: None,
            topic_queue_counts: BTreeMap::new(),
            delay_levels: None,
            delay_ms_max: DELAY_MS_MAX_DEFAULT,
            retention_ms: None,
            disk_usage_soft_bytes: None,
            disk_usage_hard_bytes: None,
            create_if_missing: true,
            clock: Arc::new(SystemClock),
            fs: Arc::new(RealFs),
        }
    }
}

impl fmt::Debug for Options {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Options")
            .field("segment_bytes", &self.segment_bytes)
            .field("message_bytes_max", &self.message_bytes_max)
            .field("sync_mode", &self.sync_mode)
            .field("segment_fill", &self.segment_fill)
            .field("flush_interval_ms", &self.flush_interval_ms)
            .field("checkpoint_interval_ms", &self.checkpoint_interval_ms)
            .field(
                "consume_queue_file_entries",
                &self.consume_queue_file_entries,
            )
            .field("default_queue_count", &self.default_queue_count)
            .field("topic_queue_counts", &self.topic_queue_counts)
            .field("delay_levels", &self.delay_levels)
            .field("delay_ms_max", &self.delay_ms_max)
            .field("retention_ms", &self.retention_ms)
            .field("disk_usage_soft_bytes", &self.disk_usage_soft_bytes)
            .field("disk_usage_hard_bytes", &self.disk_usage_hard_bytes)
            .field("create_if_missing", &self.create_if_missing)
            .field("clock", &self.clock)
            .field("fs", &self.fs)
            .finish()
    }
}

/// Default of [`Options::delay_ms_max`]: 400 days.
pub const DELAY_MS_MAX_DEFAULT: u64 = 400 * 24 * 3600 * 1000;
/// Upper bound of [`Options::delay_ms_max`]: 10 years (well inside the timer wheel's horizon,
/// [`crate::timer::TIMER_HORIZON_MS`]).
pub const DELAY_MS_MAX_LIMIT: u64 = 3650 * 24 * 3600 * 1000;

fn check(ok: bool, name: &'static str, reason: impl FnOnce() -> String) -> Result<()> {
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidOptions {
            name,
            reason: reason(),
        })
    }
}

fn check_range(name: &'static str, value: u64, min: u64, max: u64) -> Result<()> {
    check((min..=max).contains(&value), name, || {
        format!("{value} is outside {min}..={max}")
    })
}

impl Options {
    /// Options with every default (see each field).
    pub fn new() -> Self {
        Self::default()
    }

    /// The effective segment preparation.
    pub fn segment_fill(&self) -> SegmentFill {
        self.segment_fill.unwrap_or(match self.sync_mode {
            SyncMode::Sync => SegmentFill::Zeroed,
            SyncMode::Async => SegmentFill::Reserved,
        })
    }

    /// The effective `message_bytes_max`.
    pub fn message_bytes_max(&self) -> u64 {
        self.message_bytes_max
            .unwrap_or_else(|| (4 * 1024 * 1024).min(self.segment_bytes / 4))
    }

    /// Checks every bound; the error names the first field out of bounds.
    pub fn validate(&self) -> Result<()> {
        check_range(
            "segment_bytes",
            self.segment_bytes,
            SEGMENT_BYTES_MIN,
            SEGMENT_BYTES_MAX,
        )?;
        check_range(
            "message_bytes_max",
            self.message_bytes_max(),
            HEADER_BYTES as u64 * 4,
            self.segment_bytes / 2,
        )?;
        check_range("flush_interval_ms", self.flush_interval_ms, 1, 60_000)?;
        check_range(
            "checkpoint_interval_ms",
            self.checkpoint_interval_ms,
            10,
            600_000,
        )?;
        check_range(
            "consume_queue_file_entries",
            self.consume_queue_file_entries,
            64,
            10_000_000,
        )?;
        if let Some(count) = self.default_queue_count {
            check_range(
                "default_queue_count",
                u64::from(count),
                1,
                u64::from(QUEUE_COUNT_MAX),
            )?;
        }
        for (topic, count) in &self.topic_queue_counts {
            crate::topic::validate_topic(topic)?;
            check_range(
                "topic_queue_counts",
                u64::from(*count),
                1,
                u64::from(QUEUE_COUNT_MAX),
            )?;
        }
        if let Some(table) = &self.delay_levels {
            crate::delay_levels::parse_delay_levels(table)?;
        }
        check_range("delay_ms_max", self.delay_ms_max, 1, DELAY_MS_MAX_LIMIT)?;
        if let Some(retention_ms) = self.retention_ms {
            check_range("retention_ms", retention_ms, 1_000, DELAY_MS_MAX_LIMIT)?;
        }
        let two_segments = self.segment_bytes.saturating_mul(2);
        if let Some(soft) = self.disk_usage_soft_bytes {
            check_range("disk_usage_soft_bytes", soft, two_segments, u64::MAX)?;
        }
        if let Some(hard) = self.disk_usage_hard_bytes {
            let floor = self.disk_usage_soft_bytes.unwrap_or(0).max(two_segments);
            check_range("disk_usage_hard_bytes", hard, floor, u64::MAX)?;
        }
        Ok(())
    }
}
