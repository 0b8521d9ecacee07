#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Delayed delivery, end to end through the public API, on a [`ManualClock`].
//!
//! Delivery is asynchronous: after moving the clock a test waits (bounded, in real time) for
//! what must arrive, and to show that something does *not* arrive it leaves the delivery
//! thread [`QUIET`] of real time and checks nothing came.

mod common;
mod support;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use delaystore::{
    Clock, Error, ManualClock, Message, MessageId, Options, PutReceipt, Store, StoredMessage,
};
use support::{eventually, Rng, Tail, QUIET, WAIT};

/// Start of every manual clock.
const T0: u64 = 1_700_000_000_000;
/// The delay table of these tests, and its delays in ms.
const TABLE: &str = "1s 5s 10s";
const DELAYS: [u64; 3] = [1_000, 5_000, 10_000];

fn options(clock: &ManualClock) -> Options {
    Options {
        delay_levels: Some(TABLE.into()),
        clock: Arc::new(clock.clone()),
        ..common::small_options()
    }
}

fn with_table(clock: &ManualClock, table: &str) -> Options {
    Options {
        delay_levels: Some(table.into()),
        ..options(clock)
    }
}

fn delay_of(level: u8) -> u64 {
    DELAYS[usize::from(level) - 1]
}

/// A keyed message with properties naming its sequence number and level.
fn delayed(topic: &str, seq: u64, level: u8) -> Message {
    Message::new(topic, format!("{topic}/{seq}/level-{level}"))
        .with_key(format!("key-{}", seq % 13))
        .with_property("seq", seq.to_string())
        .with_property("level", level.to_string())
        .with_delay_level(level)
}

/// Every message of `topic` visible now, queue by queue, from offset 0.
fn read_topic(store: &Store, topic: &str) -> Vec<StoredMessage> {
    let queues = store.queue_count(topic).unwrap();
    (0..queues)
        .flat_map(|queue| common::read_queue(store, topic, queue))
        .collect()
}

/// Ids seen more than once, with their counts.
fn duplicates(messages: &[StoredMessage]) -> BTreeMap<MessageId, usize> {
    let mut counts: BTreeMap<MessageId, usize> = BTreeMap::new();
    for message in messages {
        *counts.entry(message.id).or_default() += 1;
    }
    counts.retain(|_, count| *count > 1);
    counts
}

#[test]
fn never_early() {
    const MESSAGES: u64 = 240;
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let store = common::open(dir.path(), options(&clock));
    let topic = "never-early";
    let mut rng = Rng::new(0x00de_1a7e_d5ee_d001);
    let mut tail = Tail::new(&store, topic);
    let mut due: HashMap<MessageId, u64> = HashMap::new();
    let mut put = 0u64;
    let mut prev_now = clock.now_ms();
    for step in 0..10_000u64 {
        if put < MESSAGES {
            for _ in 0..rng.below(5).min(MESSAGES - put) {
                let level = rng.between(1, 3) as u8;
                let now = clock.now_ms();
                let receipt = common::put_acked(&store, &delayed(topic, put, level));
                assert_eq!(receipt.due_ms, Some(now + delay_of(level)), "put {put}");
                due.insert(receipt.id, now + delay_of(level));
                put += 1;
            }
        }
        // Mostly small random steps; now and then exactly to the next due time, or to 1 ms
        // before it, where an early delivery is given time to show up.
        let next_due = due.values().copied().filter(|&d| d > clock.now_ms()).min();
        let mut just_before = false;
        match (rng.below(8), next_due) {
            (0, Some(next)) => clock.set_ms(next),
            (1 | 2, Some(next)) if next - 1 > clock.now_ms() => {
                clock.set_ms(next - 1);
                just_before = true;
            }
            _ => clock.advance_ms(rng.below(300)),
        }
        let now = clock.now_ms();
        let expected = due.values().filter(|&&d| d <= now).count();
        let before = tail.got.len();
        tail.wait_for(&store, expected);
        if just_before || step.is_multiple_of(16) {
            tail.settle(&store);
        }
        for message in &tail.got[before..] {
            let want = *due.get(&message.id).expect("delivered an id never put");
            assert_eq!(message.due_ms, Some(want), "{:?}: due_ms", message.id);
            assert!(
                want <= now,
                "{:?} visible at clock {now}, before its due time {want}",
                message.id
            );
            assert!(
                want > prev_now,
                "{:?} due at {want} was not visible at clock {prev_now}",
                message.id
            );
            let delivered = message.delivered_ms.expect("delivered_ms");
            assert!(
                (want..=now).contains(&delivered),
                "{:?}: delivered_ms {delivered} outside [due {want}, clock {now}]",
                message.id
            );
        }
        assert_eq!(
            tail.got.len(),
            expected,
            "at clock {now}: {} visible, {expected} due",
            tail.got.len()
        );
        prev_now = now;
        if put >= MESSAGES && expected == due.len() {
            break;
        }
    }
    assert_eq!(put, MESSAGES);
    assert_eq!(tail.got.len(), due.len(), "not everything was delivered");
    assert!(duplicates(&tail.got).is_empty(), "delivered twice");
}

