#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Cancellation: one definite outcome, never delivered after `Cancelled`, durable in sync
//! mode through kills and power loss, consistent with consumers when racing delivery.

mod common;
mod support;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use delaystore::io::{FileSystem, SimFs};
use delaystore::recovery::CheckpointUse;
use delaystore::{
    CancelOutcome, Durability, ManualClock, Message, MessageId, Options, Store, SyncMode,
};
use support::{Rng, Tail};

const T0: u64 = 1_700_000_000_000;

fn options(clock: &ManualClock) -> Options {
    Options {
        clock: Arc::new(clock.clone()),
        delay_levels: Some("1s 10s".into()),
        ..common::small_options()
    }
}

/// Moves the clock and waits until `want` messages of `topic` arrived; returns their ids.
fn delivered_at(
    store: &Store,
    clock: &ManualClock,
    topic: &str,
    now: u64,
    want: usize,
) -> Vec<MessageId> {
    clock.set_ms(now);
    let mut tail = Tail::new(store, topic);
    tail.wait_for(store, want);
    tail.settle(store);
    tail.ids()
}

#[test]
fn cancel_before_due_is_never_delivered_and_answers_stay_definite() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let store = common::open(dir.path(), options(&clock));
    let keep = store
        .put(&Message::new("c", "keep").with_delay_ms(5_000))
        .unwrap();
    let timer = store
        .put(&Message::new("c", "timer").with_delay_ms(5_000))
        .unwrap();
    let level = store
        .put(&Message::new("c", "level").with_delay_level(1))
        .unwrap();
    let plain = store.put(&Message::new("c", "plain")).unwrap();
    assert_eq!(store.cancel(timer.id).unwrap(), CancelOutcome::Cancelled);
    assert_eq!(store.cancel(level.id).unwrap(), CancelOutcome::Cancelled);
    // Repeated: the same answer.
    assert_eq!(store.cancel(timer.id).unwrap(), CancelOutcome::Cancelled);
    // Never delayed: it was visible from its put.
    assert_eq!(
        store.cancel(plain.id).unwrap(),
        CancelOutcome::AlreadyDelivered
    );
    // Not a message: past the end, inside a record, far away.
    assert_eq!(
        store.cancel(MessageId(u64::MAX)).unwrap(),
        CancelOutcome::NotFound
    );
    assert_eq!(
        store.cancel(MessageId(keep.id.0 + 1)).unwrap(),
        CancelOutcome::NotFound
    );
    assert_eq!(
        store.cancel(MessageId(1 << 40)).unwrap(),
        CancelOutcome::NotFound
    );

    let got = delivered_at(&store, &clock, "c", T0 + 60_000, 2);
    let got: HashSet<MessageId> = got.into_iter().collect();
    assert_eq!(got, HashSet::from([keep.id, plain.id]));
    assert_eq!(
        store.cancel(keep.id).unwrap(),
        CancelOutcome::AlreadyDelivered
    );
    assert_eq!(store.cancel(timer.id).unwrap(), CancelOutcome::Cancelled);
    assert_eq!(store.stats().cancelled, 2);
    store.close().unwrap();

    // The answers survive a reopen.
    let store = common::open(dir.path(), options(&clock));
    assert_eq!(store.cancel(timer.id).unwrap(), CancelOutcome::Cancelled);
    assert_eq!(store.cancel(level.id).unwrap(), CancelOutcome::Cancelled);
    assert_eq!(
        store.cancel(keep.id).unwrap(),
        CancelOutcome::AlreadyDelivered
    );
    store.close().unwrap();
}

#[test]
fn cancel_while_hopping_through_the_tiers() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let store = common::open(dir.path(), options(&clock));
    let mut rng = Rng::new(0x00ca_9ce1);
    let mut ids = Vec::new();
    for seq in 0..300u64 {
        let delay_ms = 1 + rng.below(3 * 24 * 3600 * 1000);
        let receipt = store
            .put(&Message::new("h", format!("{seq}")).with_delay_ms(delay_ms))
            .unwrap();
        ids.push((receipt.id, receipt.due_ms.unwrap()));
    }
    // Let every message hop at least once, then cancel half of those still pending.
    let now = T0 + 24 * 3600 * 1000;
    let early: Vec<MessageId> = ids
        .iter()
        .filter(|(_, d)| *d <= now)
        .map(|(id, _)| *id)
        .collect();
    let got = delivered_at(&store, &clock, "h", now, early.len());
    assert_eq!(got.len(), early.len());
    let mut cancelled = HashSet::new();
    for (id, due) in &ids {
        let outcome = store.cancel(*id).unwrap();
        if *due <= now {
            assert_eq!(outcome, CancelOutcome::AlreadyDelivered, "{id}");
        } else {
            assert_eq!(outcome, CancelOutcome::Cancelled, "{id}");
            cancelled.insert(*id);
        }
        if cancelled.len() >= 100 {
            break;
        }
    }
    let all = delivered_at(
        &store,
        &clock,
        "h",
        T0 + 4 * 24 * 3600 * 1000,
        300 - cancelled.len(),
    );
    assert_eq!(all.len(), 300 - cancelled.len());
    assert!(
        all.iter().all(|id| !cancelled.contains(id)),
        "a cancelled message was delivered"
    );
    store.close().unwrap();
}

