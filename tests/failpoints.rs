//! Failpoints armed with `error`, in-process, on the real file system (needs the cargo feature
//! `failpoints`: `cargo test --release --features failpoints --test failpoints`; the kill tests
//! that arm them with `abort` are in `tests/kill.rs`).
//!
//! - A failing `msync` (of the commit log or of a consume queue) poisons the store: the call that
//!   needed it fails, every later write returns `Error::Poisoned` even once the disk works again,
//!   and a reopen keeps everything acknowledged before the failure.
//! - An error before or after a log sync, or in the middle of a segment roll, fails the put and
//!   acknowledges nothing; the store keeps working once the error stops.
//! - Every failpoint is reached by an ordinary workload (so the kill tests cover each).
#![cfg(feature = "failpoints")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use delaystore::failpoint::{arm, hits, NAMES};
use delaystore::{Durability, Error, ManualClock, Message, Options, Store, SyncMode};

/// Failpoints are process-wide: one test at a time arms them.
fn exclusive() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn options(sync_mode: SyncMode) -> Options {
    Options {
        sync_mode,
        segment_bytes: 64 * 1024,
        consume_queue_file_entries: 64,
        // The background flusher never ticks: the test decides every sync.
        flush_interval_ms: 60_000,
        checkpoint_interval_ms: 600_000,
        delay_levels: Some("1s 5s".into()),
        ..Options::default()
    }
}

fn bodies(store: &Store, topic: &str) -> Vec<String> {
    let mut out = Vec::new();
    for queue in 0..store.queue_count(topic).unwrap() {
        for m in store.pull(topic, queue, 0, 100_000).unwrap() {
            out.push(String::from_utf8(m.body).unwrap());
        }
    }
    out.sort();
    out
}

fn wait_dispatched(store: &Store) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while store.stats().dispatched_end_offset < store.stats().durable_end_offset {
        assert!(Instant::now() < deadline, "dispatch did not catch up");
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn expect_poisoned(store: &Store, what: &str) {
    assert!(store.stats().poisoned, "{what}: the store is not poisoned");
    for durability in [Durability::Sync, Durability::Buffered] {
        let later = store.put_with(&Message::new("t", "later"), durability);
        assert!(matches!(later, Err(Error::Poisoned)), "{what}: {later:?}");
    }
    assert!(matches!(store.flush(), Err(Error::Poisoned)), "{what}");
}

#[test]
fn failing_log_msync_poisons_the_store() {
    let _one = exclusive();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), options(SyncMode::Sync)).unwrap();
    let expected: Vec<String> = (0..10).map(|i| format!("ok-{i:02}")).collect();
    for body in &expected {
        store.put(&Message::new("t", body.clone())).unwrap();
    }
    arm("fs.sync_range=error").unwrap();
    let failed = store.put(&Message::new("t", "failed"));
    // The disk works again, but the store must not trust it any more.
    arm("").unwrap();
    assert!(matches!(failed, Err(Error::Io { .. })), "{failed:?}");
    expect_poisoned(&store, "log msync");
    assert!(matches!(store.close(), Err(Error::Poisoned)));

    let store = Store::open(dir.path(), options(SyncMode::Sync)).unwrap();
    let got = bodies(&store, "t");
    let kept: Vec<String> = got
        .iter()
        .filter(|b| b.starts_with("ok-"))
        .cloned()
        .collect();
    assert_eq!(kept, expected);
    assert!(!got.contains(&"later".to_owned()), "{got:?}");
    store.put(&Message::new("t", "after-reopen")).unwrap();
    store.close().unwrap();
}

#[test]
fn failing_queue_msync_poisons_the_store() {
    let _one = exclusive();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), options(SyncMode::Async)).unwrap();
    store.put(&Message::new("t", "first")).unwrap();
    store.flush().unwrap();
    store.put(&Message::new("t", "second")).unwrap();
    // flush: the log sync (one segment) passes, the consume-queue sync after it fails.
    arm("fs.sync_range=error@1").unwrap();
    let flushed = store.flush();
    let log_syncs_passed = hits("fs.sync_range");
    arm("").unwrap();
    assert!(log_syncs_passed >= 2, "the queue sync was not reached");
    assert!(matches!(flushed, Err(Error::Io { .. })), "{flushed:?}");
    expect_poisoned(&store, "queue msync");
    drop(store);

    let store = Store::open(dir.path(), options(SyncMode::Async)).unwrap();
    assert_eq!(bodies(&store, "t"), ["first", "second"]);
    store.close().unwrap();
}