#[test]
fn fifo_per_level() {
    const MESSAGES: u64 = 400;
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let store = common::open(dir.path(), options(&clock));
    let topic = "fifo";
    let mut rng = Rng::new(0xf1f0);
    // (queue, level) -> ids in put order.
    let mut expected: BTreeMap<(u32, u8), Vec<MessageId>> = BTreeMap::new();
    let mut level_of: HashMap<MessageId, u8> = HashMap::new();
    for seq in 0..MESSAGES {
        let level = rng.between(1, 3) as u8;
        let queue = (seq % 2) as u32;
        let receipt = common::put_acked(&store, &delayed(topic, seq, level).with_queue(queue));
        assert_eq!(receipt.queue, queue);
        expected.entry((queue, level)).or_default().push(receipt.id);
        level_of.insert(receipt.id, level);
        // Often 0: several messages of a level share a due time and only put order separates
        // them.
        clock.advance_ms(rng.below(3));
    }
    clock.set_ms(T0 + 60_000);
    let mut tail = Tail::new(&store, topic);
    assert_eq!(tail.wait_for(&store, MESSAGES as usize), MESSAGES as usize);
    assert_eq!(tail.settle(&store), MESSAGES as usize, "more than was put");
    for ((queue, level), want) in &expected {
        let got: Vec<MessageId> = tail
            .got
            .iter()
            .filter(|m| m.queue == *queue && level_of[&m.id] == *level)
            .map(|m| m.id)
            .collect();
        assert_eq!(
            &got, want,
            "queue {queue}, level {level}: delivery order differs from put order"
        );
    }
}

/// Moves the clock to every pending due time up to `until` in turn, waiting at each for
/// everything due by then, then to `until`.
fn step_through(
    store: &Store,
    clock: &ManualClock,
    tail: &mut Tail,
    dues: &[u64],
    pending: &mut BTreeSet<u64>,
    until: u64,
) {
    let steps: Vec<u64> = pending.range(..=until).copied().collect();
    for at in steps.into_iter().chain([until]) {
        pending.remove(&at);
        if at > clock.now_ms() {
            clock.set_ms(at);
        }
        let expected = dues.iter().filter(|&&d| d <= at).count();
        let seen = tail.wait_for(store, expected);
        assert_eq!(
            seen, expected,
            "at clock {at}: {seen} visible, {expected} due"
        );
    }
}

