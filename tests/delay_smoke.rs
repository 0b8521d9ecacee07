#![allow(clippy::unwrap_used, clippy::expect_used)]
mod common;

use std::sync::Arc;
use std::time::Duration;

use delaystore::{ManualClock, Message, Options};

#[test]
fn delayed_message_delivered_after_due_not_before() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000_000);
    let options = Options {
        delay_levels: Some("1s 5s".into()),
        clock: Arc::new(clock.clone()),
        ..common::small_options()
    };
    let store = common::open(dir.path(), options.clone());
    let receipt = store
        .put(
            &Message::new("orders", "close 1")
                .with_queue(0)
                .with_delay_level(2),
        )
        .unwrap();
    assert_eq!(receipt.due_ms, Some(1_005_000));
    std::thread::sleep(Duration::from_millis(50));
    assert!(store.pull("orders", 0, 0, 10).unwrap().is_empty());
    clock.advance_ms(4_999);
    std::thread::sleep(Duration::from_millis(50));
    assert!(store.pull("orders", 0, 0, 10).unwrap().is_empty());
    clock.advance_ms(1);
    let got = store
        .pull_wait("orders", 0, 0, 10, Duration::from_secs(5))
        .unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].body, b"close 1");
    assert_eq!(got[0].id, receipt.id);
    assert_eq!(got[0].due_ms, Some(1_005_000));
    assert_eq!(got[0].delivered_ms, Some(1_005_000));
    store.simulate_crash();
    let store = common::open(dir.path(), options);
    clock.advance_ms(10_000);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(store.pull("orders", 0, 0, 10).unwrap().len(), 1);
    assert_eq!(store.stats().pending_per_level, vec![(2, 0)]);
}

#[test]
fn corrupt_origin_is_skipped_counted_and_does_not_block_its_level() {
    use std::io::{Read, Seek, SeekFrom, Write};
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000_000);
    let options = Options {
        delay_levels: Some("1s".into()),
        clock: Arc::new(clock.clone()),
        ..common::small_options()
    };
    let store = common::open(dir.path(), options);
    let first = store
        .put(
            &Message::new("orders", "rotten-body")
                .with_queue(0)
                .with_delay_level(1),
        )
        .unwrap();
    store
        .put(
            &Message::new("orders", "healthy")
                .with_queue(0)
                .with_delay_level(1),
        )
        .unwrap();
    store.flush().unwrap();
    // Flip one body byte of the first record on disk (the store maps the same page cache).
    let segment = dir.path().join("commitlog").join(format!("{:020}", 0));
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(segment)
        .unwrap();
    let mut buf = vec![0u8; 4096];
    file.read_exact(&mut buf).unwrap();
    let at = first.id.0 as usize
        + buf[first.id.0 as usize..]
            .windows(11)
            .position(|w| w == b"rotten-body")
            .unwrap();
    file.seek(SeekFrom::Start(at as u64)).unwrap();
    file.write_all(b"R").unwrap();
    file.sync_all().unwrap();

    clock.advance_ms(1_000);
    let got = store
        .pull_wait("orders", 0, 0, 10, Duration::from_secs(5))
        .unwrap();
    assert_eq!(got.len(), 1, "only the healthy message is delivered");
    assert_eq!(got[0].body, b"healthy");
    assert_eq!(store.stats().undeliverable, 1);
}
