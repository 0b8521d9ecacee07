//! Where a delayed message stands: pending, delivered, cancelled or discarded. Derived from the
//! log alone, as the store derives it: a message is delivered when a delivery record names it,
//! cancelled when a cancel record does, and discarded when a discard record consumed its entry
//! without either (the store found its record unreadable when it fell due, or retention forced
//! it out under disk pressure). Hops (a timer message moving down the wheel) change nothing:
//! the message is still pending.

use std::collections::{HashMap, HashSet};

use crate::commit_log::record::{OriginRef, RecordHeader, RecordKind, RecordView};
use crate::consume_queue::TimedQueue;
use crate::dispatch::dispatch_target;
use crate::error::Result;
use crate::io::FileSystem;

use super::files::SegmentFile;
use super::log_scan::{scan_log, RecordAt, ScanVisitor};

/// The delay state of a message record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DelayState {
    /// Not delayed: visible in its topic queue when put (also a due time already past when
    /// stored).
    Immediate,
    /// Delayed, not delivered (yet).
    Pending,
    /// Delayed and delivered to its topic queue.
    Delivered,
    /// Delayed and cancelled: it will never be delivered.
    Cancelled,
    /// Delayed, and its entry was consumed by a discard record without a delivery or a
    /// cancel: it will never be delivered (its record was unreadable when it fell due, or was
    /// forced out by retention).
    Discarded,
}

impl DelayState {
    /// Every state, in the order of the docs.
    pub const ALL: [DelayState; 5] = [
        DelayState::Immediate,
        DelayState::Pending,
        DelayState::Delivered,
        DelayState::Cancelled,
        DelayState::Discarded,
    ];

    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            DelayState::Immediate => "immediate",
            DelayState::Pending => "pending",
            DelayState::Delivered => "delivered",
            DelayState::Cancelled => "cancelled",
            DelayState::Discarded => "discarded",
        }
    }

    /// Parses a lower-case name.
    pub fn parse(name: &str) -> Option<Self> {
        DelayState::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

/// The timed queue a message record was first indexed in (its delay level, or the timer slot
/// its due time and store time select), or `None` for a record that is not a delayed message.
/// The same derivation as dispatch's.
pub fn first_timed_queue(header: &RecordHeader) -> Option<TimedQueue> {
    match header.kind {
        RecordKind::Message => dispatch_target(header, "").and_then(|target| target.timed()),
        RecordKind::Delivery
        | RecordKind::Filler
        | RecordKind::Hop
        | RecordKind::Cancel
        | RecordKind::Discard => None,
    }
}

/// Where a delayed message was delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    /// Log offset of the delivery record.
    pub log_offset: u64,
    /// When it was delivered (the delivery's store time).
    pub delivered_ms: u64,
    /// Its offset in the target topic queue.
    pub queue_offset: u64,
}

/// Where a delayed message was cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cancellation {
    /// Log offset of the cancel record.
    pub log_offset: u64,
    /// When it was cancelled (the cancel's store time).
    pub cancelled_ms: u64,
}

/// The deliveries, cancellations and discards found in the log, by the id of the message they
/// concern. Costs memory per decided message (about 40 bytes): an operator's tool, not the
/// store.
#[derive(Debug, Default)]
pub struct DelayIndex {
    deliveries: HashMap<u64, Delivery>,
    cancellations: HashMap<u64, Cancellation>,
    discarded: HashSet<u64>,
}

impl DelayIndex {
    /// Scans the log for deliveries (of `topic` only, when given: a delivery carries its
    /// message's topic), cancellations and discards (they carry no topic: all of them).
    pub fn build(
        fs: &dyn FileSystem,
        segments: &[SegmentFile],
        topic: Option<&str>,
        progress: &mut dyn FnMut(u64),
    ) -> Result<Self> {
        let mut builder = Builder {
            index: DelayIndex::default(),
            topic,
            progress,
        };
        scan_log(fs, segments, 0, &mut builder)?;
        Ok(builder.index)
    }

    /// Learns from one record.
    pub fn note(&mut self, at: &RecordAt, record: &RecordView<'_>) {
        let header = &record.header;
        let origin = || OriginRef::decode(record.body).ok();
        match header.kind {
            RecordKind::Delivery => {
                if let Some(origin) = origin() {
                    self.deliveries
                        .entry(origin.log_offset)
                        .or_insert(Delivery {
                            log_offset: at.log_offset,
                            delivered_ms: header.store_ms,
                            queue_offset: header.queue_offset,
                        });
                }
            }
            RecordKind::Cancel => {
                if let Some(origin) = origin() {
                    self.cancellations
                        .entry(origin.log_offset)
                        .or_insert(Cancellation {
                            log_offset: at.log_offset,
                            cancelled_ms: header.store_ms,
                        });
                }
            }
            RecordKind::Discard => {
                if let Some(origin) = origin() {
                    self.discarded.insert(origin.log_offset);
                }
            }
            RecordKind::Message | RecordKind::Filler | RecordKind::Hop => {}
        }
    }

    /// The state of the message record `header`, stored at `log_offset`.
    pub fn state(&self, log_offset: u64, header: &RecordHeader) -> DelayState {
        if first_timed_queue(header).is_none() {
            DelayState::Immediate
        } else {
            self.delayed_state(log_offset)
        }
    }

    /// The state of the delayed message with id `log_offset`. A delivery wins over a cancel
    /// (consumers saw the message; `verify` reports such a conflict).
    pub fn delayed_state(&self, log_offset: u64) -> DelayState {
        if self.deliveries.contains_key(&log_offset) {
            DelayState::Delivered
        } else if self.cancellations.contains_key(&log_offset) {
            DelayState::Cancelled
        } else if self.discarded.contains(&log_offset) {
            DelayState::Discarded
        } else {
            DelayState::Pending
        }
    }

    /// The delivery of the message with id `log_offset`.
    pub fn delivery(&self, log_offset: u64) -> Option<&Delivery> {
        self.deliveries.get(&log_offset)
    }

    /// The cancellation of the message with id `log_offset`.
    pub fn cancellation(&self, log_offset: u64) -> Option<&Cancellation> {
        self.cancellations.get(&log_offset)
    }
}

struct Builder<'a> {
    index: DelayIndex,
    topic: Option<&'a str>,
    progress: &'a mut dyn FnMut(u64),
}

impl ScanVisitor for Builder<'_> {
    fn record(&mut self, at: &RecordAt, record: &RecordView<'_>) {
        let wanted =
            !record.header.kind.has_topic() || self.topic.is_none_or(|t| t == record.topic);
        if wanted {
            self.index.note(at, record);
        }
    }

    fn progress(&mut self, scanned_bytes: u64) {
        (self.progress)(scanned_bytes);
    }
}