#[test]
fn all_levels_together() {
    const MESSAGES: u64 = 180;
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let store = common::open(dir.path(), options(&clock));
    let topic = "all-levels";
    let mut rng = Rng::new(0xa11_1e7e15);
    let mut tail = Tail::new(&store, topic);
    let mut puts: Vec<(PutReceipt, u8)> = Vec::new();
    let mut dues: Vec<u64> = Vec::new();
    let mut pending = BTreeSet::new();
    for seq in 0..MESSAGES {
        // The clock walks through every due time on its way, so that deliveries happen in
        // due order while later messages are still being put.
        let next_put = clock.now_ms() + rng.below(150);
        step_through(&store, &clock, &mut tail, &dues, &mut pending, next_put);
        let level = rng.between(1, 3) as u8;
        let receipt = common::put_acked(&store, &delayed(topic, seq, level));
        let due = receipt.due_ms.unwrap();
        assert_eq!(due, next_put + delay_of(level));
        dues.push(due);
        pending.insert(due);
        puts.push((receipt, level));
    }
    // The levels really interleave: some message put later is due before one put earlier.
    let inverted = puts.iter().enumerate().any(|(i, (a, _))| {
        puts.iter()
            .skip(i + 1)
            .any(|(b, _)| b.due_ms.unwrap() < a.due_ms.unwrap())
    });
    assert!(inverted, "the schedule does not interleave levels");
    let last = *dues.iter().max().unwrap();
    step_through(&store, &clock, &mut tail, &dues, &mut pending, last);
    assert_eq!(tail.settle(&store), puts.len());

    let got = read_topic(&store, topic);
    assert_eq!(got.len(), puts.len());
    assert!(duplicates(&got).is_empty(), "delivered twice");
    let by_id: HashMap<MessageId, &(PutReceipt, u8)> = puts.iter().map(|p| (p.0.id, p)).collect();
    let queues = store.queue_count(topic).unwrap();
    for queue in 0..queues {
        let in_queue: Vec<&StoredMessage> = got.iter().filter(|m| m.queue == queue).collect();
        for pair in in_queue.windows(2) {
            assert!(
                pair[0].due_ms <= pair[1].due_ms,
                "queue {queue}: {:?} (due {:?}) delivered before {:?} (due {:?})",
                pair[0].id,
                pair[0].due_ms,
                pair[1].id,
                pair[1].due_ms
            );
        }
        for message in in_queue {
            let (receipt, _) = by_id.get(&message.id).expect("an id never put");
            assert_eq!(message.queue, receipt.queue);
            assert_eq!(message.due_ms, receipt.due_ms);
            // The clock stood at each due time until everything due was visible.
            assert_eq!(message.delivered_ms, message.due_ms, "{:?}", message.id);
        }
        for level in 1..=3u8 {
            let order: Vec<MessageId> = got
                .iter()
                .filter(|m| m.queue == queue && by_id[&m.id].1 == level)
                .map(|m| m.id)
                .collect();
            let mut sorted = order.clone();
            sorted.sort();
            assert_eq!(
                order, sorted,
                "queue {queue}, level {level}: not in put order"
            );
        }
    }
}

#[test]
fn repost_identical_content() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let store = common::open(dir.path(), options(&clock));
    let topic = "content";
    let mut messages = vec![
        Message::new(topic, (0u8..=255).collect::<Vec<u8>>())
            .with_key("binary")
            .with_property("a", "1")
            .with_property("a", "2")
            .with_property("", "empty name")
            .with_property("empty value", "")
            .with_property("ünïcödé", "✓ ok")
            .with_delay_level(1),
        Message::new(topic, Vec::new())
            .with_queue(3)
            .with_delay_level(2),
        Message::new(topic, vec![b'z'; 8_000])
            .with_key("big")
            .with_property("size", "8000")
            .with_delay_level(3),
        Message::new(topic, "no key, no queue").with_delay_level(1),
        Message::new(topic, "keyed and queued")
            .with_key("k")
            .with_queue(1)
            .with_delay_level(2),
    ];
    let mut rng = Rng::new(0xc0_47e7);
    for seq in 0..60 {
        // Level 0 messages share the target queues, so deliveries land between them.
        let level = rng.below(4) as u8;
        let mut message = delayed(topic, seq, level);
        if rng.one_in(3) {
            message = message.with_queue(rng.below(4) as u32);
        }
        messages.push(message);
    }
    let mut sent: Vec<(Message, PutReceipt)> = Vec::new();
    for message in messages {
        let receipt = common::put_acked(&store, &message);
        assert_eq!(receipt.due_ms.is_some(), message.delay_level > 0);
        sent.push((message, receipt));
        clock.advance_ms(rng.below(20));
    }
    clock.set_ms(T0 + 60_000);
    let mut tail = Tail::new(&store, topic);
    assert_eq!(tail.wait_for(&store, sent.len()), sent.len());
    assert_eq!(tail.settle(&store), sent.len(), "more than was put");

    let queues = store.queue_count(topic).unwrap();
    for queue in 0..queues {
        let got = common::read_queue(&store, topic, queue);
        let offsets: Vec<u64> = got.iter().map(|m| m.queue_offset).collect();
        let want: Vec<u64> = (0..offsets.len() as u64).collect();
        assert_eq!(
            offsets, want,
            "queue {queue}: offsets not contiguous from 0"
        );
        let put_here = sent.iter().filter(|(_, r)| r.queue == queue).count();
        assert_eq!(got.len(), put_here, "queue {queue}: entry count");
        let end = store.queue_end_offset(topic, queue).unwrap();
        assert_eq!(end, put_here as u64, "queue {queue}: end offset");
    }
    let got = read_topic(&store, topic);
    for (message, receipt) in &sent {
        let what = format!("{:?} (level {})", receipt.id, message.delay_level);
        let stored: Vec<&StoredMessage> = got.iter().filter(|m| m.id == receipt.id).collect();
        assert_eq!(stored.len(), 1, "{what}: found {} times", stored.len());
        let stored = stored[0];
        assert_eq!(stored.topic, message.topic, "{what}: topic");
        assert_eq!(stored.queue, receipt.queue, "{what}: queue");
        if let Some(queue) = message.queue {
            assert_eq!(stored.queue, queue, "{what}: queue asked for");
        }
        assert_eq!(stored.key, message.key, "{what}: key");
        assert_eq!(stored.properties, message.properties, "{what}: properties");
        assert_eq!(stored.body, message.body, "{what}: body");
        assert_eq!(stored.store_ms, receipt.store_ms, "{what}: store_ms");
        assert_eq!(stored.due_ms, receipt.due_ms, "{what}: due_ms");
        if message.delay_level == 0 {
            assert_eq!(stored.queue_offset, receipt.queue_offset, "{what}: offset");
            assert_eq!(stored.delivered_ms, None, "{what}: delivered_ms");
        } else {
            assert_eq!(
                stored.delivered_ms,
                Some(T0 + 60_000),
                "{what}: delivered_ms"
            );
        }
    }
}

