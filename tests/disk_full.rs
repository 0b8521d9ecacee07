#![allow(clippy::unwrap_used, clippy::expect_used)]
//! A full disk, simulated through the I/O seam: puts fail with `Error::DiskFull`, nothing
//! acknowledged is lost, the store stays usable, and puts resume once space is freed.

mod common;

use std::path::Path;
use std::sync::Arc;

use delaystore::io::{FileSystem, SimFs};
use delaystore::{Error, ManualClock, Message, Options, Store, SyncMode};

fn options(fs: &SimFs, clock: &ManualClock, sync_mode: SyncMode) -> Options {
    Options {
        fs: Arc::new(fs.clone()) as Arc<dyn FileSystem>,
        clock: Arc::new(clock.clone()),
        sync_mode,
        ..common::small_options()
    }
}

#[test]
fn puts_fail_cleanly_on_a_full_disk_and_resume_when_space_is_freed() {
    for sync_mode in [SyncMode::Sync, SyncMode::Async] {
        let fs = SimFs::new();
        let clock = ManualClock::new(1_700_000_000_000);
        let dir = Path::new("/store");
        let store = Store::open(dir, options(&fs, &clock, sync_mode)).unwrap();
        // Room for the files already there plus a little: the next segments cannot be made.
        fs.set_capacity_bytes(Some(fs.used_bytes() + 100 * 1024));
        let body = vec![b'x'; 1000];
        let mut acked = Vec::new();
        let mut full = None;
        for seq in 0..10_000u64 {
            match store.put(
                &Message::new("t", body.clone())
                    .with_queue(0)
                    .with_key(format!("{seq}")),
            ) {
                Ok(receipt) => acked.push(receipt.id),
                Err(err) => {
                    full = Some(err);
                    break;
                }
            }
        }
        let err = full.expect("the disk filled up");
        assert!(matches!(err, Error::DiskFull { .. }), "{err}");
        // The store is not poisoned: it still fails the same clean way, and reads work.
        assert!(!store.stats().poisoned);
        let again = store.put(&Message::new("t", body.clone()).with_queue(0));
        assert!(
            matches!(again, Err(Error::DiskFull { .. })),
            "{sync_mode:?}: after {err}, {again:?} (used {} bytes)",
            fs.used_bytes()
        );
        let got = common::pull_all(&store, "t", 0, 0, acked.len());
        assert_eq!(
            got.len(),
            acked.len(),
            "{sync_mode:?}: acknowledged messages readable"
        );

        // Space comes back: puts resume, and everything survives a reopen.
        fs.set_capacity_bytes(None);
        let after = store
            .put(&Message::new("t", body.clone()).with_queue(0))
            .unwrap();
        acked.push(after.id);
        store.close().unwrap();
        let store = Store::open(dir, options(&fs, &clock, sync_mode)).unwrap();
        let got = common::pull_all(&store, "t", 0, 0, acked.len());
        let ids: Vec<_> = got.iter().map(|m| m.id).collect();
        assert_eq!(ids, acked, "{sync_mode:?}");
        store.close().unwrap();
    }
}
