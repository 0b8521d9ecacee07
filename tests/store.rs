#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The store's public behaviour: puts and pulls, segment rolls, reopen, locking, concurrent
//! producers, consumer offsets, bad input and key routing.
mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use common::{quiet_options, small_options, Model};
use delaystore::recovery::CheckpointUse;
use delaystore::{Error, Message, Options, Store, SyncMode};

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

#[test]
fn put_pull_round_trip_keeps_key_properties_and_body() {
    let dir = tempdir();
    let store = common::open(dir.path(), small_options());
    let mut model = Model::new();
    let binary: Vec<u8> = (0..=255u8).collect();
    let cases = vec![
        Message::new("orders", "close order 17")
            .with_key("o-17")
            .with_property("origin", "web")
            .with_property("empty", ""),
        Message::new("orders", binary.clone()).with_queue(2),
        Message::new("orders", Vec::new()).with_key("no body"),
        Message::new("orders", "no key, no properties"),
        Message::new("payments", "other topic")
            .with_key("p-1")
            .with_property("currency", "EUR")
            .with_property("amount", "12.50")
            .with_property("note", "unicode: \u{e9}\u{4e2d}"),
    ];
    for m in &cases {
        let receipt = model.put(&store, m.clone());
        assert_eq!(receipt.topic, m.topic);
        if let Some(queue) = m.queue {
            assert_eq!(receipt.queue, queue);
        }
    }
    let first = &model.sent[0];
    let pulled = common::pull_all(
        &store,
        "orders",
        first.receipt.queue,
        first.receipt.queue_offset,
        1,
    );
    let got = &pulled[0];
    assert_eq!(got.id, first.receipt.id);
    assert_eq!(got.key.as_deref(), Some("o-17"));
    assert_eq!(
        got.properties,
        vec![
            ("origin".to_owned(), "web".to_owned()),
            ("empty".to_owned(), String::new())
        ]
    );
    assert_eq!(got.body, b"close order 17");
    assert_eq!(got.store_ms, first.receipt.store_ms);
    let binary_sent = &model.sent[1];
    let pulled = common::pull_all(&store, "orders", 2, binary_sent.receipt.queue_offset, 1);
    assert_eq!(pulled[0].body, binary);
    assert_eq!(pulled[0].key, None);
    model.verify(&store);
    store.close().unwrap();
}

#[test]
fn roll_across_many_segments_keeps_everything_in_order() {
    let dir = tempdir();
    let store = common::open(dir.path(), small_options());
    let mut model = Model::new();
    model.put_many(&store, "rolls", 0, 4000);
    let segment_count = store.stats().segment_count;
    assert!(segment_count >= 5, "only {segment_count} segments");
    assert!(common::segments(dir.path()).len() >= 5);
    // Log order is put order, and within a queue, queue order is log order.
    for pair in model.sent.windows(2) {
        assert!(
            pair[0].receipt.id < pair[1].receipt.id,
            "ids out of put order"
        );
    }
    for queue in 0..store.queue_count("rolls").unwrap() {
        let pulled = common::pull_all(
            &store,
            "rolls",
            queue,
            0,
            model.expected("rolls", queue).len(),
        );
        for pair in pulled.windows(2) {
            assert_eq!(pair[0].queue_offset + 1, pair[1].queue_offset);
            assert!(pair[0].id < pair[1].id);
        }
    }
    model.verify(&store);
    store.close().unwrap();
    let store = common::open(dir.path(), small_options());
    model.verify(&store);
    store.close().unwrap();
}

/// A writer that rolls into a segment the background preallocator is still creating must
/// wait for it or use it: the put is valid and must succeed. `SlowPreallocFs` makes the
/// preallocator finish creating the file but return only once the writer tried too.
#[test]
fn segment_roll_racing_the_preallocator_does_not_fail_puts() {
    let dir = tempdir();
    let options = Options {
        fs: Arc::new(common::SlowPreallocFs::new(Duration::from_millis(500))),
        ..small_options()
    };
    let store = common::open(dir.path(), options);
    let mut model = Model::new();
    model.put_many(&store, "race", 0, 1500);
    assert!(common::segments(dir.path()).len() >= 3);
    model.verify(&store);
    store.close().unwrap();
}