#[test]
fn reopen_mid_delivery_no_duplicates_no_losses() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let opts = options(&clock);
    let topic = "reopen";
    let mut rng = Rng::new(0x4e0_9e4);
    let mut store = Some(common::open(dir.path(), opts.clone()));
    let mut sent: HashMap<MessageId, PutReceipt> = HashMap::new();
    let put = |store: &Store, rng: &mut Rng, sent: &mut HashMap<MessageId, PutReceipt>| {
        let level = rng.between(1, 3) as u8;
        let seq = sent.len() as u64;
        let receipt = common::put_acked(store, &delayed(topic, seq, level));
        assert_eq!(receipt.due_ms, Some(clock.now_ms() + delay_of(level)));
        sent.insert(receipt.id, receipt);
    };
    {
        let s = store.as_ref().unwrap();
        for _ in 0..300 {
            put(s, &mut rng, &mut sent);
            clock.advance_ms(rng.below(40));
        }
    }
    let mut steps = 0u64;
    let mut crashes = 0u64;
    while steps < 200 {
        let s = store.take().unwrap();
        if steps < 20 && rng.one_in(3) {
            for _ in 0..rng.between(1, 5) {
                put(&s, &mut rng, &mut sent);
            }
        }
        clock.advance_ms(rng.between(150, 700));
        // Stop it a moment into the delivery that the clock move started (or before).
        thread::sleep(Duration::from_micros(rng.below(4_000)));
        if steps.is_multiple_of(4) {
            let partial = read_topic(&s, topic);
            let twice = duplicates(&partial);
            assert!(twice.is_empty(), "step {steps}: delivered twice: {twice:?}");
        }
        if steps.is_multiple_of(2) {
            s.simulate_crash();
            crashes += 1;
        } else {
            drop(s);
        }
        store = Some(common::open(dir.path(), opts.clone()));
        steps += 1;
        let last_due = sent.values().filter_map(|r| r.due_ms).max().unwrap();
        if clock.now_ms() > last_due {
            break;
        }
    }
    assert!(crashes >= 10, "the script reopened too few times");
    let last_due = sent.values().filter_map(|r| r.due_ms).max().unwrap();
    assert!(
        clock.now_ms() > last_due,
        "the script ended before the last due time"
    );
    let s = store.take().unwrap();
    let deadline = Instant::now() + WAIT;
    let mut got = read_topic(&s, topic);
    while got.len() < sent.len() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(5));
        got = read_topic(&s, topic);
    }
    thread::sleep(QUIET);
    let got = read_topic(&s, topic);
    let check = |got: &[StoredMessage], when: &str| {
        let twice = duplicates(got);
        let seen: HashSet<MessageId> = got.iter().map(|m| m.id).collect();
        let lost: Vec<&MessageId> = sent.keys().filter(|id| !seen.contains(id)).collect();
        let phantom: Vec<&MessageId> = seen.iter().filter(|id| !sent.contains_key(id)).collect();
        assert!(
            twice.is_empty() && lost.is_empty() && phantom.is_empty(),
            "{when}: {} put, {} delivered; duplicates {twice:?}; lost {lost:?}; phantom {phantom:?}",
            sent.len(),
            got.len()
        );
        for message in got {
            let due = sent[&message.id].due_ms;
            assert_eq!(message.due_ms, due, "{when}: {:?}", message.id);
            assert!(
                message.delivered_ms >= due,
                "{when}: {:?} early",
                message.id
            );
        }
    };
    check(&got, "after the script");
    let pending: u64 = s.stats().pending_per_level.iter().map(|(_, n)| n).sum();
    assert_eq!(
        pending,
        0,
        "still pending: {:?}",
        s.stats().pending_per_level
    );
    s.simulate_crash();
    let s = common::open(dir.path(), opts.clone());
    thread::sleep(QUIET);
    check(&read_topic(&s, topic), "after one more crash");
    drop(s);
    let s = common::open(dir.path(), opts);
    thread::sleep(QUIET);
    check(&read_topic(&s, topic), "after a clean reopen");
}