#[test]
fn errors_around_a_log_sync_acknowledge_nothing_and_do_not_stick() {
    let _one = exclusive();
    for point in ["log.before_sync", "log.after_sync"] {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), options(SyncMode::Sync)).unwrap();
        store.put(&Message::new("t", "a")).unwrap();
        arm(&format!("{point}=error")).unwrap();
        let failed = store.put(&Message::new("t", "b"));
        arm("").unwrap();
        assert!(
            matches!(failed, Err(Error::Io { .. })),
            "{point}: {failed:?}"
        );
        // No sync failed: the store is not poisoned, and the next put makes "b" durable too.
        assert!(!store.stats().poisoned, "{point}");
        store.put(&Message::new("t", "c")).unwrap();
        wait_dispatched(&store);
        assert_eq!(bodies(&store, "t"), ["a", "b", "c"], "{point}");
        store.close().unwrap();
    }
}

#[test]
fn an_error_in_the_middle_of_a_roll_fails_one_put_and_the_next_retries_the_roll() {
    let _one = exclusive();
    for point in ["log.roll.after_filler", "log.roll.after_create"] {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), options(SyncMode::Sync)).unwrap();
        arm(&format!("{point}=error")).unwrap();
        let body = "x".repeat(1000);
        let mut acked = Vec::new();
        let mut failed = None;
        for i in 0..200 {
            match store.put(&Message::new("t", format!("{i:03}{body}"))) {
                Ok(_) => acked.push(format!("{i:03}{body}")),
                Err(err) => {
                    failed = Some(err);
                    break;
                }
            }
        }
        arm("").unwrap();
        let failed = failed.unwrap_or_else(|| panic!("{point}: no roll in 200 puts"));
        assert!(matches!(failed, Error::Io { .. }), "{point}: {failed:?}");
        let next = store.put(&Message::new("t", "after"));
        match point {
            // The filler is in place: the retry creates the next segment and goes on.
            "log.roll.after_filler" => {
                assert!(!store.stats().poisoned, "{point}");
                next.unwrap();
                acked.push("after".into());
            }
            // The next segment is in place under its final name but not taken (as after a
            // failed directory sync): the log poisons itself rather than fail every later
            // roll with "File exists". Nothing is lost; a reopen goes on.
            _ => {
                assert!(store.stats().poisoned, "{point}");
                let err = next.expect_err("after_create: expected the store to be poisoned");
                assert!(matches!(err, Error::Poisoned), "{point}: {err:?}");
            }
        }
        wait_dispatched(&store);
        acked.sort();
        assert_eq!(bodies(&store, "t"), acked, "{point}");
        drop(store);
        let store = Store::open(dir.path(), options(SyncMode::Sync)).unwrap();
        assert_eq!(bodies(&store, "t"), acked, "{point}: after reopen");
        store.put(&Message::new("t", "zzz-after-reopen")).unwrap();
        store.close().unwrap();
    }
}

#[test]
fn every_failpoint_is_reached_by_an_ordinary_workload() {
    let _one = exclusive();
    let spec: Vec<String> = NAMES.iter().map(|n| format!("{n}=off")).collect();
    arm(&spec.join(",")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000_000);
    let store = Store::open(
        dir.path(),
        Options {
            clock: Arc::new(clock.clone()),
            // Retention by age (the flusher ticks every 50 ms here, checkpoints every 100 ms).
            retention_ms: Some(60_000),
            flush_interval_ms: 50,
            checkpoint_interval_ms: 100,
            ..options(SyncMode::Sync)
        },
    )
    .unwrap();
    let body = "y".repeat(900);
    let mut cancel = Vec::new();
    for i in 0..150u64 {
        let message = Message::new("t", format!("{i}{body}"));
        // Levels, and arbitrary delays that enter tier 2 or 3 and hop down.
        let message = match i % 4 {
            3 => message.with_delay_ms(1_500 + i * 37),
            level => message.with_delay_level(level as u8),
        };
        let id = store.put(&message).unwrap().id;
        if i % 8 == 3 {
            cancel.push(id);
        }
    }
    for id in cancel {
        store.cancel(id).unwrap();
    }
    // In steps, so timer messages hop through the lower tiers.
    for _ in 0..40 {
        clock.advance_ms(250);
        std::thread::sleep(Duration::from_millis(2));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while store.stats().next_due_ms.is_some() {
        assert!(Instant::now() < deadline, "delivery did not finish");
        std::thread::sleep(Duration::from_millis(2));
    }
    // Everything delivered and nobody registered: the old segments expire.
    clock.advance_ms(3_600_000);
    store.put(&Message::new("t", "newest")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while store.stats().log_start_offset == 0 {
        assert!(Instant::now() < deadline, "retention did not run");
        store.put(&Message::new("t", "tick")).unwrap();
        std::thread::sleep(Duration::from_millis(5));
    }
    store.flush().unwrap();
    store.close().unwrap();
    let counts: Vec<(&str, u64)> = NAMES.iter().map(|n| (*n, hits(n))).collect();
    arm("").unwrap();
    println!("failpoint hits: {counts:?}");
    for (name, count) in counts {
        assert!(count > 0, "failpoint {name} was not reached");
    }
}