#[test]
fn clean_reopen_reads_everything_without_scanning() {
    let dir = tempdir();
    let store = common::open(dir.path(), small_options());
    let mut model = Model::new();
    model.put_many(&store, "a", 0, 1500);
    model.put_many(&store, "b", 0, 500);
    let written_end = store.stats().written_end_offset;
    store.close().unwrap();

    let store = common::open(dir.path(), small_options());
    let report = store.recovery_report().clone();
    assert_eq!(
        report.checkpoint,
        CheckpointUse::Used {
            clean_shutdown: true
        }
    );
    assert_eq!(report.records_scanned, 0);
    assert_eq!(report.log_end_offset, written_end);
    assert_eq!(report.torn_tail, None);
    assert!(report.queues_rebuilt.is_empty());
    assert_eq!(report.entries_replayed, 0);
    model.verify(&store);
    // The reopened store keeps appending after the old end.
    model.put_many(&store, "a", 1500, 100);
    model.verify(&store);
    store.close().unwrap();
}

#[test]
fn drop_without_close_loses_nothing() {
    let dir = tempdir();
    let mut model = Model::new();
    {
        let store = common::open(dir.path(), quiet_options());
        model.put_many(&store, "dropped", 0, 1200);
        // No close, no flush: Drop must close cleanly.
    }
    let store = common::open(dir.path(), quiet_options());
    let report = store.recovery_report();
    assert_eq!(
        report.checkpoint,
        CheckpointUse::Used {
            clean_shutdown: true
        }
    );
    assert_eq!(report.records_scanned, 0);
    model.verify(&store);
    store.close().unwrap();
}

#[test]
fn second_open_is_locked_until_the_first_closes() {
    let dir = tempdir();
    let store = common::open(dir.path(), small_options());
    let mut model = Model::new();
    model.put_many(&store, "locked", 0, 50);
    match Store::open(dir.path(), small_options()) {
        Err(Error::Locked { dir: locked }) => assert_eq!(locked, dir.path()),
        other => panic!("second open: expected Locked, got {other:?}"),
    }
    // The refused open disturbed nothing.
    model.put_many(&store, "locked", 50, 50);
    model.verify(&store);
    store.close().unwrap();

    let store = Store::open(dir.path(), small_options()).expect("open after close");
    model.verify(&store);
    store.close().unwrap();
}

fn concurrent_producers(sync_mode: SyncMode, threads: u64, per_thread: u64) {
    let dir = tempdir();
    let options = Options {
        sync_mode,
        // Bigger queue files: creating thousands of 64-entry files would only measure fsync.
        consume_queue_file_entries: 4096,
        ..small_options()
    };
    let store = Arc::new(common::open(dir.path(), options.clone()));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                let mut sent = Vec::with_capacity(per_thread as usize);
                for i in 0..per_thread {
                    let mut m = Message::new("load", format!("t{t}-m{i}"))
                        .with_property("t", t.to_string());
                    if t % 2 == 0 {
                        m = m.with_key(format!("k{}", i % 97));
                    }
                    let receipt = store.put(&m).expect("concurrent put");
                    sent.push((m, receipt));
                }
                sent
            })
        })
        .collect();
    let mut model = Model::new();
    let mut per_thread_ids: Vec<Vec<u64>> = Vec::new();
    for handle in handles {
        let sent = handle.join().expect("producer thread");
        per_thread_ids.push(sent.iter().map(|(_, r)| r.id.0).collect());
        for (m, r) in sent {
            model.record(m, r);
        }
    }
    let total = threads * per_thread;
    assert_eq!(model.sent.len() as u64, total);
    let ids: HashSet<u64> = model.sent.iter().map(|s| s.receipt.id.0).collect();
    assert_eq!(ids.len() as u64, total, "duplicate message ids");
    for ids in &per_thread_ids {
        assert!(
            ids.windows(2).all(|w| w[0] < w[1]),
            "a thread's puts out of log order"
        );
    }
    let mut queues: BTreeMap<u32, Vec<(u64, u64)>> = BTreeMap::new();
    for s in &model.sent {
        queues
            .entry(s.receipt.queue)
            .or_default()
            .push((s.receipt.queue_offset, s.receipt.id.0));
    }
    assert!(queues.len() > 1, "everything went to one queue");
    for (queue, entries) in &mut queues {
        entries.sort_unstable();
        for (index, (offset, _)) in entries.iter().enumerate() {
            assert_eq!(
                *offset, index as u64,
                "queue {queue}: offsets not contiguous"
            );
        }
        assert!(
            entries.windows(2).all(|w| w[0].1 < w[1].1),
            "queue {queue}: queue order differs from log order"
        );
    }
    model.verify(&store);
    let store = Arc::try_unwrap(store).expect("producers are done");
    store.close().unwrap();
    let store = common::open(dir.path(), options);
    assert_eq!(store.recovery_report().records_scanned, 0);
    model.verify(&store);
    store.close().unwrap();
}