#[test]
fn clock_jumps_back_and_forward() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let store = common::open(dir.path(), options(&clock));
    let put = |topic: &str, level: u8| {
        let message = Message::new(topic, format!("level {level}"))
            .with_queue(0)
            .with_delay_level(level);
        common::put_acked(&store, &message)
    };

    // Forward jump: everything due is delivered, in due order, at the clock it jumped to.
    let a: Vec<PutReceipt> = (1..=3).map(|level| put("fwd", level)).collect();
    let mut fwd = Tail::new(&store, "fwd");
    assert_eq!(fwd.settle(&store), 0);
    clock.set_ms(T0 + 60_000);
    assert_eq!(fwd.wait_for(&store, 3), 3);
    assert_eq!(
        fwd.ids(),
        a.iter().map(|r| r.id).collect::<Vec<_>>(),
        "forward jump: order"
    );
    for message in &fwd.got {
        assert_eq!(message.delivered_ms, Some(T0 + 60_000));
    }

    // A small jump back: nothing lies more than its delay ahead, so everything waits for its
    // due time.
    let t = T0 + 60_000;
    let b: Vec<PutReceipt> = (1..=3).map(|level| put("back", level)).collect();
    let mut back = Tail::new(&store, "back");
    clock.set_ms(t + 500);
    assert_eq!(back.settle(&store), 0, "nothing is due at +500");
    clock.set_ms(t + 200);
    assert_eq!(
        back.settle(&store),
        0,
        "jumped back 300 ms: level 1 must wait for its due"
    );
    clock.set_ms(t + 999);
    assert_eq!(
        back.settle(&store),
        0,
        "level 1 delivered before its due time"
    );
    clock.set_ms(t + 1_000);
    assert_eq!(back.wait_for(&store, 1), 1);
    assert_eq!(back.got[0].id, b[0].id);
    assert_eq!(back.got[0].delivered_ms, Some(t + 1_000));

    // A big jump back, to t-3000, below the store time t of levels 2 and 3: each is treated as
    // stored at t-3000, so it goes its own delay after the jump (t+2000 and t+7000 on the new
    // clock): never held longer than its delay after the jump, never released sooner.
    clock.set_ms(t - 3_000);
    assert_eq!(back.settle(&store), 1, "released at once after the jump");
    clock.set_ms(t + 1_999);
    assert_eq!(
        back.settle(&store),
        1,
        "level 2 released before its delay elapsed"
    );
    clock.set_ms(t + 2_000);
    assert_eq!(back.wait_for(&store, 2), 2);
    assert_eq!(back.find(b[1].id).unwrap().delivered_ms, Some(t + 2_000));
    clock.set_ms(t + 6_999);
    assert_eq!(
        back.settle(&store),
        2,
        "level 3 released before its delay elapsed"
    );
    clock.set_ms(t + 7_000);
    assert_eq!(back.wait_for(&store, 3), 3);
    assert_eq!(back.find(b[2].id).unwrap().delivered_ms, Some(t + 7_000));

    // After a big jump back, a message due within its delay of the new clock waits for it.
    let s = t + 7_000;
    let c1 = put("waits", 1);
    let c3 = put("waits", 3);
    let mut waits = Tail::new(&store, "waits");
    clock.set_ms(s + 2_500);
    assert_eq!(waits.wait_for(&store, 1), 1);
    assert_eq!(waits.got[0].id, c1.id);
    clock.set_ms(s + 1_000);
    assert_eq!(
        waits.settle(&store),
        1,
        "level 3 (due s+10000) went at s+1000"
    );
    clock.set_ms(s + 9_999);
    assert_eq!(
        waits.settle(&store),
        1,
        "level 3 delivered before its due time"
    );
    clock.set_ms(s + 10_000);
    assert_eq!(waits.wait_for(&store, 2), 2);
    assert_eq!(waits.got[1].id, c3.id);
    assert_eq!(waits.got[1].delivered_ms, Some(s + 10_000));

    // Two messages of one level, the clock going back between their store times: the first
    // waits for its due time; neither is held longer than the level's delay after the jump.
    let u = s + 10_000;
    let da = put("hol", 2);
    clock.set_ms(u + 3_000);
    let db = put("hol", 2);
    assert_eq!(db.due_ms, Some(u + 8_000));
    let mut hol = Tail::new(&store, "hol");
    clock.set_ms(u + 1_000);
    hol.settle(&store);
    // Still below the second message's store time: the jump must not be re-dated to this
    // reading (that would push its deadline to u+7000).
    clock.set_ms(u + 2_000);
    hol.settle(&store);
    clock.set_ms(u + 4_999);
    hol.settle(&store);
    assert!(hol.find(da.id).is_none(), "delivered before its due time");
    clock.set_ms(u + 5_000);
    assert!(hol.wait_for(&store, 1) >= 1);
    assert_eq!(hol.find(da.id).unwrap().delivered_ms, Some(u + 5_000));
    // The jump back to u+1000 found the second message due u+8000, more than the level's
    // delay ahead: it may not be held past u+1000 + 5000.
    clock.set_ms(u + 1_000 + delay_of(2));
    assert_eq!(
        hol.wait_for(&store, 2),
        2,
        "level 2 message stored at u+3000 (due u+8000), clock jumped back to u+1000: still \
         held at u+6000, longer than the level's delay after the jump"
    );
    let held = hol.find(db.id).unwrap().delivered_ms.unwrap();
    assert!(held <= u + 1_000 + delay_of(2), "held until {held}");
    let pending: u64 = store.stats().pending_per_level.iter().map(|(_, n)| n).sum();
    assert_eq!(pending, 0);
}

