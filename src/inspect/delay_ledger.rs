//! The ledger `verify` keeps of delayed messages while it scans the log: for every timed queue
//! (delay level or timer slot), which message each entry stands for, which entries were
//! consumed, and which messages first indexed there were delivered, cancelled or discarded.
//! Memory: 8 bytes per timed-queue entry plus a few bits.
//!
//! Entries are numbered from the first one the scan meets: after retention deleted the oldest
//! segments, the entries (and messages) before it are gone and lookups below it answer
//! [`Slot::Retained`], which callers do not check.

use crate::consume_queue::TimedQueue;

/// Entries a record may skip past the end of a queue's table and still be recorded: a larger
/// jump is a queue-offset gap (reported where it is found), not worth the memory.
const JUMP_ENTRIES_MAX: u64 = 1 << 20;

const UNKNOWN: u64 = u64::MAX;

/// What the ledger knows of one timed-queue entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    /// The entry stands for the message with this id (its own record, or a hop naming it).
    Message(u64),
    /// Below the first entry the scan met: its record was deleted by retention.
    Retained,
    /// Inside the table, but no valid record holds it (damage, or a queue-offset gap).
    Unknown,
    /// Past every entry met so far.
    Beyond,
}

/// A message's decision, as far as the ledger learned it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Delivered by a delivery record.
    Delivered,
    /// Cancelled by a cancel record.
    Cancelled,
    /// Its entry was consumed by a discard record without a decision.
    Discarded,
}

/// A growable bit set over entry numbers.
#[derive(Debug, Default)]
struct Bits(Vec<u64>);

impl Bits {
    fn get(&self, at: usize) -> bool {
        self.0
            .get(at / 64)
            .is_some_and(|w| w & (1 << (at % 64)) != 0)
    }

    /// Sets bit `at`; returns whether it was set.
    fn set(&mut self, at: usize) -> bool {
        let word = at / 64;
        if word >= self.0.len() {
            self.0.resize(word + 1, 0);
        }
        match self.0.get_mut(word) {
            Some(w) => {
                let was = *w & (1 << (at % 64)) != 0;
                *w |= 1 << (at % 64);
                was
            }
            None => false,
        }
    }
}

/// One timed queue's part of the ledger.
#[derive(Debug, Default)]
struct Column {
    /// Number of the first entry in `origins` (`None` until the scan meets one).
    base: Option<u64>,
    /// The message each entry stands for ([`UNKNOWN`] where no valid record holds it).
    origins: Vec<u64>,
    consumed: Bits,
    delivered: Bits,
    cancelled: Bits,
    discarded: Bits,
    /// 1 + the highest entry consumed.
    cursor: u64,
}

impl Column {
    /// Position of `index` in the table, if it is at or after its base.
    fn at(&self, index: u64) -> Option<usize> {
        usize::try_from(index.checked_sub(self.base?)?).ok()
    }

    fn slot(&self, index: u64) -> Slot {
        let Some(at) = self.at(index) else {
            return Slot::Retained;
        };
        match self.origins.get(at) {
            Some(&UNKNOWN) => Slot::Unknown,
            Some(&origin) => Slot::Message(origin),
            None => Slot::Beyond,
        }
    }
}

/// The ledger of every timed queue.
#[derive(Debug)]
pub struct DelayLedger {
    /// By timed-queue id. When the log starts at offset 0 (nothing was retained away), every
    /// table starts at entry 0; otherwise at the first entry met.
    columns: Vec<Column>,
}

impl DelayLedger {
    /// An empty ledger; `whole_log` when the log starts at offset 0.
    pub fn new(whole_log: bool) -> Self {
        DelayLedger {
            columns: (0..512)
                .map(|_| Column {
                    base: whole_log.then_some(0),
                    ..Column::default()
                })
                .collect(),
        }
    }

    fn column(&self, queue: TimedQueue) -> Option<&Column> {
        self.columns.get(usize::from(queue.to_id()))
    }

    fn column_mut(&mut self, queue: TimedQueue) -> Option<&mut Column> {
        self.columns.get_mut(usize::from(queue.to_id()))
    }

