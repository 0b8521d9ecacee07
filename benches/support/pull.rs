//! Consuming a topic in the benches: pull every queue in turn, each from where its last batch
//! ended, and wait for new entries when a round over the queues finds none. Shared by the
//! delivery, timer and compare benches and the order closers; the benches number their
//! messages (the first 8 bytes of a body, little-endian), and [`Seen`] counts which arrived.

// Each bench includes this file as its own module and uses only part of it.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use delaystore::{Store, StoredMessage};

/// Messages per pull.
pub const PULL_BATCH: usize = 1024;

/// What [`consume_topic`] does with what it pulls.
pub trait Consumer {
    /// Whether everything expected has arrived (checked before each round).
    fn done(&self) -> bool;
    /// Called at the start of each round over the queues, before its pulls.
    fn round(&mut self, _store: &Store) -> Result<(), String> {
        Ok(())
    }
    /// Takes one non-empty batch of one queue.
    fn take(&mut self, batch: &[StoredMessage]) -> Result<(), String>;
}

/// Pulls every queue of `topic` until `consumer` is done or `timeout` passed. With a `group`,
/// commits its offset in each queue after each batch, as a real consumer would.
pub fn consume_topic(
    store: &Store,
    topic: &str,
    group: Option<&str>,
    timeout: Duration,
    consumer: &mut impl Consumer,
) -> Result<(), String> {
    let queues = store
        .queue_count(topic)
        .map_err(|e| format!("queue count: {e}"))?;
    let mut next = vec![0u64; queues as usize];
    let start = Instant::now();
    while !consumer.done() && start.elapsed() < timeout {
        let token = store.visibility_token();
        consumer.round(store)?;
        let mut got_any = false;
        for (queue, offset) in (0..queues).zip(next.iter_mut()) {
            let batch = store
                .pull(topic, queue, *offset, PULL_BATCH)
                .map_err(|e| format!("pull: {e}"))?;
            let Some(last) = batch.last() else { continue };
            *offset = last.queue_offset + 1;
            got_any = true;
            consumer.take(&batch)?;
            if let Some(group) = group {
                store
                    .commit_offset(group, topic, queue, *offset)
                    .map_err(|e| format!("commit offset: {e}"))?;
            }
        }
        if !got_any {
            store.wait_for_entries(token, Duration::from_millis(100));
        }
    }
    Ok(())
}

/// The number a bench message carries in the first 8 bytes of its body (`u64::MAX` if the body
/// is shorter).
pub fn body_seq(body: &[u8]) -> u64 {
    body.get(..8)
        .and_then(|b| b.try_into().ok())
        .map_or(u64::MAX, u64::from_le_bytes)
}

/// Which of `total` numbered messages arrived: distinct ones and duplicates (a number out of
/// range counts as a duplicate).
#[derive(Debug, Default)]
pub struct Seen {
    seen: Vec<bool>,
    pub unique: u64,
    pub duplicates: u64,
}

impl Seen {
    pub fn new(total: u64) -> Self {
        Seen {
            seen: vec![false; total as usize],
            ..Seen::default()
        }
    }

    /// Records message `seq`; true the first time it arrives.
    pub fn mark(&mut self, seq: u64) -> bool {
        match self.seen.get_mut(seq as usize) {
            Some(slot) if !*slot => {
                *slot = true;
                self.unique += 1;
                true
            }
            _ => {
                self.duplicates += 1;
                false
            }
        }
    }

    /// Whether all `total` arrived.
    pub fn complete(&self) -> bool {
        self.unique >= self.seen.len() as u64
    }
}