/// Cancels race the delivery of messages all due at once: every `Cancelled` message is never
/// delivered, every `AlreadyDelivered` one is, and nothing else arrives.
#[test]
fn cancel_racing_delivery_resolves_to_exactly_one_outcome() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let store = Arc::new(common::open(dir.path(), options(&clock)));
    let mut ids = Vec::new();
    for seq in 0..3_000u64 {
        let message = Message::new("race", format!("{seq}"));
        let message = if seq % 2 == 0 {
            message.with_delay_ms(777)
        } else {
            message.with_delay_level(1)
        };
        ids.push(store.put(&message).unwrap().id);
    }
    store.flush().unwrap();
    let canceller = {
        let store = store.clone();
        let ids = ids.clone();
        std::thread::spawn(move || {
            let mut outcomes = HashMap::new();
            for id in ids.iter().rev() {
                outcomes.insert(*id, store.cancel(*id).unwrap());
            }
            outcomes
        })
    };
    clock.set_ms(T0 + 1_000);
    let outcomes = canceller.join().unwrap();
    let delivered_ids: HashSet<MessageId> = outcomes
        .iter()
        .filter(|(_, o)| **o == CancelOutcome::AlreadyDelivered)
        .map(|(id, _)| *id)
        .collect();
    assert!(outcomes.values().all(|o| *o != CancelOutcome::NotFound));
    let mut tail = Tail::new(&store, "race");
    tail.wait_for(&store, delivered_ids.len());
    tail.settle(&store);
    let got: HashSet<MessageId> = tail.ids().into_iter().collect();
    assert_eq!(tail.got.len(), got.len(), "duplicates");
    assert_eq!(
        got, delivered_ids,
        "consumers disagree with the cancel outcomes"
    );
    println!(
        "race: cancelled={} already_delivered={}",
        outcomes.len() - delivered_ids.len(),
        delivered_ids.len()
    );
}

/// A cancel acknowledged in sync mode holds through a kill and through power loss at any
/// moment after it; the messages not cancelled are still delivered.
#[test]
fn sync_cancel_survives_kill_and_power_loss() {
    for seed in 0..24u64 {
        let clock = ManualClock::new(T0);
        let fs = SimFs::new();
        let dir = std::path::Path::new("/store");
        let opts = |fs: &SimFs| Options {
            fs: Arc::new(fs.clone()) as Arc<dyn FileSystem>,
            sync_mode: SyncMode::Sync,
            ..options(&clock)
        };
        let store = Store::open(dir, opts(&fs)).unwrap();
        let mut rng = Rng::new(seed);
        let mut kept = Vec::new();
        let mut cancelled = Vec::new();
        for seq in 0..40u64 {
            let receipt = store
                .put(&Message::new("p", format!("{seq}")).with_delay_ms(1 + rng.below(90_000)))
                .unwrap();
            if rng.one_in(2) {
                assert_eq!(
                    store.cancel_with(receipt.id, Durability::Sync).unwrap(),
                    CancelOutcome::Cancelled
                );
                cancelled.push(receipt.id);
            } else {
                kept.push(receipt.id);
            }
        }
        // More writes after the acknowledgements: a crash may land anywhere among them.
        for seq in 0..rng.below(20) {
            store
                .put_with(
                    &Message::new("other", format!("{seq}")),
                    Durability::Buffered,
                )
                .unwrap();
        }
        let after = if seed % 2 == 0 {
            store.simulate_crash();
            fs.process_crash()
        } else {
            let image = fs.power_loss(seed);
            store.simulate_crash();
            image
        };
        let store = Store::open(dir, opts(&after)).unwrap();
        for id in &cancelled {
            assert_eq!(
                store.cancel(*id).unwrap(),
                CancelOutcome::Cancelled,
                "seed {seed}"
            );
        }
        let got = delivered_at(&store, &clock, "p", T0 + 100_000, kept.len());
        let got: HashSet<MessageId> = got.into_iter().collect();
        assert_eq!(got, kept.iter().copied().collect(), "seed {seed}");
        store.close().unwrap();
    }
}

/// Regression (found while pinning the decision-slot gap in `tests/sweep.rs`): dispatch named
/// only indexed records as the checkpoint's last record, so a log ending with a cancel (or a
/// discard) made the checkpoint of a clean close look like it ended past its last record:
/// every reopen rejected it, scanned the whole log and rebuilt every queue, and the recovery
/// report claimed a loss.
#[test]
fn a_clean_close_after_a_cancel_or_discard_keeps_its_checkpoint() {
    let clock = ManualClock::new(T0);
    let fs = SimFs::new();
    let dir = std::path::Path::new("/store");
    let opts = || Options {
        fs: Arc::new(fs.clone()) as Arc<dyn FileSystem>,
        ..options(&clock)
    };
    let store = Store::open(dir, opts()).unwrap();
    let receipt = store
        .put(&Message::new("p", "cancelled").with_delay_level(1))
        .unwrap();
    assert_eq!(store.cancel(receipt.id).unwrap(), CancelOutcome::Cancelled);
    // The log ends with the cancel.
    store.close().unwrap();
    let store = Store::open(dir, opts()).unwrap();
    assert_eq!(
        store.recovery_report().checkpoint,
        CheckpointUse::Used {
            clean_shutdown: true
        },
        "after a cancel: {:?}",
        store.recovery_report()
    );
    // The log ends with the discard that consumes the cancelled entry once it is due.
    clock.advance_ms(1_000);
    let written = store.stats().written_end_offset;
    assert!(
        support::eventually(
            || {
                let stats = store.stats();
                stats.written_end_offset > written
                    && stats.dispatched_end_offset >= stats.written_end_offset
            },
            &true,
        ),
        "the cancelled entry was not discarded"
    );
    store.close().unwrap();
    let store = Store::open(dir, opts()).unwrap();
    assert_eq!(
        store.recovery_report().checkpoint,
        CheckpointUse::Used {
            clean_shutdown: true
        },
        "after a discard: {:?}",
        store.recovery_report()
    );
    store.close().unwrap();
}