    /// Entry `index` of `queue` stands for the message `origin` (a message record, or a hop).
    pub fn add_entry(&mut self, queue: TimedQueue, index: u64, origin: u64) {
        let Some(column) = self.column_mut(queue) else {
            return;
        };
        let base = *column.base.get_or_insert(index);
        let Some(at) = index.checked_sub(base) else {
            return;
        };
        if at > column.origins.len() as u64 + JUMP_ENTRIES_MAX {
            return;
        }
        let Ok(at) = usize::try_from(at) else { return };
        if at >= column.origins.len() {
            column.origins.resize(at + 1, UNKNOWN);
        }
        if let Some(slot) = column.origins.get_mut(at) {
            *slot = origin;
        }
    }

    /// What entry `index` of `queue` stands for.
    pub fn slot(&self, queue: TimedQueue, index: u64) -> Slot {
        self.column(queue)
            .map_or(Slot::Retained, |column| column.slot(index))
    }

    /// Marks entry `index` of `queue` consumed; returns whether it already was. Entries below
    /// the table are not tracked (`false`).
    pub fn consume(&mut self, queue: TimedQueue, index: u64) -> bool {
        let Some(column) = self.column_mut(queue) else {
            return false;
        };
        column.cursor = column.cursor.max(index.saturating_add(1));
        match column.at(index) {
            Some(at) if at <= column.origins.len() + JUMP_ENTRIES_MAX as usize => {
                column.consumed.set(at)
            }
            _ => false,
        }
    }

    /// The decision learned so far for the message first indexed at entry `index` of `queue`
    /// (a delivery wins over a cancel, a cancel over a discard).
    pub fn outcome(&self, queue: TimedQueue, index: u64) -> Option<Outcome> {
        let column = self.column(queue)?;
        let at = column.at(index)?;
        if column.delivered.get(at) {
            Some(Outcome::Delivered)
        } else if column.cancelled.get(at) {
            Some(Outcome::Cancelled)
        } else if column.discarded.get(at) {
            Some(Outcome::Discarded)
        } else {
            None
        }
    }

    /// Records `outcome` for the message first indexed at entry `index` of `queue`; returns
    /// the outcome it had before (`None`: it was pending).
    pub fn decide(&mut self, queue: TimedQueue, index: u64, outcome: Outcome) -> Option<Outcome> {
        let before = self.outcome(queue, index);
        let column = self.column_mut(queue)?;
        let at = column.at(index)?;
        if at > column.origins.len() + JUMP_ENTRIES_MAX as usize {
            return before;
        }
        match outcome {
            Outcome::Delivered => column.delivered.set(at),
            Outcome::Cancelled => column.cancelled.set(at),
            Outcome::Discarded => column.discarded.set(at),
        };
        before
    }

    /// Every non-zero cursor (1 + the highest entry consumed), by timed-queue id.
    pub fn cursors(&self) -> Vec<(u16, u64)> {
        (0..512u16)
            .filter_map(|id| {
                let cursor = self.columns.get(usize::from(id))?.cursor;
                (cursor > 0).then_some((id, cursor))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_and_decisions_round_trip() {
        let mut ledger = DelayLedger::new(true);
        let queue = TimedQueue::TimerSlot(3);
        ledger.add_entry(queue, 0, 100);
        ledger.add_entry(queue, 2, 300);
        assert_eq!(ledger.slot(queue, 0), Slot::Message(100));
        assert_eq!(ledger.slot(queue, 1), Slot::Unknown);
        assert_eq!(ledger.slot(queue, 3), Slot::Beyond);
        assert!(!ledger.consume(queue, 0));
        assert!(ledger.consume(queue, 0));
        assert_eq!(ledger.cursors(), vec![(queue.to_id(), 1)]);
        assert_eq!(ledger.decide(queue, 0, Outcome::Cancelled), None);
        assert_eq!(
            ledger.decide(queue, 0, Outcome::Discarded),
            Some(Outcome::Cancelled)
        );
        assert_eq!(ledger.outcome(queue, 0), Some(Outcome::Cancelled));
    }

    #[test]
    fn a_retained_log_starts_tables_at_the_first_entry() {
        let mut ledger = DelayLedger::new(false);
        let queue = TimedQueue::Level(2);
        assert_eq!(ledger.slot(queue, 5), Slot::Retained);
        ledger.add_entry(queue, 1_000_000_000, 7);
        assert_eq!(ledger.slot(queue, 999_999_999), Slot::Retained);
        assert_eq!(ledger.slot(queue, 1_000_000_000), Slot::Message(7));
        assert!(!ledger.consume(queue, 3));
    }
}
