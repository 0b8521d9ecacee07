//! Helpers shared by `tests/delivery.rs`, `tests/timer.rs` and `tests/cli.rs` only.
#![allow(dead_code, unused_imports, clippy::unwrap_used, clippy::expect_used)]

use std::fmt::Debug;
use std::thread;
use std::time::{Duration, Instant};

use delaystore::{MessageId, Store, StoredMessage};

/// The crate's seeded generator (splitmix64): the same seed gives the same schedule on every run.
pub use delaystore::seeded::SeededRng as Rng;

/// Longest real time to wait for something that must arrive.
pub const WAIT: Duration = Duration::from_secs(10);
/// Real time given to the delivery thread before checking that nothing arrived.
pub const QUIET: Duration = Duration::from_millis(100);

/// Polls `probe` until it returns `want` (bounded by [`WAIT`]); returns the last value.
pub fn eventually<T: PartialEq + Debug>(mut probe: impl FnMut() -> T, want: &T) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        let got = probe();
        if got == *want || Instant::now() >= deadline {
            return got;
        }
        thread::sleep(Duration::from_millis(2));
    }
}

/// Follows every queue of one topic from offset 0, keeping what it pulled.
pub struct Tail {
    pub topic: String,
    pub next: Vec<u64>,
    pub got: Vec<StoredMessage>,
}

impl Tail {
    pub fn new(store: &Store, topic: &str) -> Self {
        let queues = store.queue_count(topic).unwrap();
        Tail {
            topic: topic.into(),
            next: vec![0; queues as usize],
            got: Vec::new(),
        }
    }

    /// Pulls whatever is visible now; checks each queue's offsets follow on without gaps.
    pub fn poll(&mut self, store: &Store) -> usize {
        let before = self.got.len();
        for (queue, next) in (0u32..).zip(self.next.iter_mut()) {
            loop {
                let batch = store.pull(&self.topic, queue, *next, 1000).unwrap();
                if batch.is_empty() {
                    break;
                }
                for message in batch {
                    assert_eq!(
                        message.queue_offset, *next,
                        "{}/{queue}: offsets not contiguous",
                        self.topic
                    );
                    *next += 1;
                    self.got.push(message);
                }
            }
        }
        self.got.len() - before
    }

    /// Waits (at most [`WAIT`]) until at least `count` messages were pulled; returns the count.
    pub fn wait_for(&mut self, store: &Store, count: usize) -> usize {
        let deadline = Instant::now() + WAIT;
        loop {
            let token = store.visibility_token();
            self.poll(store);
            let now = Instant::now();
            if self.got.len() >= count || now >= deadline {
                return self.got.len();
            }
            store.wait_for_entries(token, (deadline - now).min(Duration::from_millis(20)));
        }
    }

    /// Leaves the delivery thread [`QUIET`] of real time, then pulls; returns the count.
    pub fn settle(&mut self, store: &Store) -> usize {
        thread::sleep(QUIET);
        self.poll(store);
        self.got.len()
    }

    pub fn find(&self, id: MessageId) -> Option<&StoredMessage> {
        self.got.iter().find(|m| m.id == id)
    }

    pub fn ids(&self) -> Vec<MessageId> {
        self.got.iter().map(|m| m.id).collect()
    }
}
