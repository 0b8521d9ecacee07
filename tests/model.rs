//! Model-based test: proptest generates random sequences of operations (puts of plain
//! messages, of delay-level messages, of arbitrary delays (`with_delay_ms`) and of absolute due
//! times (`with_deliver_at_ms`, some already past), with either durability; cancels of those
//! and of unknown ids with either durability; clock advances, small and big; pull and commit,
//! flush, clean reopen, kill, power loss, failing sync) against a store on the simulated file
//! system (`SimFs`) with a `ManualClock`, in both sync modes, and after every step compares the
//! store with a simple in-memory model:
//!
//! - every acknowledged message is in its topic queue (a delayed one once its due time has
//!   passed, never before), exactly once, with the id, queue offset, key, properties, body and
//!   due time of its acknowledgement; nothing else is there;
//! - after a power loss, the survivors are a prefix of the log that includes every message
//!   acknowledged durable (a `Durability::Sync` put or cancel, or anything before one, or before
//!   a flush or a clean close);
//! - a cancel answers what the model allows: `AlreadyDelivered` for a message that was never
//!   delayed (or due at its put) or that was seen delivered, `Cancelled` for a pending one that
//!   is not yet due (either when it is due but not yet visible), `NotFound` for an id that names
//!   no message; a message answered `Cancelled` never appears in its topic queue, through kills
//!   and reopens, and through a power loss if the cancel was durable (see `Cancel`);
//! - after a failed sync the store is poisoned and acknowledges nothing more;
//! - committed consumer offsets are what was committed, never ahead of what was persisted.
//!
//! A failing case is shrunk and printed by proptest, which saves its seed in
//! `tests/model.proptest-regressions` and replays it first on every later run.
//! `PROPTEST_CASES=n` changes the number of cases (default 256).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use delaystore::io::SimFs;
use delaystore::timer::{tier_for, TIER_COUNT};
use delaystore::{
    CancelOutcome, Clock, Durability, Error, ManualClock, Message, MessageId, Options, PutReceipt,
    Store, StoredMessage, SyncMode,
};
use proptest::prelude::*;

const DIR: &str = "/model";
const TOPICS: [&str; 2] = ["ma", "mb"];
const QUEUES: u32 = 2;
const LEVELS_MS: [u64; 2] = [1_000, 5_000];
const GROUP: &str = "g";

/// One step. New kinds of step go here, in `op()` (with a weight), in `Harness::apply`, and in
/// the figures of `run`; the model's expectations live in `Acked` and `Harness::check`.
///
/// Delays: `PutDelay` and `PutAt` spread their due times over every timer tier a sequence can
/// reach (tier 0 under 32 ms up to tier 4 at ~40 min, so messages hop down several tiers), and
/// `PutAt` also names times already past (delivered at once). The rarer big `Advance` lets the
/// clock reach the long ones. `Cancel` names an acknowledged message (any, or a delayed one)
/// or an id that is no message.
#[derive(Debug, Clone)]
enum Op {
    Put {
        topic: usize,
        queue: u32,
        level: u8,
        pad_bytes: usize,
        durable: bool,
    },
    /// `with_delay_ms(delay_ms)`: due at store time + `delay_ms` (0: at once).
    PutDelay {
        topic: usize,
        queue: u32,
        delay_ms: u64,
        pad_bytes: usize,
        durable: bool,
    },
    /// `with_deliver_at_ms(now + at_offset_ms)`: a time not after now is delivered at once.
    PutAt {
        topic: usize,
        queue: u32,
        at_offset_ms: i64,
        pad_bytes: usize,
        durable: bool,
    },
    Cancel {
        pick: Pick,
        durable: bool,
    },
    Advance {
        ms: u64,
    },
    PullCommit {
        topic: usize,
        queue: u32,
        max: usize,
    },
    Flush,
    Reopen,
    Kill,
    PowerLoss {
        seed: u64,
    },
    FailSync {
        after: u64,
    },
}

/// The id a cancel names.
#[derive(Debug, Clone, Copy)]
enum Pick {
    /// An acknowledged message: index modulo the model's list (past end if it is empty).
    Any(usize),
    /// An acknowledged message that waits (or waited) in a delay queue: index modulo those
    /// (any message if there is none).
    Delayed(usize),
    /// One byte into an acknowledged message's record: no record starts there.
    InsideRecord(usize),
    /// Far past the log's written end.
    PastEnd,
}

fn delay_ms() -> impl Strategy<Value = u64> {
    // Tier t of the timer wheel holds [32^t, 32^(t+1)) ms: 0 and 1..32 ms (tier 0), ..1 s
    // (tier 1), ..32 s (tier 2), ..17 min (tier 3), ..40 min (tier 4).
    prop_oneof![
        3 => 0..50u64,
        3 => 50..2_000u64,
        2 => 2_000..70_000u64,
        1 => 70_000..2_400_000u64,
    ]
}

fn at_offset_ms() -> impl Strategy<Value = i64> {
    prop_oneof![
        1 => -10_000..=0i64,
        3 => 1..70_000i64,
        1 => 70_000..2_400_000i64,
    ]
}

