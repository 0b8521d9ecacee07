#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Arbitrary delays (`delay_ms`, `deliver_at_ms`) through the timer wheel, on a
//! [`ManualClock`]: due order, never early, millisecond precision, across reopens and crashes.

mod common;
mod support;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use delaystore::{Error, ManualClock, Message, MessageId, Options, Store};
use support::{eventually, Rng, Tail};

/// Start of every manual clock.
const T0: u64 = 1_700_000_000_000;
const DAY_MS: u64 = 24 * 3600 * 1000;

fn options(clock: &ManualClock) -> Options {
    Options {
        clock: Arc::new(clock.clone()),
        ..common::small_options()
    }
}

/// Moves the clock to `now` and waits until exactly the messages due by then have arrived;
/// checks none arrived early.
fn step_to(
    store: &Store,
    clock: &ManualClock,
    tail: &mut Tail,
    due: &HashMap<MessageId, u64>,
    now: u64,
) {
    clock.set_ms(now);
    let want = due.values().filter(|d| **d <= now).count();
    let got = eventually(
        || {
            tail.poll(store);
            tail.got.len()
        },
        &want,
    );
    assert_eq!(got, want, "at {now}: {got} delivered, {want} due");
    for message in &tail.got {
        let due_ms = due[&message.id];
        assert_eq!(message.due_ms, Some(due_ms));
        // Due when stored: visible at once, never re-posted.
        let delivered_ms = message.delivered_ms.unwrap_or(message.store_ms);
        assert!(
            delivered_ms >= due_ms,
            "{} delivered at {delivered_ms}, due {due_ms}",
            message.id
        );
    }
}

#[test]
fn random_delays_up_to_ten_days_arrive_in_due_order_never_early() {
    const MESSAGES: u64 = 1_500;
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let store = common::open(dir.path(), options(&clock));
    let topic = "orders";
    let mut rng = Rng::new(0x7133_0001);
    let mut due = HashMap::new();
    for seq in 0..MESSAGES {
        let delay_ms = match seq % 4 {
            0 => rng.below(10 * DAY_MS),
            1 => rng.below(3_600_000),
            2 => rng.below(2_000),
            _ => rng.below(40),
        };
        let receipt = store
            .put(
                &Message::new(topic, format!("order {seq}"))
                    .with_queue(0)
                    .with_delay_ms(delay_ms),
            )
            .unwrap();
        assert_eq!(receipt.due_ms, Some(T0 + delay_ms));
        due.insert(receipt.id, T0 + delay_ms);
    }
    let mut tail = Tail::new(&store, topic);
    // Stop at a sample of exact due times, one ms before some of them, and random times.
    let mut stops: Vec<u64> = due.values().copied().filter(|_| rng.one_in(6)).collect();
    stops.extend(due.values().filter(|_| rng.one_in(20)).map(|d| d - 1));
    stops.extend((0..60).map(|_| T0 + rng.below(10 * DAY_MS)));
    stops.push(T0 + 10 * DAY_MS);
    stops.sort_unstable();
    for now in stops.into_iter().filter(|now| *now >= T0) {
        step_to(&store, &clock, &mut tail, &due, now);
    }
    assert_eq!(tail.got.len() as u64, MESSAGES);
    // Due order: each stop delivered exactly the messages due by then (checked in `step_to`),
    // so every message arrived after all messages due before the previous stop. Messages that
    // fall due between two stops arrive in any order.
    let stats = store.stats();
    assert_eq!(stats.pending_per_tier.iter().sum::<u64>(), 0);
    store.close().unwrap();
}

