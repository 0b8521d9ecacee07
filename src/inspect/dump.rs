//! `dump`: the records of the log that match a filter, in log order, each with its delay
//! state. Two passes: the first learns which delayed messages were delivered, cancelled or
//! discarded (those records come after their message), the second selects and hands out
//! records.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use crate::commit_log::record::{decode_properties, OriginRef, RecordKind, RecordView};
use crate::error::Result;
use crate::io::FileSystem;

use super::delay_state::{first_timed_queue, Cancellation, DelayIndex, DelayState, Delivery};
use super::files::StoreFiles;
use super::log_scan::{scan_log, RecordAt, ScanVisitor};

/// Which time a time range applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TimeField {
    /// When the store accepted the record.
    #[default]
    Store,
    /// When a delayed message falls due, by a delay level or an arbitrary delay (immediate
    /// messages have none).
    Due,
    /// When a delayed message was delivered (others have none).
    Delivered,
}

/// Which records to select. Every criterion given must hold; an empty filter selects every
/// message record. Control records (hop, cancel, discard) have no topic of their own: the
/// topic and queue filters select them through the message they name, and an id selects a
/// message together with the delivery and control records that name it.
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
    /// Also select hop, cancel and discard records (time = their store time).
    pub include_control: bool,
}

impl RecordFilter {
    /// Whether a message with this topic and queue passes the topic and queue filters.
    fn matches_place(&self, topic: &str, queue: u32) -> bool {
        self.topic.as_deref().is_none_or(|t| t == topic) && self.queue.is_none_or(|q| q == queue)
    }

    /// `origin`: for a record naming a message, that message's id. `origin_selected`: for a
    /// control record, whether its message passes the topic and queue filters.
    fn matches(
        &self,
        at: &RecordAt,
        record: &RecordView<'_>,
        state: DelayState,
        delivery: Option<&Delivery>,
        origin: Option<u64>,
        origin_selected: bool,
    ) -> bool {
        let header = &record.header;
        let time = match (header.kind, self.time_field) {
            (RecordKind::Message, TimeField::Store) => Some(header.store_ms),
            (RecordKind::Message, TimeField::Due) => {
                first_timed_queue(header).map(|_| header.due_ms)
            }
            (RecordKind::Message, TimeField::Delivered) => delivery.map(|d| d.delivered_ms),
            (
                RecordKind::Delivery
                | RecordKind::Hop
                | RecordKind::Cancel
                | RecordKind::Discard
                | RecordKind::Filler,
                _,
            ) => Some(header.store_ms),
        };
        let in_time = match (self.since_ms, self.until_ms) {
            (None, None) => true,
            (since, until) => {
                time.is_some_and(|t| since.is_none_or(|s| t >= s) && until.is_none_or(|u| t < u))
            }
        };
        let place = if header.kind.has_topic() {
            self.matches_place(record.topic, header.queue_id)
        } else {
            origin_selected
        };
        let id_matches = self.ids.contains(&at.log_offset)
            || origin.is_some_and(|origin| self.ids.contains(&origin));
        place
            && self.from_offset.is_none_or(|f| at.log_offset >= f)
            && self.to_offset.is_none_or(|t| at.log_offset < t)
            && (self.ids.is_empty() || id_matches)
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
    /// Its delay state (a delivery record: `Delivered`; a cancel record: `Cancelled`; a hop
    /// or a discard: its message's state).
    pub state: DelayState,
    /// For a delivered message: its delivery.
    pub delivery: Option<&'a Delivery>,
    /// For a cancelled message: its cancellation.
    pub cancellation: Option<&'a Cancellation>,
    /// For a delivery, hop, cancel or discard record: the message it names.
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
    // Control records name their message only by id: learn the ids of the delayed messages
    // the topic and queue filters select (from the start, whatever the offset range).
    let placed = filter.include_control && (filter.topic.is_some() || filter.queue.is_some());
    let selected_messages = if placed {
        let mut collect = SelectedMessages {
            filter,
            ids: HashSet::new(),
            end: filter.to_offset,
        };
        scan_log(fs, &files.segments, 0, &mut collect)?;
        Some(collect.ids)
    } else {
        None
    };
    let mut selector = Selector {
        files: &files,
        filter,
        index: &index,
        selected_messages: selected_messages.as_ref(),
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

/// Collects the ids of the delayed messages a filter's topic and queue select.
struct SelectedMessages<'a> {
    filter: &'a RecordFilter,
    ids: HashSet<u64>,
    end: Option<u64>,
}

impl ScanVisitor for SelectedMessages<'_> {
    fn record(&mut self, at: &RecordAt, record: &RecordView<'_>) {
        let header = &record.header;
        if first_timed_queue(header).is_some()
            && self.filter.matches_place(record.topic, header.queue_id)
        {
            self.ids.insert(at.log_offset);
        }
        if self.end.is_some_and(|end| at.log_offset >= end) {
            // Control records before `end` name messages before them.
            self.end = Some(0);
        }
    }

    fn done(&self) -> bool {
        self.end == Some(0)
    }
}

struct Selector<'a> {
    files: &'a StoreFiles,
    filter: &'a RecordFilter,
    index: &'a DelayIndex,
    /// Delayed messages the topic and queue filters select (`None`: no such filter).
    selected_messages: Option<&'a HashSet<u64>>,
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
        let origin = || OriginRef::decode(record.body).ok();
        let (state, delivery, cancellation, origin) = match header.kind {
            RecordKind::Message => (
                self.index.state(at.log_offset, header),
                self.index.delivery(at.log_offset),
                self.index.cancellation(at.log_offset),
                None,
            ),
            RecordKind::Delivery => {
                if !self.filter.include_deliveries {
                    return;
                }
                (DelayState::Delivered, None, None, origin())
            }
            RecordKind::Cancel => {
                if !self.filter.include_control {
                    return;
                }
                (DelayState::Cancelled, None, None, origin())
            }
            RecordKind::Hop | RecordKind::Discard => {
                if !self.filter.include_control {
                    return;
                }
                let origin = origin();
                let state = origin.map_or(DelayState::Pending, |o| {
                    self.index.delayed_state(o.log_offset)
                });
                (state, None, None, origin)
            }
            RecordKind::Filler => return,
        };
        let origin_id = origin.map(|o| o.log_offset);
        let origin_selected = match (self.selected_messages, origin_id) {
            (None, _) => true,
            (Some(ids), Some(id)) => ids.contains(&id),
            (Some(_), None) => false,
        };
        if !self
            .filter
            .matches(at, record, state, delivery, origin_id, origin_selected)
        {
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
            cancellation,
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
        RecordKind::Hop => "hop",
        RecordKind::Cancel => "cancel",
        RecordKind::Discard => "discard",
    }
}