fn pick() -> impl Strategy<Value = Pick> {
    prop_oneof![
        3 => any::<usize>().prop_map(Pick::Any),
        4 => any::<usize>().prop_map(Pick::Delayed),
        1 => any::<usize>().prop_map(Pick::InsideRecord),
        1 => Just(Pick::PastEnd),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..2usize, 0..QUEUES, 0..3u8, 0..2_500usize, any::<bool>()).prop_map(
            |(topic, queue, level, pad_bytes, durable)| Op::Put { topic, queue, level, pad_bytes, durable }
        ),
        4 => (0..2usize, 0..QUEUES, delay_ms(), 0..2_500usize, any::<bool>()).prop_map(
            |(topic, queue, delay_ms, pad_bytes, durable)| Op::PutDelay { topic, queue, delay_ms, pad_bytes, durable }
        ),
        2 => (0..2usize, 0..QUEUES, at_offset_ms(), 0..2_500usize, any::<bool>()).prop_map(
            |(topic, queue, at_offset_ms, pad_bytes, durable)| Op::PutAt { topic, queue, at_offset_ms, pad_bytes, durable }
        ),
        3 => (pick(), any::<bool>()).prop_map(|(pick, durable)| Op::Cancel { pick, durable }),
        3 => (0..7_000u64).prop_map(|ms| Op::Advance { ms }),
        1 => (7_000..2_500_000u64).prop_map(|ms| Op::Advance { ms }),
        2 => (0..2usize, 0..QUEUES, 1..6usize).prop_map(|(topic, queue, max)| Op::PullCommit { topic, queue, max }),
        1 => Just(Op::Flush),
        1 => Just(Op::Reopen),
        1 => Just(Op::Kill),
        1 => any::<u64>().prop_map(|seed| Op::PowerLoss { seed }),
        1 => (0..3u64).prop_map(|after| Op::FailSync { after }),
    ]
}

/// What the model knows of a cancel answered `Cancelled`.
///
/// A cancel is durable once its record is: with `Durability::Sync` (which syncs the log to its
/// written end), or once anything syncs the log to its end after it (a flush, a durable put or
/// cancel: group commit syncs everything written, a clean close, recovery). A buffered cancel
/// survives a process crash (the page cache does); a power loss keeps it or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cancel {
    /// Not cancelled (or a power loss took the cancel away).
    None,
    /// Cancelled, durable: never delivered, whatever happens.
    Durable,
    /// Cancelled, not yet durable. Its cancel record lies in `[from, to)` of the log (the
    /// written end before and after the call; `from` unknown if an earlier record may be
    /// the deciding one), so after a power loss the recovered log end says whether it
    /// survived, unless it falls in between.
    Unsynced { from: Option<u64>, to: u64 },
    /// A power loss may have taken it away: the message is delivered or not, and the check
    /// that can tell (due and visible) learns which.
    Unsure,
}

/// An acknowledged message as the model knows it.
#[derive(Debug, Clone)]
struct Acked {
    message: Message,
    id: u64,
    queue: u32,
    /// Queue offset in its topic queue (messages put straight there only).
    queue_offset: Option<u64>,
    due_ms: Option<u64>,
    /// Waits in a delay level's or the timer wheel's queues (due after its store time), so a
    /// cancel can stop it; otherwise it went straight to its topic queue.
    delayed: bool,
    /// The timer tier it entered (arbitrary delays only).
    entry_tier: Option<usize>,
    /// Seen in its topic queue (delivered).
    seen: bool,
    cancel: Cancel,
    /// Must survive a power loss.
    durable: bool,
}

impl Acked {
    fn from_receipt(message: Message, receipt: &PutReceipt) -> Self {
        let delayed = receipt.due_ms.is_some_and(|due| due > receipt.store_ms);
        let entry_tier = receipt
            .due_ms
            .filter(|_| delayed && message.delay_level == 0)
            .map(|due| tier_for(due - receipt.store_ms) as usize);
        Acked {
            id: receipt.id.0,
            queue: receipt.queue,
            queue_offset: (!delayed).then_some(receipt.queue_offset),
            due_ms: receipt.due_ms,
            delayed,
            entry_tier,
            seen: false,
            cancel: Cancel::None,
            message,
            durable: false,
        }
    }

    /// The answers a cancel of this message may get at `now_ms`.
    fn cancel_outcomes(&self, now_ms: u64) -> &'static [CancelOutcome] {
        use CancelOutcome::{AlreadyDelivered, Cancelled};
        let due = self.due_ms.is_none_or(|d| d <= now_ms);
        if !self.delayed {
            // Never pending: visible from its put.
            return &[AlreadyDelivered];
        }
        match self.cancel {
            Cancel::Durable | Cancel::Unsynced { .. } => &[Cancelled],
            // Cancelled if the cancel survived or the message is not due (nor delivered) yet.
            Cancel::Unsure | Cancel::None if !due => &[Cancelled],
            Cancel::None if self.seen => &[AlreadyDelivered],
            // Due, not seen: not visible yet (Sync mode, not durable), so the delivery may
            // happen between the check and the cancel, when a background sync makes it visible.
            Cancel::None | Cancel::Unsure => &[Cancelled, AlreadyDelivered],
        }
    }
}