#[test]
fn millisecond_precision_and_same_millisecond_burst() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let store = common::open(dir.path(), options(&clock));
    let at = T0 + 3 * 3_600_000 + 1_234;
    let mut due = HashMap::new();
    for seq in 0..2_000u64 {
        let receipt = store
            .put(&Message::new("burst", format!("{seq}")).with_deliver_at_ms(at))
            .unwrap();
        due.insert(receipt.id, at);
    }
    let mut tail = Tail::new(&store, "burst");
    // Walk up in growing strides, then to one ms before: nothing; then to the due ms: all.
    for now in [
        T0 + 1,
        T0 + 3_600_000,
        at - 40_000,
        at - 1_000,
        at - 20,
        at - 1,
    ] {
        step_to(&store, &clock, &mut tail, &due, now);
    }
    assert_eq!(tail.settle(&store), 0, "delivered early");
    step_to(&store, &clock, &mut tail, &due, at);
    assert_eq!(tail.got.len(), 2_000);
    assert!(tail.got.iter().all(|m| m.delivered_ms == Some(at)));
    store.close().unwrap();
}

#[test]
fn deliver_at_in_the_past_and_zero_delay_deliver_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let store = common::open(dir.path(), options(&clock));
    let past = store
        .put(
            &Message::new("now", "past")
                .with_queue(0)
                .with_deliver_at_ms(T0 - 5_000),
        )
        .unwrap();
    let zero = store
        .put(&Message::new("now", "zero").with_queue(0).with_delay_ms(0))
        .unwrap();
    assert_eq!(past.due_ms, Some(T0 - 5_000));
    assert_eq!(zero.due_ms, Some(T0));
    // Visible at once, in the topic queue, without the clock moving.
    let got = common::pull_all(&store, "now", 0, 0, 2);
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].id, past.id);
    assert_eq!(got[0].due_ms, Some(T0 - 5_000));
    assert_eq!(got[1].id, zero.id);
    store.close().unwrap();
}

#[test]
fn delays_beyond_the_maximum_and_conflicting_fields_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let store = common::open(
        dir.path(),
        Options {
            delay_ms_max: DAY_MS,
            ..options(&clock)
        },
    );
    let too_long = store.put(&Message::new("t", "x").with_delay_ms(DAY_MS + 1));
    assert!(matches!(
        too_long,
        Err(Error::DelayTooLong {
            delay_ms,
            delay_ms_max: DAY_MS
        }) if delay_ms == DAY_MS + 1
    ));
    let too_far = store.put(&Message::new("t", "x").with_deliver_at_ms(T0 + DAY_MS + 1));
    assert!(matches!(too_far, Err(Error::DelayTooLong { .. })));
    store
        .put(&Message::new("t", "x").with_delay_ms(DAY_MS))
        .unwrap();
    let both = store.put(&Message::new("t", "x").with_delay_ms(5).with_delay_level(1));
    assert!(matches!(both, Err(Error::InvalidMessage { .. })));
    let bad_max = Store::open(
        dir.path().join("other"),
        Options {
            delay_ms_max: 20 * 365 * DAY_MS,
            ..options(&clock)
        },
    );
    assert!(matches!(
        bad_max,
        Err(Error::InvalidOptions {
            name: "delay_ms_max",
            ..
        })
    ));
    store.close().unwrap();
}

#[test]
fn levels_and_arbitrary_delays_work_side_by_side() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let store = common::open(
        dir.path(),
        Options {
            delay_levels: Some("1s 5s".into()),
            ..options(&clock)
        },
    );
    let mut due = HashMap::new();
    for (seq, message) in [
        Message::new("mix", "level 1").with_delay_level(1),
        Message::new("mix", "3 s").with_delay_ms(3_000),
        Message::new("mix", "level 2").with_delay_level(2),
        Message::new("mix", "1.5 s").with_delay_ms(1_500),
    ]
    .into_iter()
    .enumerate()
    {
        let receipt = store.put(&message.with_queue(0)).unwrap();
        due.insert(receipt.id, receipt.due_ms.unwrap());
        assert!(receipt.due_ms.is_some(), "{seq}");
    }
    let mut tail = Tail::new(&store, "mix");
    for now in [
        T0 + 999,
        T0 + 1_000,
        T0 + 1_500,
        T0 + 2_999,
        T0 + 3_000,
        T0 + 5_000,
    ] {
        step_to(&store, &clock, &mut tail, &due, now);
    }
    let bodies: Vec<String> = tail
        .got
        .iter()
        .map(|m| String::from_utf8(m.body.clone()).unwrap())
        .collect();
    assert_eq!(bodies, ["level 1", "1.5 s", "3 s", "level 2"]);
    store.close().unwrap();
}