#[test]
fn invalid_levels_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let store = common::open(dir.path(), options(&clock));
    assert_eq!(store.delay_levels_ms(), DELAYS.to_vec());
    let written = store.stats().written_end_offset;
    for level in [4u8, 5, 255] {
        match store.put(&Message::new("t", "x").with_delay_level(level)) {
            Err(Error::InvalidDelayLevel {
                level: l,
                levels: 3,
            }) => assert_eq!(l, level),
            other => panic!("level {level}: expected InvalidDelayLevel, got {other:?}"),
        }
    }
    assert_eq!(
        store.stats().written_end_offset,
        written,
        "a rejected put appended something"
    );
    let ok = common::put_acked(&store, &Message::new("t", "x").with_delay_level(3));
    assert_eq!(ok.due_ms, Some(T0 + 10_000));
    drop(store);

    let too_many = vec!["1s"; 256].join(" ");
    let max_ok = vec!["1s"; 255].join(" ");
    let malformed = [
        "5x",
        "",
        "   ",
        "0s",
        "1s 0ms",
        "-1s",
        "1.5s",
        "s",
        "10",
        "1s,5s",
        "1S",
        "401d",
        too_many.as_str(),
    ];
    for table in malformed {
        let fresh = tempfile::tempdir().unwrap();
        match Store::open(fresh.path(), with_table(&clock, table)) {
            Err(Error::InvalidOptions { name, .. }) => {
                assert_eq!(name, "delay_levels", "table {table:?}")
            }
            other => panic!("table {table:?}: expected InvalidOptions, got {other:?}"),
        }
        assert!(
            !fresh.path().join("meta").exists(),
            "table {table:?}: a store was created"
        );
        // The existing store refuses it too, and keeps its table.
        match Store::open(dir.path(), with_table(&clock, table)) {
            Err(Error::InvalidOptions { name, .. }) => assert_eq!(name, "delay_levels"),
            other => panic!("reopen with {table:?}: expected InvalidOptions, got {other:?}"),
        }
    }
    for table in ["400d", max_ok.as_str(), "1ms", " 1s\t5s\n10s "] {
        let fresh = tempfile::tempdir().unwrap();
        let store = Store::open(fresh.path(), with_table(&clock, table))
            .unwrap_or_else(|e| panic!("table {table:?} refused: {e}"));
        drop(store);
    }
    let store = common::open(
        dir.path(),
        Options {
            delay_levels: None,
            ..options(&clock)
        },
    );
    assert_eq!(store.delay_levels_ms(), DELAYS.to_vec());
    assert_eq!(store.stats().pending_per_level, vec![(3, 1)]);
}