#[derive(Debug)]
struct Harness {
    sync_mode: SyncMode,
    fs: SimFs,
    clock: ManualClock,
    store: Option<Store>,
    /// Acknowledged messages in log order.
    acked: Vec<Acked>,
    /// A message whose put failed: it may or may not be in the log (its body).
    maybe: Option<Message>,
    committed: BTreeMap<(usize, u32), u64>,
    persisted: BTreeMap<(usize, u32), u64>,
    serial: u64,
    /// Times a failed sync poisoned the store.
    poisonings: u64,
    /// Puts that failed on a failed sync without poisoning the store (a known gap).
    unpoisoned_failures: u64,
    /// Cancel answers: `Cancelled`, `AlreadyDelivered`, `NotFound`.
    cancel_answers: [u64; 3],
    /// Cancels not yet durable that a power loss took away (allowed), and that it kept;
    /// of those, how many the model learned from the store (`Cancel::Unsure`).
    unsynced_cancels_lost: u64,
    unsynced_cancels_kept: u64,
    unsynced_cancels_learned: u64,
    /// Messages with arbitrary delays seen delivered, by the timer tier they entered.
    delivered_by_tier: [u64; TIER_COUNT as usize],
}

fn options(fs: &SimFs, clock: &ManualClock, sync_mode: SyncMode) -> Options {
    Options {
        fs: Arc::new(fs.clone()),
        clock: Arc::new(clock.clone()),
        sync_mode,
        segment_bytes: 64 * 1024,
        consume_queue_file_entries: 64,
        flush_interval_ms: 60_000,
        checkpoint_interval_ms: 600_000,
        delay_levels: Some("1s 5s".into()),
        default_queue_count: Some(QUEUES),
        ..Options::default()
    }
}

fn durability(durable: bool) -> Durability {
    if durable {
        Durability::Sync
    } else {
        Durability::Buffered
    }
}

impl Harness {
    fn new(sync_mode: SyncMode) -> Self {
        let fs = SimFs::new();
        let clock = ManualClock::new(1_000_000);
        let store = Store::open(DIR, options(&fs, &clock, sync_mode)).unwrap();
        Harness {
            sync_mode,
            fs,
            clock,
            store: Some(store),
            acked: Vec::new(),
            maybe: None,
            committed: BTreeMap::new(),
            persisted: BTreeMap::new(),
            serial: 0,
            poisonings: 0,
            unpoisoned_failures: 0,
            cancel_answers: [0; 3],
            unsynced_cancels_lost: 0,
            unsynced_cancels_kept: 0,
            unsynced_cancels_learned: 0,
            delivered_by_tier: [0; TIER_COUNT as usize],
        }
    }

    fn store(&self) -> &Store {
        self.store.as_ref().unwrap()
    }

    fn open(&mut self) {
        let store = Store::open(DIR, options(&self.fs, &self.clock, self.sync_mode))
            .unwrap_or_else(|e| panic!("reopen failed: {e}"));
        self.store = Some(store);
    }

    fn next_message(&mut self, topic: usize, queue: u32, level: u8, pad_bytes: usize) -> Message {
        self.serial += 1;
        let mut message = Message::new(
            TOPICS[topic],
            format!("m{}-{}", self.serial, "z".repeat(pad_bytes)),
        )
        .with_key(format!("k{}", self.serial % 3))
        .with_property("serial", self.serial.to_string())
        .with_delay_level(level);
        message.queue = Some(queue);
        message
    }

    /// Everything written so far is durable: messages and cancels.
    fn mark_all_durable(&mut self) {
        for a in &mut self.acked {
            a.durable = true;
            if let Cancel::Unsynced { .. } = a.cancel {
                a.cancel = Cancel::Durable;
            }
        }
    }

    /// Puts `message` and records it acknowledged; returns its receipt.
    fn put(&mut self, message: Message, durable: bool) -> PutReceipt {
        let receipt = self
            .store()
            .put_with(&message, durability(durable))
            .unwrap();
        self.acked.push(Acked::from_receipt(message, &receipt));
        if durable {
            // Group commit syncs the log up to its written end: everything before too.
            self.mark_all_durable();
        }
        receipt
    }

    /// The id a cancel names, and the index of its message in `acked` (none: not a message).
    fn cancel_target(&self, pick: Pick) -> (u64, Option<usize>) {
        let past_end = || {
            let written_end = self.store().stats().written_end_offset;
            (written_end + (1 << 40), None)
        };
        if self.acked.is_empty() {
            return past_end();
        }
        let any = |i: usize| i % self.acked.len();
        match pick {
            Pick::Any(i) => (self.acked[any(i)].id, Some(any(i))),
            Pick::Delayed(i) => {
                let delayed: Vec<usize> = (0..self.acked.len())
                    .filter(|&k| self.acked[k].delayed)
                    .collect();
                let k = if delayed.is_empty() {
                    any(i)
                } else {
                    delayed[i % delayed.len()]
                };
                (self.acked[k].id, Some(k))
            }
            Pick::InsideRecord(i) => (self.acked[any(i)].id + 1, None),
            Pick::PastEnd => past_end(),
        }
    }

