//! Where a delayed message stands: pending, delivered, or cancelled. Derived from the log
//! alone, as the store derives delivery progress: a message is delivered when a delivery
//! record names it.
//!
//! `Cancelled` is part of the vocabulary (filters accept it) before any record kind produces
//! it: when cancel records exist, [`DelayIndex`] learns them in `note` and the filter works
//! unchanged.

use std::collections::{HashMap, HashSet};

use crate::commit_log::record::{OriginRef, RecordHeader, RecordKind, RecordView};
use crate::error::Result;
use crate::io::FileSystem;

use super::files::SegmentFile;
use super::log_scan::{scan_log, RecordAt, ScanVisitor};

/// The delay state of a message record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DelayState {
    /// Not delayed: visible in its topic queue when put.
    Immediate,
    /// Delayed, not delivered (yet).
    Pending,
    /// Delayed and delivered to its topic queue.
    Delivered,
    /// Delayed and cancelled: it will never be delivered.
    Cancelled,
}

impl DelayState {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            DelayState::Immediate => "immediate",
            DelayState::Pending => "pending",
            DelayState::Delivered => "delivered",
            DelayState::Cancelled => "cancelled",
        }
    }

    /// Parses a lower-case name.
    pub fn parse(name: &str) -> Option<Self> {
        [
            DelayState::Immediate,
            DelayState::Pending,
            DelayState::Delivered,
            DelayState::Cancelled,
        ]
        .into_iter()
        .find(|s| s.as_str() == name)
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

/// The deliveries (and cancellations) found in the log, by the id of the message they concern.
/// Costs memory per delivered message (about 40 bytes): an operator's tool, not the store.
#[derive(Debug, Default)]
pub struct DelayIndex {
    deliveries: HashMap<u64, Delivery>,
    cancelled: HashSet<u64>,
}

impl DelayIndex {
    /// Scans the log for deliveries (of `topic` only, when given: a delivery carries its
    /// message's topic).
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
        match record.header.kind {
            RecordKind::Delivery => {
                if let Ok(origin) = OriginRef::decode(record.body) {
                    self.deliveries
                        .entry(origin.log_offset)
                        .or_insert(Delivery {
                            log_offset: at.log_offset,
                            delivered_ms: record.header.store_ms,
                            queue_offset: record.header.queue_offset,
                        });
                }
            }
            RecordKind::Message | RecordKind::Filler => {}
        }
    }

    /// The state of the message record `header`, stored at `log_offset`.
    pub fn state(&self, log_offset: u64, header: &RecordHeader) -> DelayState {
        if header.delay_level == 0 {
            DelayState::Immediate
        } else if self.cancelled.contains(&log_offset) {
            DelayState::Cancelled
        } else if self.deliveries.contains_key(&log_offset) {
            DelayState::Delivered
        } else {
            DelayState::Pending
        }
    }

    /// The delivery of the message with id `log_offset`.
    pub fn delivery(&self, log_offset: u64) -> Option<&Delivery> {
        self.deliveries.get(&log_offset)
    }
}

struct Builder<'a> {
    index: DelayIndex,
    topic: Option<&'a str>,
    progress: &'a mut dyn FnMut(u64),
}

impl ScanVisitor for Builder<'_> {
    fn record(&mut self, at: &RecordAt, record: &RecordView<'_>) {
        if self.topic.is_none_or(|t| t == record.topic) {
            self.index.note(at, record);
        }
    }

    fn progress(&mut self, scanned_bytes: u64) {
        (self.progress)(scanned_bytes);
    }
}
