#![allow(clippy::unwrap_used, clippy::expect_used)]
mod common;

use delaystore::{Message, Options};

#[test]
fn put_pull_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let store = common::open(dir.path(), common::small_options());
    for i in 0..1000u32 {
        store
            .put(&Message::new("orders", format!("body-{i}")).with_queue(i % 2))
            .unwrap();
    }
    let q0 = common::pull_all(&store, "orders", 0, 0, 500);
    assert_eq!(q0.len(), 500);
    assert_eq!(q0[1].body, b"body-2");
    store.close().unwrap();
    let store = common::open(
        dir.path(),
        Options {
            ..common::small_options()
        },
    );
    let q1 = common::pull_all(&store, "orders", 1, 0, 500);
    assert_eq!(q1.len(), 500);
    assert_eq!(q1[499].body, b"body-999");
    println!("{:?}", store.recovery_report());
}