    fn cancel(&mut self, pick: Pick, durable: bool) {
        let (id, index) = self.cancel_target(pick);
        let before = self.store().stats().written_end_offset;
        let outcome = self
            .store()
            .cancel_with(MessageId(id), durability(durable))
            .unwrap();
        let after = self.store().stats().written_end_offset;
        self.cancel_answers[match outcome {
            CancelOutcome::Cancelled => 0,
            CancelOutcome::AlreadyDelivered => 1,
            CancelOutcome::NotFound => 2,
        }] += 1;
        let Some(index) = index else {
            assert_eq!(outcome, CancelOutcome::NotFound, "cancel of id {id}");
            return;
        };
        let now = self.clock.now_ms();
        let a = &mut self.acked[index];
        let allowed = a.cancel_outcomes(now);
        assert!(
            allowed.contains(&outcome),
            "cancel of message id {} (due {:?}, now {now}, delayed {}, seen {}, {:?}): {outcome:?}, allowed {allowed:?}",
            a.id,
            a.due_ms,
            a.delayed,
            a.seen,
            a.cancel
        );
        if outcome == CancelOutcome::Cancelled {
            a.cancel = match a.cancel {
                Cancel::Durable => Cancel::Durable,
                // A repeat: the deciding record is the first one.
                Cancel::Unsynced { from, to } => Cancel::Unsynced { from, to },
                // The deciding record is the one before the power loss, if it survived.
                Cancel::Unsure => Cancel::Unsynced {
                    from: None,
                    to: after,
                },
                Cancel::None => Cancel::Unsynced {
                    from: Some(before),
                    to: after,
                },
            };
        }
        if a.delayed && durable {
            // `cancel_with` of a delayed message syncs the log to its written end.
            self.mark_all_durable();
        }
    }

    fn apply(&mut self, op: &Op) {
        match *op {
            Op::Put {
                topic,
                queue,
                level,
                pad_bytes,
                durable,
            } => {
                let message = self.next_message(topic, queue, level, pad_bytes);
                let receipt = self.put(message, durable);
                assert_eq!(receipt.due_ms.is_some(), level > 0);
                if let Some(due) = receipt.due_ms {
                    assert_eq!(due, receipt.store_ms + LEVELS_MS[usize::from(level) - 1]);
                }
            }
            Op::PutDelay {
                topic,
                queue,
                delay_ms,
                pad_bytes,
                durable,
            } => {
                let message = self
                    .next_message(topic, queue, 0, pad_bytes)
                    .with_delay_ms(delay_ms);
                let receipt = self.put(message, durable);
                assert_eq!(
                    receipt.due_ms,
                    Some(receipt.store_ms + delay_ms),
                    "{receipt:?}"
                );
            }
            Op::PutAt {
                topic,
                queue,
                at_offset_ms,
                pad_bytes,
                durable,
            } => {
                let at_ms = self.clock.now_ms().saturating_add_signed(at_offset_ms);
                let message = self
                    .next_message(topic, queue, 0, pad_bytes)
                    .with_deliver_at_ms(at_ms);
                let receipt = self.put(message, durable);
                assert_eq!(receipt.due_ms, Some(at_ms), "{receipt:?}");
            }
            Op::Cancel { pick, durable } => self.cancel(pick, durable),
            Op::Advance { ms } => self.clock.advance_ms(ms),
            Op::PullCommit { topic, queue, max } => {
                let from = self.committed.get(&(topic, queue)).copied().unwrap_or(0);
                let got = self.store().pull(TOPICS[topic], queue, from, max).unwrap();
                if let Some(last) = got.last() {
                    let next = last.queue_offset + 1;
                    self.store()
                        .commit_offset(GROUP, TOPICS[topic], queue, next)
                        .unwrap();
                    self.committed.insert((topic, queue), next);
                    if self.sync_mode == SyncMode::Sync {
                        self.persisted = self.committed.clone();
                    }
                }
            }
            Op::Flush => {
                self.store().flush().unwrap();
                self.mark_all_durable();
                self.persisted = self.committed.clone();
            }
            Op::Reopen => {
                self.store.take().unwrap().close().unwrap();
                self.mark_all_durable();
                self.persisted = self.committed.clone();
                self.open();
                self.check_offsets(true);
            }
            Op::Kill => {
                self.store.take().unwrap().simulate_crash();
                self.fs = self.fs.process_crash();
                self.reopen_after_crash(false);
            }
            Op::PowerLoss { seed } => {
                self.store.take().unwrap().simulate_crash();
                self.fs = self.fs.power_loss(seed);
                self.reopen_after_crash(true);
            }
            Op::FailSync { after } => {
                let message = self.next_message(0, 0, 0, 10);
                self.fs.fail_syncs_after(Some(after));
                let result = self.store().put_with(&message, Durability::Sync);
                self.fs.fail_syncs_after(None);
                match result {
                    // Acknowledged: its own sync succeeded. (A background sync, of a queue or
                    // a delivery, may still have failed after it and poisoned the store.)
                    Ok(receipt) => {
                        self.acked.push(Acked::from_receipt(message, &receipt));
                        self.mark_all_durable();
                    }
                    Err(err) => {
                        // A failed sync (of the log, or of the directory while a segment
                        // is created) poisons the store; nothing else fails a put here.
                        assert!(
                            self.store().stats().poisoned,
                            "a put failed without poisoning the store: {err}"
                        );
                        self.maybe = Some(message);
                    }
                }
                if self.store().stats().poisoned {
                    self.poisonings += 1;
                    // Nothing more is acknowledged, even with the disk working again.
                    let later = self.next_message(1, 1, 0, 1);
                    let refused = self.store().put_with(&later, Durability::Buffered);
                    assert!(matches!(refused, Err(Error::Poisoned)), "{refused:?}");
                    assert!(matches!(self.store().flush(), Err(Error::Poisoned)));
                    self.store.take().unwrap().simulate_crash();
                    self.fs = self.fs.process_crash();
                    self.reopen_after_crash(false);
                }
            }
        }
    }

