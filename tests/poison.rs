//! A failed sync poisons the store: the put that needed it fails, every later write fails
//! with `Error::Poisoned`, nothing is acknowledged after the failure, and a reopen recovers
//! everything acknowledged before it. (After a failed fsync, Linux may mark the dirty pages
//! clean, so a retried sync could "succeed" without the data: REFERENCE.md section 5.)
#![allow(clippy::unwrap_used, clippy::expect_used)]
mod common;

use std::path::Path;
use std::sync::Arc;

use delaystore::io::SimFs;
use delaystore::{Durability, Error, Message, Options, Store, SyncMode};

fn options(fs: &SimFs, sync_mode: SyncMode) -> Options {
    Options {
        fs: Arc::new(fs.clone()),
        sync_mode,
        flush_interval_ms: 60_000,
        checkpoint_interval_ms: 600_000,
        ..common::small_options()
    }
}

fn bodies(store: &Store) -> Vec<String> {
    let mut out = Vec::new();
    for queue in 0..store.queue_count("t").unwrap() {
        for m in store.pull("t", queue, 0, 10_000).unwrap() {
            out.push(String::from_utf8(m.body).unwrap());
        }
    }
    out.sort();
    out
}

#[test]
fn failed_sync_poisons_and_nothing_is_acknowledged_after_it() {
    for mode in [SyncMode::Sync, SyncMode::Async] {
        let fs = SimFs::new();
        let dir = Path::new("/poison");
        let store = Store::open(dir, options(&fs, mode)).unwrap();
        for i in 0..20 {
            store
                .put_with(&Message::new("t", format!("ok-{i:02}")), Durability::Sync)
                .unwrap();
        }
        fs.fail_syncs_after(Some(0));
        let failed = store.put_with(&Message::new("t", "failed"), Durability::Sync);
        assert!(
            matches!(failed, Err(Error::Io { .. })),
            "{mode:?}: the put whose sync failed must fail: {failed:?}"
        );
        // The file system works again, but the store must not trust it any more.
        fs.fail_syncs_after(None);
        for durability in [Durability::Sync, Durability::Buffered] {
            let later = store.put_with(&Message::new("t", "later"), durability);
            assert!(
                matches!(later, Err(Error::Poisoned)),
                "{mode:?}/{durability:?}: {later:?}"
            );
        }
        assert!(matches!(store.flush(), Err(Error::Poisoned)));
        assert!(store.stats().poisoned);
        // Closing a poisoned store reports it (no clean checkpoint is written).
        assert!(matches!(store.close(), Err(Error::Poisoned)));

        // Reopen on what a process crash leaves: everything acknowledged is there; the failed
        // put may or may not be (it was never acknowledged); "later" never is.
        let store = Store::open(dir, options(&fs.process_crash(), mode)).unwrap();
        let got = bodies(&store);
        let expected: Vec<String> = (0..20).map(|i| format!("ok-{i:02}")).collect();
        let kept: Vec<String> = got
            .iter()
            .filter(|b| b.starts_with("ok-"))
            .cloned()
            .collect();
        assert_eq!(kept, expected, "{mode:?}");
        assert!(!got.iter().any(|b| b == "later"), "{mode:?}: {got:?}");
        assert!(got.len() <= 21);
        store
            .put_with(&Message::new("t", "after-reopen"), Durability::Sync)
            .unwrap();
        store.close().unwrap();
    }
}

#[test]
fn failed_background_flush_poisons_async_store() {
    let fs = SimFs::new();
    let dir = Path::new("/poison-bg");
    let store = Store::open(
        dir,
        Options {
            flush_interval_ms: 5,
            ..options(&fs, SyncMode::Async)
        },
    )
    .unwrap();
    store.put(&Message::new("t", "before")).unwrap();
    fs.fail_syncs_after(Some(0));
    store.put(&Message::new("t", "unsynced")).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !store.stats().poisoned && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert!(
        store.stats().poisoned,
        "the flusher's failed sync must poison"
    );
    assert!(matches!(
        store.put(&Message::new("t", "after")),
        Err(Error::Poisoned)
    ));
    drop(store);
}

/// A failed directory sync while the dispatcher creates a consume-queue file must not wedge
/// dispatch: the file was created but not recorded, so every retry failed with "File exists"
/// and the message never became visible (found by the model test, `tests/model.rs`). Queue
/// files are derived from the log (a queue file lost in a power loss is rebuilt at open), so the
/// dispatcher may retry the creation, provided the half-made file is removed first.
#[test]
fn failed_sync_while_creating_a_queue_file_does_not_wedge_dispatch() {
    for k in 0..6 {
        let fs = SimFs::new();
        let dir = Path::new("/queue-create");
        let store = Store::open(dir, options(&fs, SyncMode::Async)).unwrap();
        // Every sync from the k-th on fails for a moment: one of them is the queue file's.
        fs.fail_syncs_after(Some(k));
        store
            .put_with(&Message::new("t", "first"), Durability::Buffered)
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(30));
        fs.fail_syncs_after(None);
        let got = store
            .pull_wait("t", 0, 0, 10, std::time::Duration::from_secs(3))
            .unwrap();
        assert_eq!(got.len(), 1, "k={k}: the message never became visible");
        drop(store);
    }
}
