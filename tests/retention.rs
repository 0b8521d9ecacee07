#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Retention: old segments go by age and by disk usage, never one that holds a pending
//! delayed message or data a registered consumer group has not read, unless the hard limit
//! forces it, and then every lost message is counted.

mod common;
mod support;

use std::collections::HashSet;
use std::sync::Arc;

use delaystore::{ManualClock, Message, MessageId, Options, Stats, Store};
use support::{eventually, Tail};

const T0: u64 = 1_700_000_000_000;
const HOUR_MS: u64 = 3_600_000;
const SEGMENT_BYTES: u64 = 64 * 1024;

fn options(clock: &ManualClock) -> Options {
    Options {
        clock: Arc::new(clock.clone()),
        retention_ms: Some(HOUR_MS),
        ..common::small_options()
    }
}

/// Puts `count` 1 KiB messages to `topic`, queue 0.
fn fill(store: &Store, topic: &str, count: usize) -> Vec<MessageId> {
    (0..count)
        .map(|seq| {
            store
                .put(&Message::new(topic, vec![b'a' + (seq % 26) as u8; 1000]).with_queue(0))
                .unwrap()
                .id
        })
        .collect()
}

/// Waits until retention has run and the log starts at or after `offset`.
fn wait_start_past(store: &Store, offset: u64) -> Stats {
    let start = eventually(|| store.stats().log_start_offset >= offset, &true);
    assert!(
        start,
        "log still starts at {}",
        store.stats().log_start_offset
    );
    store.stats()
}

#[test]
fn old_segments_go_but_pending_delayed_messages_stay() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let store = common::open(dir.path(), options(&clock));
    let early = fill(&store, "plain", 100);
    let pending = store
        .put(&Message::new("later", "close order 7").with_delay_ms(5 * 24 * HOUR_MS))
        .unwrap();
    let middle = fill(&store, "plain", 200);
    clock.set_ms(T0 + 2 * HOUR_MS);
    fill(&store, "plain", 100);
    // Segments before the one holding the pending message go; that one stays.
    let stats = wait_start_past(&store, SEGMENT_BYTES);
    assert!(stats.log_start_offset <= pending.id.0, "{stats:?}");
    thread_settle();
    let stats = store.stats();
    assert!(
        stats.log_start_offset <= pending.id.0,
        "pending segment deleted: {stats:?}"
    );
    assert!(stats.log_start_offset > early[0].0);
    assert_eq!(stats.forced_deleted_messages, 0);
    // The plain queue's pulls start after the deleted range.
    let left = common::pull_all(&store, "plain", 0, 0, 1);
    assert!(left
        .first()
        .is_some_and(|m| m.id.0 >= stats.log_start_offset));

    // Once delivered (and no group registered), its segment may go too; the delivery reads
    // the original record, so it must have been intact until then.
    clock.set_ms(T0 + 5 * 24 * HOUR_MS);
    let mut tail = Tail::new(&store, "later");
    assert_eq!(tail.wait_for(&store, 1), 1);
    assert_eq!(tail.got[0].body, b"close order 7");
    fill(&store, "plain", 100);
    wait_start_past(&store, middle[199].0 + 1);
    store.close().unwrap();

    // Recovery copes with a log and queues that no longer start at 0.
    let store = common::open(dir.path(), options(&clock));
    let more = store
        .put(&Message::new("plain", "after").with_queue(0))
        .unwrap();
    common::wait_queue_end(&store, "plain", 0, more.queue_offset + 1);
    let got = store.pull("plain", 0, more.queue_offset, 1).unwrap();
    assert_eq!(got[0].id, more.id);
    let oldest = store.pull("plain", 0, 0, 1).unwrap();
    assert!(oldest[0].id.0 >= store.stats().log_start_offset);
    store.close().unwrap();
}