    /// Reopens after a crash and brings the model to what must have survived.
    fn reopen_after_crash(&mut self, power_loss: bool) {
        self.open();
        let log_end = self.store().recovery_report().log_end_offset;
        if power_loss {
            for a in &self.acked {
                assert!(
                    !a.durable || a.id < log_end,
                    "lost {:?} (id {}), acknowledged durable; log end {log_end}",
                    String::from_utf8_lossy(&a.message.body[..8.min(a.message.body.len())]),
                    a.id
                );
            }
            // Recovery keeps a prefix of the log.
            self.acked.retain(|a| a.id < log_end);
            // A cancel not yet durable survived if its record lies below the recovered end,
            // and is lost if its record started at or after it; in between, the check learns.
            for a in &mut self.acked {
                if let Cancel::Unsynced { from, to } = a.cancel {
                    a.cancel = if log_end >= to {
                        self.unsynced_cancels_kept += 1;
                        Cancel::Durable
                    } else if from.is_some_and(|from| log_end <= from) {
                        self.unsynced_cancels_lost += 1;
                        Cancel::None
                    } else {
                        Cancel::Unsure
                    };
                }
            }
        } else {
            assert!(
                self.acked.iter().all(|a| a.id < log_end),
                "a process crash lost a record"
            );
        }
        // Whatever survived was synced by recovery (an `Unsure` cancel, if it survived, too).
        self.mark_all_durable();
        if let Some(maybe) = self.maybe.take() {
            // A plain message: visible at once if it survived.
            self.settle();
            let found = self.read_all().into_iter().find(|m| m.body == maybe.body);
            if let Some(m) = found {
                self.acked.push(Acked {
                    id: m.id.0,
                    queue: m.queue,
                    queue_offset: Some(m.queue_offset),
                    due_ms: None,
                    delayed: false,
                    entry_tier: None,
                    seen: true,
                    cancel: Cancel::None,
                    message: maybe,
                    durable: true,
                });
            }
        }
        self.check_offsets(!power_loss);
    }

    /// Committed offsets after a reopen: what was persisted (never more); after a power loss,
    /// possibly lowered to a queue's recovered end.
    fn check_offsets(&mut self, exact: bool) {
        for (topic, name) in TOPICS.iter().enumerate() {
            for queue in 0..QUEUES {
                let key = (topic, queue);
                let got = self.store().committed_offset(GROUP, name, queue);
                let persisted = self.persisted.get(&key).copied();
                if exact {
                    assert_eq!(got, persisted, "committed offset of {key:?}");
                } else {
                    assert!(
                        got.unwrap_or(0) <= persisted.unwrap_or(0),
                        "{key:?}: {got:?} > {persisted:?}"
                    );
                }
                match got {
                    Some(offset) => {
                        self.committed.insert(key, offset);
                        self.persisted.insert(key, offset);
                    }
                    None => {
                        self.committed.remove(&key);
                        self.persisted.remove(&key);
                    }
                }
            }
        }
    }