#[test]
fn reopen_with_different_table_keeps_due_times() {
    let topic = "retable";
    // A table with fewer levels: a message of a level that no longer exists is still
    // delivered at its due time, and the level is refused for new puts.
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let store = common::open(dir.path(), options(&clock));
    let old = common::put_acked(
        &store,
        &Message::new(topic, "level 3")
            .with_queue(0)
            .with_delay_level(3),
    );
    store.simulate_crash();
    let store = common::open(dir.path(), with_table(&clock, "1s"));
    assert!(matches!(
        store.put(&Message::new(topic, "x").with_delay_level(3)),
        Err(Error::InvalidDelayLevel {
            level: 3,
            levels: 1
        })
    ));
    let stats = eventually(|| store.stats().pending_per_level, &vec![(3, 1)]);
    assert_eq!(stats, vec![(3, 1)]);
    assert_eq!(store.stats().next_due_ms, old.due_ms);
    let mut tail = Tail::new(&store, topic);
    clock.set_ms(T0 + 9_999);
    assert_eq!(
        tail.settle(&store),
        0,
        "level 3 delivered before its due time"
    );
    clock.set_ms(T0 + 10_000);
    assert_eq!(tail.wait_for(&store, 1), 1);
    assert_eq!(tail.got[0].id, old.id);
    assert_eq!(tail.got[0].delivered_ms, Some(T0 + 10_000));
    drop(store);

    let clock = ManualClock::new(T0);
    let dir = tempfile::tempdir().unwrap();
    let store = common::open(dir.path(), options(&clock));
    let m: Vec<PutReceipt> = (1..=3)
        .map(|level| {
            let message = Message::new(topic, format!("level {level}"))
                .with_queue(0)
                .with_delay_level(level);
            common::put_acked(&store, &message)
        })
        .collect();
    drop(store);

    // Level 1 now waits longer, levels 2 and 3 shorter: the stored messages keep their due
    // times of t0+1s, t0+5s, t0+10s.
    let store = common::open(dir.path(), with_table(&clock, "2s 3s 4s"));
    assert_eq!(store.delay_levels_ms(), vec![2_000, 3_000, 4_000]);
    let mut tail = Tail::new(&store, topic);
    tail.settle(&store);
    assert!(
        tail.got.is_empty(),
        "after reopening with a shorter table, delivered at once at clock t0 (due times \
         t0+1000/+5000/+10000): {:?}",
        tail.got
            .iter()
            .map(|m| (m.id, m.due_ms.map(|d| d - T0)))
            .collect::<Vec<_>>()
    );
    for (i, receipt) in m.iter().enumerate() {
        let due = receipt.due_ms.unwrap();
        clock.set_ms(due - 1);
        assert_eq!(tail.settle(&store), i, "at due-1 of level {}", i + 1);
        clock.set_ms(due);
        assert_eq!(
            tail.wait_for(&store, i + 1),
            i + 1,
            "at due of level {}",
            i + 1
        );
        assert_eq!(tail.got[i].id, receipt.id);
        assert_eq!(tail.got[i].due_ms, Some(due));
        assert_eq!(tail.got[i].delivered_ms, Some(due));
    }
    let fresh = common::put_acked(&store, &Message::new(topic, "new").with_delay_level(1));
    assert_eq!(
        fresh.due_ms,
        Some(T0 + 10_000 + 2_000),
        "new puts use the new table"
    );
    drop(store);
}