#[test]
fn concurrent_producers_async_lose_and_duplicate_nothing() {
    concurrent_producers(SyncMode::Async, 8, 10_000);
}

#[test]
fn concurrent_producers_sync_lose_and_duplicate_nothing() {
    concurrent_producers(SyncMode::Sync, 8, 500);
}

#[test]
fn consumer_offsets_survive_close_and_reopen() {
    let dir = tempdir();
    let store = common::open(dir.path(), small_options());
    let mut model = Model::new();
    model.put_many(&store, "orders", 0, 200);
    model.put_many(&store, "other", 0, 20);
    store.commit_offset("g1", "orders", 0, 5).unwrap();
    store.commit_offset("g1", "orders", 1, 7).unwrap();
    store.commit_offset("g2", "orders", 1, 3).unwrap();
    store.commit_offset("g1", "other", 2, 1).unwrap();
    store.commit_offset("g1", "orders", 0, 9).unwrap(); // replaces 5
    store.close().unwrap();

    let store = common::open(dir.path(), small_options());
    assert_eq!(store.committed_offset("g1", "orders", 0), Some(9));
    assert_eq!(store.committed_offset("g1", "orders", 1), Some(7));
    assert_eq!(store.committed_offset("g2", "orders", 1), Some(3));
    assert_eq!(store.committed_offset("g1", "other", 2), Some(1));
    assert_eq!(store.committed_offset("g2", "orders", 0), None);
    assert_eq!(store.committed_offset("g3", "orders", 0), None);
    let lag = store
        .stats()
        .consumers
        .into_iter()
        .find(|c| c.group == "g1" && c.topic == "orders" && c.queue == 0)
        .expect("g1 orders 0 in stats");
    let end = store.queue_end_offset("orders", 0).unwrap();
    assert_eq!(lag.committed_offset, 9);
    assert_eq!(lag.lag, end - 9);
    model.verify(&store);
    store.close().unwrap();
}

#[test]
fn consumer_offsets_survive_a_crash_after_flush() {
    let dir = tempdir();
    let store = common::open(dir.path(), quiet_options());
    let mut model = Model::new();
    model.put_many(&store, "orders", 0, 100);
    store.commit_offset("g", "orders", 0, 11).unwrap();
    store.commit_offset("g", "orders", 3, 4).unwrap();
    store.flush().unwrap();
    store.commit_offset("g", "orders", 0, 20).unwrap(); // not flushed
    store.simulate_crash();

    let store = common::open(dir.path(), quiet_options());
    assert_eq!(store.committed_offset("g", "orders", 3), Some(4));
    let q0 = store.committed_offset("g", "orders", 0);
    assert!(
        q0 == Some(11) || q0 == Some(20),
        "flushed offset 11 lost: {q0:?}"
    );
    model.verify(&store);
    store.close().unwrap();
}

#[test]
fn sync_mode_commit_offset_survives_a_crash_at_once() {
    let dir = tempdir();
    let options = Options {
        sync_mode: SyncMode::Sync,
        ..quiet_options()
    };
    let store = common::open(dir.path(), options.clone());
    let mut model = Model::new();
    model.put_many(&store, "orders", 0, 40);
    store.commit_offset("g", "orders", 1, 6).unwrap();
    store.simulate_crash();

    let store = common::open(dir.path(), options);
    assert_eq!(store.committed_offset("g", "orders", 1), Some(6));
    model.verify(&store);
    store.close().unwrap();
}