    /// Waits (bounded) until everything visible is dispatched and nothing due is undelivered.
    fn settle(&self) {
        let store = self.store();
        let now = self.clock.now_ms();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let stats = store.stats();
            let visible_end = match self.sync_mode {
                SyncMode::Sync => stats.durable_end_offset,
                SyncMode::Async => stats.written_end_offset,
            };
            let due_pending = stats.next_due_ms.is_some_and(|due| due <= now);
            if !due_pending && stats.dispatched_end_offset >= visible_end {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the store did not settle: {stats:?}"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn read_all(&self) -> Vec<StoredMessage> {
        let mut out = Vec::new();
        for topic in TOPICS {
            for queue in 0..QUEUES {
                let mut from = 0;
                loop {
                    let batch = self.store().pull(topic, queue, from, 256).unwrap();
                    let Some(last) = batch.last() else { break };
                    from = last.queue_offset + 1;
                    out.extend(batch);
                }
            }
        }
        out
    }

    /// Compares the store with the model, and learns what only the store can tell: which
    /// messages were delivered, and whether a cancel a power loss may have taken survived.
    fn check(&mut self) {
        self.settle();
        let now = self.clock.now_ms();
        let stats = self.store().stats();
        assert!(!stats.poisoned);
        let visible_end = match self.sync_mode {
            SyncMode::Sync => stats.durable_end_offset,
            SyncMode::Async => stats.written_end_offset,
        };
        let got = self.read_all();
        let mut by_body: BTreeMap<&[u8], Vec<&StoredMessage>> = BTreeMap::new();
        for m in &got {
            by_body.entry(&m.body).or_default().push(m);
        }
        let (mut lost, mut kept) = (0, 0);
        let mut delivered_by_tier = [0; TIER_COUNT as usize];
        for a in &mut self.acked {
            let due = a.due_ms.is_none_or(|d| d <= now);
            let must_see = a.id < visible_end && due;
            let copies = by_body
                .remove(a.message.body.as_slice())
                .unwrap_or_default();
            let what = format!(
                "message id {} ({} / {:?}, due {:?}, now {now}, {:?})",
                a.id, a.message.topic, a.queue, a.due_ms, a.cancel
            );
            if a.due_ms.is_some_and(|d| d > now) {
                assert!(copies.is_empty(), "{what}: delivered early");
            }
            match a.cancel {
                Cancel::Durable | Cancel::Unsynced { .. } => {
                    assert!(copies.is_empty(), "{what}: delivered after Cancelled");
                }
                Cancel::Unsure => {
                    assert!(copies.len() <= 1, "{what}: seen {} times", copies.len());
                    if copies.len() == 1 {
                        // The power loss took the cancel.
                        lost += 1;
                        a.cancel = Cancel::None;
                    } else if must_see {
                        // Due and visible, yet not delivered: the cancel survived.
                        kept += 1;
                        a.cancel = Cancel::Durable;
                    }
                }
                Cancel::None if must_see => {
                    assert_eq!(copies.len(), 1, "{what}: seen {} times", copies.len());
                }
                Cancel::None => {
                    assert!(copies.len() <= 1, "{what}: seen {} times", copies.len());
                }
            }
            if !a.seen && !copies.is_empty() {
                a.seen = true;
                if let Some(tier) = a.entry_tier {
                    delivered_by_tier[tier] += 1;
                }
            }
            for m in copies {
                assert_eq!(m.id.0, a.id, "{what}: id");
                assert_eq!(m.topic, a.message.topic, "{what}");
                assert_eq!(m.queue, a.queue, "{what}");
                assert_eq!(m.key, a.message.key, "{what}");
                assert_eq!(m.properties, a.message.properties, "{what}");
                assert_eq!(m.due_ms, a.due_ms, "{what}");
                if let Some(offset) = a.queue_offset {
                    assert_eq!(m.queue_offset, offset, "{what}: queue offset");
                }
                if let (Some(due), Some(at)) = (m.due_ms, m.delivered_ms) {
                    assert!(at >= due, "{what}: delivered at {at}");
                }
            }
        }
        self.unsynced_cancels_lost += lost;
        self.unsynced_cancels_kept += kept;
        self.unsynced_cancels_learned += lost + kept;
        for (sum, n) in self.delivered_by_tier.iter_mut().zip(delivered_by_tier) {
            *sum += n;
        }
        let phantoms: Vec<String> = by_body
            .keys()
            .map(|b| String::from_utf8_lossy(&b[..b.len().min(12)]).into_owned())
            .collect();
        assert!(
            phantoms.is_empty(),
            "messages that were never acknowledged: {phantoms:?}"
        );
        for (key, offset) in &self.committed {
            let got = self.store().committed_offset(GROUP, TOPICS[key.0], key.1);
            assert_eq!(got, Some(*offset), "committed offset of {key:?}");
        }
    }
}

/// Steps run, by kind, over every case of a suite (for its figures line).
#[derive(Debug, Default)]
struct Figures {
    cases: u64,
    steps: u64,
    puts: u64,
    delayed_puts: u64,
    cancels: u64,
    /// Answers: `Cancelled`, `AlreadyDelivered`, `NotFound`.
    cancel_answers: [u64; 3],
    reopens: u64,
    kills: u64,
    power_losses: u64,
    poisoned: u64,
    unpoisoned_failures: u64,
    lost_buffered: u64,
    unsynced_cancels_lost: u64,
    unsynced_cancels_kept: u64,
    unsynced_cancels_learned: u64,
    delivered_by_tier: [u64; TIER_COUNT as usize],
}

fn run(sync_mode: SyncMode, ops: &[Op], figures: &mut Figures) {
    let mut harness = Harness::new(sync_mode);
    figures.cases += 1;
    for op in ops {
        figures.steps += 1;
        let before = harness.acked.len();
        match op {
            Op::Put { .. } => figures.puts += 1,
            Op::PutDelay { .. } | Op::PutAt { .. } => figures.delayed_puts += 1,
            Op::Cancel { .. } => figures.cancels += 1,
            Op::Reopen => figures.reopens += 1,
            Op::Kill => figures.kills += 1,
            Op::PowerLoss { .. } => figures.power_losses += 1,
            Op::FailSync { .. } | Op::Advance { .. } | Op::PullCommit { .. } | Op::Flush => {}
        }
        harness.apply(op);
        if let Op::PowerLoss { .. } = op {
            figures.lost_buffered += (before - harness.acked.len()) as u64;
        }
        harness.check();
    }
    figures.poisoned += harness.poisonings;
    figures.unpoisoned_failures += harness.unpoisoned_failures;
    for (sum, n) in figures
        .cancel_answers
        .iter_mut()
        .zip(harness.cancel_answers)
    {
        *sum += n;
    }
    figures.unsynced_cancels_lost += harness.unsynced_cancels_lost;
    figures.unsynced_cancels_kept += harness.unsynced_cancels_kept;
    figures.unsynced_cancels_learned += harness.unsynced_cancels_learned;
    for (sum, n) in figures
        .delivered_by_tier
        .iter_mut()
        .zip(harness.delivered_by_tier)
    {
        *sum += n;
    }
    if let Some(store) = harness.store.take() {
        store.close().unwrap();
    }
}

/// Runs proptest's default number of cases (`PROPTEST_CASES` overrides it) and prints the
/// suite's figures; a failure is shrunk to a minimal sequence of steps and saved.
fn suite(sync_mode: SyncMode) {
    let config = proptest::test_runner::Config {
        source_file: Some(file!()),
        ..proptest::test_runner::Config::default()
    };
    let mut runner = proptest::test_runner::TestRunner::new(config);
    let figures = std::cell::RefCell::new(Figures::default());
    let result = runner.run(&proptest::collection::vec(op(), 1..40), |ops| {
        run(sync_mode, &ops, &mut figures.borrow_mut());
        Ok(())
    });
    let f = figures.into_inner();
    let [cancelled, already_delivered, not_found] = f.cancel_answers;
    println!(
        "model mode={sync_mode:?} cases={} steps={} puts={} delayed_puts={} cancels={} cancelled={} already_delivered={} not_found={} reopens={} kills={} power_losses={} poisoned_by_failed_sync={} known_gap_failed_without_poison={} buffered_lost_to_power_loss={} unsynced_cancels_lost_to_power_loss={} unsynced_cancels_kept_through_power_loss={} (learned_from_store={}) delivered_by_entry_tier={:?} result={}",
        f.cases, f.steps, f.puts, f.delayed_puts, f.cancels, cancelled, already_delivered,
        not_found, f.reopens, f.kills, f.power_losses, f.poisoned,
        f.unpoisoned_failures, f.lost_buffered, f.unsynced_cancels_lost,
        f.unsynced_cancels_kept,
        f.unsynced_cancels_learned,
        &f.delivered_by_tier[..5],
        if result.is_ok() { "ok" } else { "FAILED" }
    );
    if let Err(err) = result {
        panic!("{err}");
    }
}

#[test]
fn store_matches_model_async() {
    suite(SyncMode::Async);
}

#[test]
fn store_matches_model_sync() {
    suite(SyncMode::Sync);
}

#[test]
fn model_harness_sees_a_plain_sequence() {
    // A fixed sequence through every kind of step, so a broken harness fails plainly.
    let ops = [
        Op::Put {
            topic: 0,
            queue: 0,
            level: 0,
            pad_bytes: 10,
            durable: true,
        },
        Op::Put {
            topic: 1,
            queue: 1,
            level: 1,
            pad_bytes: 10,
            durable: false,
        },
        Op::PullCommit {
            topic: 0,
            queue: 0,
            max: 5,
        },
        Op::Advance { ms: 1_500 },
        Op::Flush,
        Op::Put {
            topic: 0,
            queue: 1,
            level: 2,
            pad_bytes: 3_000,
            durable: false,
        },
        Op::PowerLoss { seed: 7 },
        Op::Kill,
        Op::Reopen,
        Op::FailSync { after: 0 },
        Op::Advance { ms: 6_000 },
    ];
    for mode in [SyncMode::Async, SyncMode::Sync] {
        run(mode, &ops, &mut Figures::default());
    }
}

#[test]
fn model_harness_sees_delays_and_cancels() {
    // A fixed sequence through the delayed puts and every cancel answer, in both modes.
    let put_delay = |delay_ms, durable| Op::PutDelay {
        topic: 0,
        queue: 1,
        delay_ms,
        pad_bytes: 20,
        durable,
    };
    let put_at = |at_offset_ms, durable| Op::PutAt {
        topic: 1,
        queue: 0,
        at_offset_ms,
        pad_bytes: 30,
        durable,
    };
    let cancel = |pick, durable| Op::Cancel { pick, durable };
    let ops = [
        put_delay(40, true),         // 0: tier 1, then tier 0
        put_delay(1_500_000, false), // 1: tier 4 (25 min)
        put_at(-5, false),           // 2: past: delivered at once
        put_delay(0, false),         // 3: delivered at once
        put_at(20_000, false),       // 4: tier 2
        Op::Put {
            topic: 1,
            queue: 1,
            level: 1,
            pad_bytes: 10,
            durable: false,
        }, // 5: level 1
        cancel(Pick::Any(1), false), // Cancelled, not durable
        cancel(Pick::Any(2), true),  // AlreadyDelivered (never delayed)
        cancel(Pick::InsideRecord(0), true), // NotFound
        cancel(Pick::PastEnd, false), // NotFound
        Op::Advance { ms: 100 },
        cancel(Pick::Any(0), false), // AlreadyDelivered (seen)
        cancel(Pick::Any(4), true),  // Cancelled, durable: everything before too
        Op::PowerLoss { seed: 3 },
        cancel(Pick::Any(1), false), // Cancelled again
        put_delay(3_000, false),
        cancel(Pick::Delayed(4), false), // 6th delayed message: Cancelled, not durable
        Op::PowerLoss { seed: 11 },
        Op::Kill,
        Op::Advance { ms: 2_000_000 },
        Op::Reopen,
    ];
    for mode in [SyncMode::Async, SyncMode::Sync] {
        let mut figures = Figures::default();
        run(mode, &ops, &mut figures);
        assert_eq!(figures.cancel_answers, [4, 2, 2], "{mode:?}");
    }
}

/// A case proptest found in CI (1 run in ~6 failed): `Store::stats` read the queue counts
/// before the dispatched end, so a batch dispatched between the two reads made a due level
/// message look delivered and `settle` returned before its delivery.
#[test]
fn model_regression_stats_snapshot_after_a_late_sync() {
    let ops = [
        Op::FailSync { after: 2 },
        Op::Put {
            topic: 1,
            queue: 0,
            level: 1,
            pad_bytes: 1092,
            durable: true,
        },
        Op::Reopen,
        Op::Put {
            topic: 0,
            queue: 1,
            level: 0,
            pad_bytes: 77,
            durable: true,
        },
        Op::Reopen,
        Op::Advance { ms: 6189 },
        Op::Put {
            topic: 0,
            queue: 1,
            level: 2,
            pad_bytes: 1934,
            durable: true,
        },
        Op::Put {
            topic: 0,
            queue: 1,
            level: 1,
            pad_bytes: 2221,
            durable: true,
        },
        Op::Put {
            topic: 0,
            queue: 1,
            level: 1,
            pad_bytes: 2292,
            durable: false,
        },
        Op::PullCommit {
            topic: 0,
            queue: 1,
            max: 3,
        },
        Op::Advance { ms: 4812 },
        Op::Put {
            topic: 1,
            queue: 0,
            level: 2,
            pad_bytes: 779,
            durable: true,
        },
        Op::Advance { ms: 677 },
        Op::Put {
            topic: 1,
            queue: 0,
            level: 1,
            pad_bytes: 1910,
            durable: false,
        },
        Op::Advance { ms: 1886 },
        Op::Put {
            topic: 0,
            queue: 1,
            level: 0,
            pad_bytes: 1617,
            durable: false,
        },
        Op::FailSync { after: 1 },
        Op::FailSync { after: 0 },
        Op::Kill,
        Op::Put {
            topic: 0,
            queue: 1,
            level: 2,
            pad_bytes: 1118,
            durable: false,
        },
        Op::Put {
            topic: 1,
            queue: 0,
            level: 1,
            pad_bytes: 1011,
            durable: true,
        },
        Op::Put {
            topic: 1,
            queue: 0,
            level: 2,
            pad_bytes: 128,
            durable: true,
        },
        Op::PullCommit {
            topic: 0,
            queue: 1,
            max: 5,
        },
        Op::Advance { ms: 4843 },
        Op::Put {
            topic: 0,
            queue: 1,
            level: 0,
            pad_bytes: 449,
            durable: false,
        },
        Op::Put {
            topic: 0,
            queue: 0,
            level: 2,
            pad_bytes: 453,
            durable: true,
        },
        Op::Advance { ms: 2388 },
        Op::Advance { ms: 2292 },
        Op::Reopen,
        Op::Put {
            topic: 1,
            queue: 0,
            level: 1,
            pad_bytes: 615,
            durable: false,
        },
        Op::Put {
            topic: 0,
            queue: 0,
            level: 0,
            pad_bytes: 2268,
            durable: true,
        },
        Op::Put {
            topic: 0,
            queue: 1,
            level: 1,
            pad_bytes: 1637,
            durable: true,
        },
        Op::Put {
            topic: 0,
            queue: 1,
            level: 2,
            pad_bytes: 1306,
            durable: false,
        },
    ];
    run(SyncMode::Sync, &ops, &mut Figures::default());
}

/// Found by the model soak once cancels joined it (Async mode, 1 case of a 1,000-case run; this
/// sequence failed in 37 of 500 power-loss seeds before the fix). The delivery thread appends a
/// delivery record and then sets the message's decision slot; dispatch may set the same slot
/// from the record in between, and a checkpoint (the flush) may then sync the slots and cover
/// the record before the delivery thread's own, identical, write lands. That write stays
/// unsynced; a power loss may garble it, and recovery replays nothing below the checkpoint, so
/// the slot of a delivered message read as undecided: a later cancel answered `Cancelled` for a
/// message consumers had got (a cancel's own slot was exposed the same way). Checkpoints now
/// take the decide lock while they snapshot. The race needs the delivery thread descheduled at
/// that point, so the sequence runs under many seeds.
#[test]
fn model_regression_decision_slot_written_after_a_checkpoint() {
    for seed in 0..200 {
        let ops = [
            Op::PutDelay {
                topic: 0,
                queue: 1,
                delay_ms: 749,
                pad_bytes: 79,
                durable: false,
            },
            Op::PutDelay {
                topic: 1,
                queue: 0,
                delay_ms: 1236,
                pad_bytes: 1511,
                durable: false,
            },
            Op::Advance { ms: 5263 },
            Op::Flush,
            Op::PowerLoss {
                seed: 10245056968623706636 + seed,
            },
            Op::Cancel {
                pick: Pick::Any(0),
                durable: false,
            },
            Op::Cancel {
                pick: Pick::Any(1),
                durable: false,
            },
        ];
        run(SyncMode::Async, &ops, &mut Figures::default());
    }
}