#[test]
fn stats_pending_per_level() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let opts = options(&clock);
    let store = common::open(dir.path(), opts.clone());
    let topic = "stats";
    assert_eq!(store.stats().pending_per_level, vec![]);
    assert_eq!(store.stats().next_due_ms, None);
    for (level, count) in [(1u8, 3), (2, 2), (3, 1)] {
        for seq in 0..count {
            common::put_acked(&store, &delayed(topic, seq, level));
        }
        clock.advance_ms(100);
    }
    // Due times: level 1 t0+1000, level 2 t0+5100, level 3 t0+10200.
    let expect = |store: &Store, pending: Vec<(u8, u64)>, next: Option<u64>| {
        let got = eventually(
            || {
                let stats = store.stats();
                (stats.pending_per_level, stats.next_due_ms)
            },
            &(pending.clone(), next),
        );
        assert_eq!(got, (pending, next), "(pending_per_level, next_due_ms)");
    };
    expect(&store, vec![(1, 3), (2, 2), (3, 1)], Some(T0 + 1_000));
    clock.set_ms(T0 + 1_000);
    expect(&store, vec![(1, 0), (2, 2), (3, 1)], Some(T0 + 5_100));
    clock.set_ms(T0 + 5_099);
    thread::sleep(QUIET);
    expect(&store, vec![(1, 0), (2, 2), (3, 1)], Some(T0 + 5_100));
    clock.set_ms(T0 + 5_100);
    expect(&store, vec![(1, 0), (2, 0), (3, 1)], Some(T0 + 10_200));
    clock.set_ms(T0 + 10_200);
    expect(&store, vec![(1, 0), (2, 0), (3, 0)], None);
    assert_eq!(read_topic(&store, topic).len(), 6);
    drop(store);

    let store = common::open(dir.path(), opts.clone());
    expect(&store, vec![(1, 0), (2, 0), (3, 0)], None);
    common::put_acked(&store, &delayed(topic, 9, 2));
    expect(&store, vec![(1, 0), (2, 1), (3, 0)], Some(T0 + 15_200));
    store.simulate_crash();
    let store = common::open(dir.path(), opts);
    expect(&store, vec![(1, 0), (2, 1), (3, 0)], Some(T0 + 15_200));
    clock.set_ms(T0 + 15_200);
    expect(&store, vec![(1, 0), (2, 0), (3, 0)], None);
    assert_eq!(read_topic(&store, topic).len(), 7);
}

#[test]
fn non_delayed_messages_unaffected() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let store = common::open(dir.path(), options(&clock));
    let topic = "mixed";
    let mut rng = Rng::new(0x0d_e1a7);
    let mut now_ids = Vec::new();
    let mut later_ids = Vec::new();
    for seq in 0..40u64 {
        let level = if seq % 2 == 0 {
            0
        } else {
            rng.between(1, 3) as u8
        };
        let receipt = common::put_acked(&store, &delayed(topic, seq, level).with_queue(0));
        if level == 0 {
            assert_eq!(receipt.due_ms, None);
            assert_eq!(receipt.queue_offset, now_ids.len() as u64);
            now_ids.push(receipt.id);
        } else {
            later_ids.push(receipt.id);
        }
    }
    // The clock has not moved: level 0 messages are visible at once, in put order.
    let mut tail = Tail::new(&store, topic);
    assert_eq!(tail.wait_for(&store, now_ids.len()), now_ids.len());
    assert_eq!(
        tail.settle(&store),
        now_ids.len(),
        "a delayed message is visible"
    );
    assert_eq!(tail.ids(), now_ids);
    for message in &tail.got {
        assert_eq!((message.due_ms, message.delivered_ms), (None, None));
        assert_eq!(message.store_ms, T0);
    }
    clock.set_ms(T0 + 10_000);
    let all = now_ids.len() + later_ids.len();
    assert_eq!(tail.wait_for(&store, all), all);
    let delivered: HashSet<MessageId> = tail.got[now_ids.len()..].iter().map(|m| m.id).collect();
    assert_eq!(delivered, later_ids.iter().copied().collect());
    // Level 0 puts made while delayed ones are pending are not held behind them.
    let pending = common::put_acked(&store, &delayed(topic, 100, 3).with_queue(0));
    let now = common::put_acked(&store, &delayed(topic, 101, 0).with_queue(0));
    assert_eq!(tail.wait_for(&store, all + 1), all + 1);
    assert_eq!(tail.settle(&store), all + 1);
    assert_eq!(tail.got[all].id, now.id);
    assert_eq!(tail.got[all].queue_offset, all as u64);
    clock.advance_ms(10_000);
    assert_eq!(tail.wait_for(&store, all + 2), all + 2);
    assert_eq!(tail.got[all + 1].id, pending.id);
}