#[test]
fn message_over_the_limit_is_refused() {
    let dir = tempdir();
    let options = small_options();
    let limit = options.message_bytes_max();
    assert_eq!(limit, 16 * 1024, "a quarter of the 64 KiB segment");
    let store = common::open(dir.path(), options);
    let mut model = Model::new();
    model.put_many(&store, "big", 0, 30);
    // 64-byte header + 3-byte topic + body: exactly at the limit is accepted.
    let fits = Message::new("big", vec![7u8; limit as usize - 64 - 3]);
    model.put(&store, fits);
    let over = Message::new("big", vec![7u8; limit as usize - 64 - 3 + 1]);
    match store.put(&over) {
        Err(Error::MessageTooLarge { bytes, bytes_max }) => {
            assert_eq!(bytes, limit + 1);
            assert_eq!(bytes_max, limit);
        }
        other => panic!("expected MessageTooLarge, got {other:?}"),
    }
    let huge = Message::new("big", vec![1u8; 1 << 20]).with_key("k");
    assert!(matches!(
        store.put(&huge),
        Err(Error::MessageTooLarge { .. })
    ));
    model.put_many(&store, "big", 30, 30);
    model.verify(&store);
    store.close().unwrap();
    let store = common::open(dir.path(), small_options());
    model.verify(&store);
    store.close().unwrap();
}

#[test]
fn invalid_topics_are_refused() {
    let dir = tempdir();
    let store = common::open(dir.path(), small_options());
    let mut model = Model::new();
    model.put_many(&store, "good", 0, 40);
    let long = "t".repeat(128);
    let bad = [
        "",
        long.as_str(),
        "a/b",
        "with space",
        "caf\u{e9}",
        "..",
        ".",
        "__delay",
        "__x",
        "tab\t",
    ];
    for topic in bad {
        let what = format!("topic {topic:?}");
        assert!(
            matches!(
                store.put(&Message::new(topic, "x")),
                Err(Error::InvalidTopic { .. })
            ),
            "put to {what}"
        );
        assert!(
            matches!(store.pull(topic, 0, 0, 1), Err(Error::InvalidTopic { .. })),
            "pull of {what}"
        );
        assert!(
            matches!(
                store.commit_offset("g", topic, 0, 1),
                Err(Error::InvalidTopic { .. })
            ),
            "commit to {what}"
        );
        assert!(
            matches!(
                store.commit_offset(topic, "good", 0, 1),
                Err(Error::InvalidTopic { .. })
            ),
            "commit by group {what}"
        );
    }
    // The longest and the oddest valid names work.
    model.put(&store, Message::new("t".repeat(127), "longest"));
    model.put(&store, Message::new("A-z_0.9", "charset"));
    model.put_many(&store, "good", 40, 10);
    model.verify(&store);
    store.close().unwrap();
    let store = common::open(dir.path(), small_options());
    model.verify(&store);
    store.close().unwrap();
}

#[test]
fn unknown_queue_is_refused() {
    let dir = tempdir();
    let store = common::open(dir.path(), small_options());
    let mut model = Model::new();
    model.put_many(&store, "q", 0, 40);
    assert_eq!(store.queue_count("q").unwrap(), 4);
    match store.put(&Message::new("q", "x").with_queue(4)) {
        Err(Error::UnknownQueue {
            topic,
            queue,
            queue_count,
        }) => {
            assert_eq!((topic.as_str(), queue, queue_count), ("q", 4, 4));
        }
        other => panic!("expected UnknownQueue, got {other:?}"),
    }
    assert!(matches!(
        store.put(&Message::new("q", "x").with_queue(u32::MAX)),
        Err(Error::UnknownQueue { .. })
    ));
    assert!(matches!(
        store.pull("q", 4, 0, 10),
        Err(Error::UnknownQueue { .. })
    ));
    assert!(matches!(
        store.queue_end_offset("q", 9),
        Err(Error::UnknownQueue { .. })
    ));
    assert!(matches!(
        store.commit_offset("g", "q", 4, 0),
        Err(Error::UnknownQueue { .. })
    ));
    model.put(&store, Message::new("q", "last queue").with_queue(3));
    model.verify(&store);
    store.close().unwrap();
}