/// Reopening (cleanly, or after a crash) while messages sit at every tier and hop between
/// them loses none and duplicates none.
#[test]
fn reopen_and_crash_while_hopping_deliver_each_message_once() {
    const MESSAGES: u64 = 800;
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let mut rng = Rng::new(0x7133_0002);
    let mut due = HashMap::new();
    let mut store = common::open(dir.path(), options(&clock));
    for seq in 0..MESSAGES {
        let delay_ms = 1 + rng.below(if seq % 2 == 0 { 50_000 } else { 3 * DAY_MS });
        let receipt = store
            .put(
                &Message::new("hops", format!("{seq}"))
                    .with_queue(0)
                    .with_delay_ms(delay_ms),
            )
            .unwrap();
        due.insert(receipt.id, receipt.due_ms.unwrap());
    }
    let mut stops: Vec<u64> = (0..40).map(|_| T0 + rng.below(3 * DAY_MS)).collect();
    stops.extend((0..20).map(|_| T0 + rng.below(50_000)));
    stops.push(T0 + 3 * DAY_MS + 1);
    stops.sort_unstable();
    for (round, now) in stops.into_iter().enumerate() {
        let mut tail = Tail::new(&store, "hops");
        step_to(&store, &clock, &mut tail, &due, now);
        // Exactly once so far: every delivered id once.
        let mut seen: BTreeMap<MessageId, usize> = BTreeMap::new();
        for message in &tail.got {
            *seen.entry(message.id).or_default() += 1;
        }
        assert!(seen.values().all(|n| *n == 1), "duplicate at {now}");
        store = match round % 3 {
            0 => {
                store.simulate_crash();
                common::open(dir.path(), options(&clock))
            }
            1 => {
                store.close().unwrap();
                common::open(dir.path(), options(&clock))
            }
            _ => store,
        };
    }
    let mut tail = Tail::new(&store, "hops");
    tail.poll(&store);
    assert_eq!(tail.got.len() as u64, MESSAGES);
    store.close().unwrap();
}

#[test]
fn stats_count_pending_timer_messages_per_tier() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let store = common::open(dir.path(), options(&clock));
    for delay_ms in [10, 100, 5_000, 100_000, 10 * DAY_MS] {
        store
            .put(&Message::new("s", "x").with_delay_ms(delay_ms))
            .unwrap();
    }
    store.flush().unwrap();
    let stats = eventually(
        || store.stats().pending_per_tier,
        &vec![1, 1, 1, 1, 0, 1, 0, 0],
    );
    assert_eq!(stats, vec![1, 1, 1, 1, 0, 1, 0, 0]);
    assert_eq!(store.stats().next_due_ms, Some(T0 + 10));
    store.close().unwrap();
}

#[test]
fn due_outlook_counts_messages_per_upcoming_second() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let store = common::open(
        dir.path(),
        Options {
            delay_levels: Some("5s".into()),
            ..options(&clock)
        },
    );
    // 3 due in second 2, 1 in second 5 (a level), 2 in second 59, 1 beyond the window.
    for delay_ms in [2_000, 2_500, 2_999, 59_000, 59_999, 600_000] {
        store
            .put(&Message::new("o", "x").with_delay_ms(delay_ms))
            .unwrap();
    }
    store
        .put(&Message::new("o", "x").with_delay_level(1))
        .unwrap();
    store.flush().unwrap();
    let outlook = eventually(
        || store.due_outlook().due_per_second.iter().sum::<u64>(),
        &6,
    );
    assert_eq!(outlook, 6);
    let outlook = store.due_outlook();
    assert_eq!(outlook.due_per_second.len(), 60);
    assert_eq!(outlook.due_per_second[2], 3);
    assert_eq!(outlook.due_per_second[5], 1);
    assert_eq!(outlook.due_per_second[59], 2);
    assert_eq!((outlook.overdue, outlook.delivery_lag_ms), (0, 0));
    assert!(!outlook.truncated);
    store.close().unwrap();
}
