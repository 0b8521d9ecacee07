//! `dump`: the records of the log that match a filter, in log order, each with its delay
//! state. Two passes: the first learns which delayed messages were delivered (a delivery comes
//! after its message), the second selects and hands out records.

use std::path::{Path, PathBuf};

use crate::commit_log::record::{decode_properties, OriginRef, RecordKind, RecordView};
use crate::error::Result;
use crate::io::FileSystem;

use super::delay_state::{DelayIndex, DelayState, Delivery};
use super::files::StoreFiles;
use super::log_scan::{scan_log, RecordAt, ScanVisitor};

/// Which time a time range applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TimeField {
    /// When the store accepted the record.
    #[default]
    Store,
    /// When a delayed message falls due (immediate messages have none).
    Due,
    /// When a delayed message was delivered (others have none).
    Delivered,
}

/// Which records to select. Every criterion given must hold; an empty filter selects every
/// message record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecordFilter {
    /// Topic.
    pub topic: Option<String>,
    /// Queue id (the target queue of a delayed message).
    pub queue: Option<u32>,
    /// First log offset (inclusive).
    pub from_offset: Option<u64>,
    /// Last log offset (exclusive).
    pub to_offset: Option<u64>,
    /// Time range start (inclusive), in ms, on `time_field`.
    pub since_ms: Option<u64>,
    /// Time range end (exclusive), in ms.
    pub until_ms: Option<u64>,
    /// The time the range applies to.
    pub time_field: TimeField,
    /// Message ids (log offsets); empty: any.
    pub ids: Vec<u64>,
    /// Delay states; empty: any.
    pub states: Vec<DelayState>,
    /// Also select delivery records (state `delivered`, time = delivery time).
    pub include_deliveries: bool,
}

impl RecordFilter {
    fn matches(
        &self,
        at: &RecordAt,
        record: &RecordView<'_>,
        state: DelayState,
        delivery: Option<&Delivery>,
    ) -> bool {
        let header = &record.header;
        let time = match (header.kind, self.time_field) {
            (RecordKind::Delivery, _) | (_, TimeField::Store) => Some(header.store_ms),
            (_, TimeField::Due) => (header.due_ms > 0).then_some(header.due_ms),
            (_, TimeField::Delivered) => delivery.map(|d| d.delivered_ms),
        };
        let in_time = match (self.since_ms, self.until_ms) {
            (None, None) => true,
            (since, until) => {
                time.is_some_and(|t| since.is_none_or(|s| t >= s) && until.is_none_or(|u| t < u))
            }
        };
        self.topic.as_deref().is_none_or(|t| t == record.topic)
            && self.queue.is_none_or(|q| q == header.queue_id)
            && self.from_offset.is_none_or(|f| at.log_offset >= f)
            && self.to_offset.is_none_or(|t| at.log_offset < t)
            && (self.ids.is_empty() || self.ids.contains(&at.log_offset))
            && (self.states.is_empty() || self.states.contains(&state))
            && in_time
    }
}

/// One selected record.
#[derive(Debug)]
pub struct DumpedRecord<'a> {
    /// Where it is.
    pub at: RecordAt,
    /// Its segment file.
    pub file: &'a Path,
    /// The record.
    pub record: &'a RecordView<'a>,
    /// Its delay state (a delivery record: `Delivered`).
    pub state: DelayState,
    /// For a delivered message: its delivery.
    pub delivery: Option<&'a Delivery>,
    /// For a delivery record: the message it delivered.
    pub origin: Option<OriginRef>,
    /// Decoded properties (empty if they do not decode; see `properties_ok`).
    pub properties: Vec<(String, String)>,
    /// Whether the properties decoded.
    pub properties_ok: bool,
}

/// Totals of a dump.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DumpTotals {
    /// Records handed out.
    pub selected: u64,
    /// Places where the scan met bytes that are not a valid record (skipped; `verify` says more).
    pub damaged: u64,
}

/// Hands every record of the store in `dir` that `filter` selects to `out`, in log order.
/// `progress` receives (bytes scanned, bytes to scan) over both passes.
pub fn dump(
    fs: &dyn FileSystem,
    dir: &Path,
    filter: &RecordFilter,
    out: &mut dyn FnMut(&DumpedRecord<'_>),
    progress: &mut dyn FnMut(u64, u64),
) -> Result<DumpTotals> {
    let files = StoreFiles::survey(fs, dir)?;
    let total = files.segment_bytes().saturating_mul(2);
    let first_pass = files.segment_bytes();
    let index = DelayIndex::build(fs, &files.segments, filter.topic.as_deref(), &mut |done| {
        progress(done, total)
    })?;
    let mut selector = Selector {
        files: &files,
        filter,
        index: &index,
        out,
        progress: &mut |done| progress(first_pass + done, total),
        totals: DumpTotals::default(),
        past_range: false,
    };
    scan_log(
        fs,
        &files.segments,
        filter.from_offset.unwrap_or(0),
        &mut selector,
    )?;
    Ok(selector.totals)
}

struct Selector<'a> {
    files: &'a StoreFiles,
    filter: &'a RecordFilter,
    index: &'a DelayIndex,
    out: &'a mut dyn FnMut(&DumpedRecord<'_>),
    progress: &'a mut dyn FnMut(u64),
    totals: DumpTotals,
    /// The scan passed the end of the offset range.
    past_range: bool,
}

impl ScanVisitor for Selector<'_> {
    fn record(&mut self, at: &RecordAt, record: &RecordView<'_>) {
        if self.filter.to_offset.is_some_and(|to| at.log_offset >= to) {
            self.past_range = true;
            return;
        }
        let header = &record.header;
        let (state, delivery, origin) = match header.kind {
            RecordKind::Message => (
                self.index.state(at.log_offset, header),
                self.index.delivery(at.log_offset),
                None,
            ),
            RecordKind::Delivery => {
                if !self.filter.include_deliveries {
                    return;
                }
                (
                    DelayState::Delivered,
                    None,
                    OriginRef::decode(record.body).ok(),
                )
            }
            RecordKind::Filler => return,
        };
        if !self.filter.matches(at, record, state, delivery) {
            return;
        }
        let properties = decode_properties(record.properties);
        let file: PathBuf = self
            .files
            .segments
            .get(at.segment)
            .map(|s| s.path.clone())
            .unwrap_or_default();
        self.totals.selected += 1;
        (self.out)(&DumpedRecord {
            at: *at,
            file: &file,
            record,
            state,
            delivery,
            origin,
            properties_ok: properties.is_ok(),
            properties: properties.unwrap_or_default(),
        });
    }

    fn damage(&mut self, _at: &RecordAt, _kind: crate::DecodeError, _resumed_at: Option<u64>) {
        self.totals.damaged += 1;
    }

    fn progress(&mut self, scanned_bytes: u64) {
        (self.progress)(scanned_bytes);
    }

    fn done(&self) -> bool {
        self.past_range
    }
}

/// The name of a record kind in JSON output.
pub fn kind_name(kind: RecordKind) -> &'static str {
    match kind {
        RecordKind::Message => "message",
        RecordKind::Filler => "filler",
        RecordKind::Delivery => "delivery",
    }
}