#[test]
fn invalid_options_are_refused() {
    let dir = tempdir();
    let fresh = dir.path().join("never-created");
    let cases: Vec<(Options, &str)> = vec![
        (
            Options {
                segment_bytes: 64 * 1024 - 1,
                ..small_options()
            },
            "segment_bytes",
        ),
        (
            Options {
                segment_bytes: 1024,
                ..small_options()
            },
            "segment_bytes",
        ),
        (
            Options {
                flush_interval_ms: 0,
                ..small_options()
            },
            "flush_interval_ms",
        ),
        (
            Options {
                consume_queue_file_entries: 1,
                ..small_options()
            },
            "consume_queue_file_entries",
        ),
        (
            Options {
                default_queue_count: Some(0),
                ..small_options()
            },
            "default_queue_count",
        ),
    ];
    for (options, field) in &cases {
        match Store::open(&fresh, options.clone()) {
            Err(Error::InvalidOptions { name, .. }) => assert_eq!(name, *field),
            other => panic!("{field}: expected InvalidOptions, got {other:?}"),
        }
        assert!(
            !fresh.exists(),
            "{field}: a refused open created the directory"
        );
    }

    // Refused options do not harm an existing store.
    let store_dir = dir.path().join("store");
    let store = common::open(&store_dir, small_options());
    let mut model = Model::new();
    model.put_many(&store, "opts", 0, 300);
    store.close().unwrap();
    for (options, field) in &cases {
        assert!(
            matches!(
                Store::open(&store_dir, options.clone()),
                Err(Error::InvalidOptions { .. })
            ),
            "{field}"
        );
    }
    // Queue counts may grow, never shrink.
    let shrink = Options {
        default_queue_count: Some(2),
        ..small_options()
    };
    assert!(matches!(
        Store::open(&store_dir, shrink),
        Err(Error::InvalidOptions { .. })
    ));
    let store = common::open(&store_dir, small_options());
    model.verify(&store);
    store.close().unwrap();
}

#[test]
fn same_key_always_lands_in_the_same_queue() {
    let dir = tempdir();
    let store = common::open(dir.path(), small_options());
    let mut model = Model::new();
    let mut queue_of: HashMap<String, u32> = HashMap::new();
    for round in 0..5u64 {
        for k in 0..60u64 {
            let key = format!("customer-{k}");
            let m = Message::new("keyed", format!("{key}/{round}")).with_key(key.clone());
            let receipt = model.put(&store, m);
            let queue = *queue_of.entry(key.clone()).or_insert(receipt.queue);
            assert_eq!(receipt.queue, queue, "{key} moved queue");
        }
    }
    let used: HashSet<u32> = queue_of.values().copied().collect();
    assert!(used.len() > 1, "60 keys all hashed to one queue");
    model.verify(&store);
    store.close().unwrap();

    // The choice is stable across reopen.
    let store = common::open(dir.path(), small_options());
    for (key, queue) in &queue_of {
        let receipt = model.put(
            &store,
            Message::new("keyed", format!("{key}/after")).with_key(key.clone()),
        );
        assert_eq!(receipt.queue, *queue, "{key} moved queue after reopen");
    }
    model.verify(&store);
    // Per key, every message is in the key's queue.
    for queue in 0..4 {
        let pulled = common::read_queue(&store, "keyed", queue);
        let mut last_round: HashMap<String, usize> = HashMap::new();
        for m in pulled {
            let key = m.key.clone().unwrap();
            assert_eq!(queue_of[&key], queue);
            let seen = last_round.entry(key).or_insert(0);
            *seen += 1;
        }
        for (key, seen) in last_round {
            assert_eq!(seen, 6, "{key}");
        }
    }
    store.close().unwrap();
}

#[test]
fn concurrent_checkpoint_writers_never_fail() {
    // flush() (from several threads) and the flusher all write the checkpoint; they used to
    // race on its temporary file (ENOENT on rename, or a half-written file renamed in place).
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(common::open(
        dir.path(),
        Options {
            flush_interval_ms: 1,
            checkpoint_interval_ms: 10,
            ..common::small_options()
        },
    ));
    let threads: Vec<_> = (0..3)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                for round in 0..300 {
                    store
                        .put(&Message::new("race", format!("{t}-{round}")))
                        .unwrap();
                    store.flush().unwrap();
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    Arc::into_inner(store).unwrap().close().unwrap();
    let store = common::open(dir.path(), common::small_options());
    assert_eq!(
        store.recovery_report().checkpoint,
        CheckpointUse::Used {
            clean_shutdown: true
        }
    );
}

#[test]
fn commit_offset_past_the_queue_end_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = common::open(dir.path(), common::small_options());
    store.put(&Message::new("t", "one").with_queue(0)).unwrap();
    store.flush().unwrap();
    let end = store.queue_end_offset("t", 0).unwrap();
    assert_eq!(end, 1);
    store.commit_offset("g", "t", 0, end).unwrap();
    match store.commit_offset("g", "t", 0, end + 1) {
        Err(Error::OffsetOutOfRange { offset, end: e, .. }) => {
            assert_eq!((offset, e), (2, 1));
        }
        other => panic!("expected OffsetOutOfRange, got {other:?}"),
    }
    assert_eq!(store.committed_offset("g", "t", 0), Some(1));
}
