//! The checkpoint against the log: its log end and last record are record boundaries, and
//! its queue counts, timed-queue cursors and segment references are what the records below its
//! end say.

use crate::checkpoint::{Checkpoint, CHECKPOINT_FILE};
use crate::consume_queue::TimedQueue;

use super::super::problem::{ProblemKind, Severity};
use super::checker::{Checker, Snapshot};
use super::{queue_name, timed_queue_name};

impl Checker<'_, '_> {
    pub(super) fn check_checkpoint(&mut self, cp: &Checkpoint, log_end: u64) {
        let path = self.dir.join(CHECKPOINT_FILE);
        let segments_end = self.files.segments.last().map_or(0, |s| s.end_offset());
        let first = self.files.segments.first().map_or(0, |s| s.base_offset);
        let at_start = cp.log_end_offset == first;
        if cp.log_end_offset > segments_end || cp.log_end_offset < first {
            self.sink.add(
                ProblemKind::CheckpointAheadOfLog,
                Severity::Error,
                &path,
                0,
                Some(cp.log_end_offset),
                format!(
                    "checkpoint ends at {} outside the segment files ({first}..{segments_end}): \
                     segments are missing and the store refuses to open (R16)",
                    cp.log_end_offset
                ),
            );
        } else if !self.checkpoint_end_reached && !at_start {
            self.sink.add(
                ProblemKind::CheckpointAheadOfLog,
                Severity::Error,
                &path,
                0,
                Some(cp.log_end_offset),
                format!(
                    "checkpoint ends at {}, where no valid record ends (the valid log ends at \
                     {log_end}): recovery rejects it and scans the whole log (R18)",
                    cp.log_end_offset
                ),
            );
        }
        let no_record = cp.last_record_offset == cp.log_end_offset;
        if (no_record && cp.log_end_offset != first)
            || (!no_record && !self.checkpoint_last_record_seen)
        {
            self.sink.add(
                ProblemKind::CheckpointNotAtRecordEnd,
                Severity::Error,
                &path,
                0,
                Some(cp.last_record_offset),
                format!(
                    "checkpoint names its last record at {}, where no valid record starts",
                    cp.last_record_offset
                ),
            );
        }
        let Some(snapshot) = self.at_checkpoint.take() else {
            return;
        };
        self.check_queue_counts(cp, &snapshot);
        self.check_cursors(cp, &snapshot);
        self.check_segment_refs(cp, &snapshot);
        self.at_checkpoint = Some(snapshot);
    }

    /// Entry counts. After retention, a queue whose records below the checkpoint's end are all
    /// gone has no count to compare.
    fn check_queue_counts(&mut self, cp: &Checkpoint, snapshot: &Snapshot) {
        let path = self.dir.join(CHECKPOINT_FILE);
        let whole_log = self.log_start == 0;
        let counts = &snapshot.counts;
        let mut mismatches = Vec::new();
        for (key, count) in &cp.queue_counts {
            let found = match counts.get(key) {
                Some(found) => *found,
                None if whole_log => 0,
                None => continue,
            };
            if found != *count {
                mismatches.push((key.clone(), *count, found));
            }
        }
        for (key, found) in counts {
            if *found > 0 && !cp.queue_counts.iter().any(|(k, _)| k == key) {
                mismatches.push((key.clone(), 0, *found));
            }
        }
        mismatches.sort();
        for (key, count, found) in mismatches {
            self.sink.add(
                ProblemKind::CheckpointQueueCount,
                Severity::Error,
                &path,
                0,
                Some(cp.log_end_offset),
                format!(
                    "checkpoint counts {count} entries in {}, the log holds {found} records of it \
                     below the checkpoint's end",
                    queue_name(&key)
                ),
            );
        }
    }

    /// Consumed counts of the timed queues. After retention, a queue none of whose consuming
    /// records below the checkpoint's end is left has no cursor to compare (when one is left,
    /// the newest is: they are in log order).
    fn check_cursors(&mut self, cp: &Checkpoint, snapshot: &Snapshot) {
        let path = self.dir.join(CHECKPOINT_FILE);
        let whole_log = self.log_start == 0;
        let mut ids: Vec<u16> = cp
            .cursors
            .iter()
            .map(|(id, _)| *id)
            .chain(snapshot.cursors.iter().map(|(id, _)| *id))
            .collect();
        ids.sort_unstable();
        ids.dedup();
        for id in ids {
            let stored = cp
                .cursors
                .iter()
                .filter(|(q, _)| *q == id)
                .map(|(_, c)| *c)
                .max()
                .unwrap_or(0);
            let found = snapshot
                .cursors
                .iter()
                .find(|(q, _)| *q == id)
                .map_or(0, |(_, c)| *c);
            if stored == found || (found == 0 && !whole_log) {
                continue;
            }
            let name = TimedQueue::from_id(id)
                .map_or_else(|| format!("timed queue id {id}"), timed_queue_name);
            self.sink.add(
                ProblemKind::CheckpointCursor,
                Severity::Error,
                &path,
                0,
                Some(cp.log_end_offset),
                format!(
                    "checkpoint says {name} is consumed up to entry {stored}, the delivery, hop \
                     and discard records below its end say {found}"
                ),
            );
        }
    }

    /// Retention references of the segments still stored, recomputed the way dispatch derives
    /// them (delayed messages stored minus those delivered or discarded; the newest delivery
    /// of one of its messages). A wrong count lets retention delete a segment that still holds
    /// pending messages, or keep one forever. Segments with damage are skipped (their records
    /// cannot be counted).
    fn check_segment_refs(&mut self, cp: &Checkpoint, snapshot: &Snapshot) {
        let path = self.dir.join(CHECKPOINT_FILE);
        let mut found_problems = Vec::new();
        for (index, segment) in self.files.segments.iter().enumerate() {
            if segment.base_offset >= cp.log_end_offset || self.damaged_segments.contains(&index) {
                continue;
            }
            let found = snapshot
                .segment_refs
                .get(index)
                .copied()
                .unwrap_or_default();
            let stored = cp
                .segment_refs
                .iter()
                .find(|(base, _)| *base == segment.base_offset)
                .map(|(_, refs)| *refs)
                .unwrap_or_default();
            if found != stored {
                found_problems.push(format!(
                    "checkpoint says the segment at {} holds {} pending delayed messages and its \
                     newest delivery is at {}; the log below the checkpoint's end says {} and {}",
                    segment.base_offset,
                    stored.pending,
                    stored.last_delivery_offset,
                    found.pending,
                    found.last_delivery_offset
                ));
            }
        }
        let segment_bases: Vec<u64> = self.files.segments.iter().map(|s| s.base_offset).collect();
        for (base, _) in &cp.segment_refs {
            if *base >= self.log_start && !segment_bases.contains(base) {
                found_problems.push(format!(
                    "checkpoint holds references for a segment at {base}, where no segment starts"
                ));
            }
        }
        for detail in found_problems {
            self.sink.add(
                ProblemKind::CheckpointSegmentRefs,
                Severity::Error,
                &path,
                0,
                Some(cp.log_end_offset),
                detail,
            );
        }
    }
}