#[test]
fn unread_data_of_a_registered_group_stays_until_committed() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let store = common::open(dir.path(), options(&clock));
    let ids = fill(&store, "orders", 300);
    store.commit_offset("billing", "orders", 0, 10).unwrap();
    clock.set_ms(T0 + 2 * HOUR_MS);
    fill(&store, "other", 100);
    // Only what billing has read may go: everything from its 11th message on stays.
    thread_settle();
    let stats = store.stats();
    assert!(stats.log_start_offset <= ids[10].0, "{stats:?}");
    let got = common::pull_all(&store, "orders", 0, 10, 290);
    assert_eq!(got.len(), 290);
    assert_eq!(got[0].id, ids[10]);
    // Billing catches up: the orders segments go.
    store.commit_offset("billing", "orders", 0, 300).unwrap();
    clock.set_ms(T0 + 4 * HOUR_MS);
    fill(&store, "other", 100);
    let stats = wait_start_past(&store, ids[299].0 + 1);
    assert_eq!(stats.forced_deleted_messages, 0);
    store.close().unwrap();
}

#[test]
fn a_delivered_message_stays_until_a_registered_group_read_its_delivery() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let store = common::open(dir.path(), options(&clock));
    let delayed = store
        .put(
            &Message::new("jobs", "run report")
                .with_queue(0)
                .with_delay_ms(HOUR_MS),
        )
        .unwrap();
    store.commit_offset("worker", "jobs", 0, 0).unwrap();
    fill(&store, "noise", 200);
    clock.set_ms(T0 + 3 * HOUR_MS);
    let got = common::pull_all(&store, "jobs", 0, 0, 1);
    assert_eq!(got.len(), 1);
    fill(&store, "noise", 200);
    thread_settle();
    // The delivery is unread by `worker`: the original record must stay.
    assert!(store.stats().log_start_offset <= delayed.id.0);
    let again = store.pull("jobs", 0, 0, 1).unwrap();
    assert_eq!(again[0].body, b"run report");
    store.commit_offset("worker", "jobs", 0, 1).unwrap();
    fill(&store, "noise", 10);
    wait_start_past(&store, delayed.id.0 + 1);
    store.close().unwrap();
}

#[test]
fn disk_limits_soft_keeps_pinned_hard_forces_and_counts() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let soft = Options {
        retention_ms: None,
        disk_usage_soft_bytes: Some(4 * SEGMENT_BYTES),
        ..options(&clock)
    };
    let store = common::open(dir.path(), soft);
    let pending: Vec<MessageId> = (0..20)
        .map(|seq| {
            store
                .put(&Message::new("later", format!("{seq}")).with_delay_ms(24 * HOUR_MS))
                .unwrap()
                .id
        })
        .collect();
    fill(&store, "plain", 600);
    thread_settle();
    let stats = store.stats();
    assert!(
        stats.segment_bytes_total > 4 * SEGMENT_BYTES,
        "pinned segment kept: {stats:?}"
    );
    assert!(stats.log_start_offset <= pending[0].0);
    assert_eq!(stats.forced_deleted_messages, 0);
    store.close().unwrap();

    let hard = Options {
        retention_ms: None,
        disk_usage_soft_bytes: Some(3 * SEGMENT_BYTES),
        disk_usage_hard_bytes: Some(4 * SEGMENT_BYTES),
        ..options(&clock)
    };
    let store = common::open(dir.path(), hard);
    fill(&store, "plain", 100);
    let stats = wait_start_past(&store, pending[19].0 + 1);
    assert!(stats.forced_deleted_messages >= 20, "{stats:?}");
    // The lost pending messages are discarded when due, never delivered, never an error.
    clock.set_ms(T0 + 25 * HOUR_MS);
    let kept = store
        .put(&Message::new("later", "kept").with_delay_ms(1))
        .unwrap();
    clock.set_ms(T0 + 25 * HOUR_MS + 5);
    let mut tail = Tail::new(&store, "later");
    tail.wait_for(&store, 1);
    tail.settle(&store);
    let ids: HashSet<MessageId> = tail.ids().into_iter().collect();
    assert_eq!(ids, HashSet::from([kept.id]));
    assert_eq!(store.stats().pending_per_tier.iter().sum::<u64>(), 0);
    store.close().unwrap();
    let store = common::open(dir.path(), options(&clock));
    store.close().unwrap();
}

/// Leaves the flusher (10 ms ticks in these options) a few rounds to act.
fn thread_settle() {
    std::thread::sleep(std::time::Duration::from_millis(150));
}
