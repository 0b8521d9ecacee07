//! fjall (LSM tree) as a peer: a partition keyed by (due, seq) big-endian, a target partition
//! and a bulk partition; one write batch per put with `PersistMode::Buffer` (the journal reaches
//! the OS: survives a process crash) for the async class, `SyncData` (fdatasync) for the sync
//! class. Moves take a lock: fjall batches are atomic but not isolated, and two concurrent
//! movers could move the same entry twice.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use delaystore::Clock;
use fjall::{Config, Keyspace, PartitionCreateOptions, PartitionHandle, PersistMode};

use crate::dispatcher::{deliver_polling, Mover};
use crate::peer::{due_key, parse_due_key, Class, DelayQueue, OpenCtx, Visit};

pub struct FjallPeer {
    keyspace: Keyspace,
    delayed: PartitionHandle,
    target: PartitionHandle,
    bulk: PartitionHandle,
    mode: PersistMode,
    clock: Arc<dyn Clock>,
    next_id: AtomicU64,
    mover: Mutex<()>,
}

fn lsm<E: std::fmt::Display>(what: &'static str) -> impl Fn(E) -> String {
    move |e| format!("fjall {what}: {e}")
}

impl FjallPeer {
    pub fn open(ctx: &OpenCtx) -> Result<FjallPeer, String> {
        let keyspace = Config::new(ctx.dir.join("fjall"))
            .open()
            .map_err(lsm("open"))?;
        let partition = |name: &str| {
            keyspace
                .open_partition(name, PartitionCreateOptions::default())
                .map_err(lsm("partition"))
        };
        let (delayed, target, bulk) = (
            partition("delayed")?,
            partition("target")?,
            partition("bulk")?,
        );
        Ok(FjallPeer {
            mode: match ctx.class {
                Class::Async => PersistMode::Buffer,
                Class::Sync => PersistMode::SyncData,
            },
            clock: ctx.clock.clone(),
            next_id: AtomicU64::new(1),
            mover: Mutex::new(()),
            keyspace,
            delayed,
            target,
            bulk,
        })
    }
}

impl DelayQueue for FjallPeer {
    fn put(&self, seq: u64, delay_ms: u64, payload: &[u8]) -> Result<(), String> {
        self.put_batch(seq, 1, delay_ms, payload)
    }

    fn put_batch(
        &self,
        first_seq: u64,
        count: u64,
        delay_ms: u64,
        payload: &[u8],
    ) -> Result<(), String> {
        let due = self.clock.now_ms() + delay_ms;
        let mut batch = self.keyspace.batch().durability(Some(self.mode));
        for seq in first_seq..first_seq + count {
            batch.insert(&self.delayed, due_key(due, seq), payload);
        }
        batch.commit().map_err(lsm("commit"))
    }

    fn append_bulk(&self, payload: &[u8]) -> Result<(), String> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut batch = self.keyspace.batch().durability(Some(self.mode));
        batch.insert(&self.bulk, id.to_be_bytes(), payload);
        batch.commit().map_err(lsm("commit"))
    }

    fn pending(&self) -> Result<u64, String> {
        self.delayed.len().map(|n| n as u64).map_err(lsm("len"))
    }

    fn deliver(&self, expect: u64, timeout: Duration, visit: &mut Visit) -> Result<u64, String> {
        deliver_polling(self, self.clock.as_ref(), expect, timeout, visit)
    }

    fn close(self: Box<Self>) -> Result<(), String> {
        self.keyspace.persist(self.mode).map_err(lsm("persist"))
    }
}

impl Mover for FjallPeer {
    fn move_due(&self, now_ms: u64, limit: usize) -> Result<Vec<(u64, u64)>, String> {
        let _one_mover = self
            .mover
            .lock()
            .map_err(|_| "fjall mover lock poisoned".to_owned())?;
        let end = due_key(now_ms, u64::MAX);
        let mut batch = self.keyspace.batch().durability(Some(self.mode));
        let mut moved = Vec::new();
        for item in self.delayed.range(..=end.as_slice()).take(limit) {
            let (key, value) = item.map_err(lsm("range"))?;
            let (due, seq) = parse_due_key(&key);
            let id = self.next_id.fetch_add(1, Ordering::Relaxed);
            let mut entry = Vec::with_capacity(16 + value.len());
            entry.extend_from_slice(&key);
            entry.extend_from_slice(&value);
            batch.insert(&self.target, id.to_be_bytes(), entry);
            batch.remove(&self.delayed, key);
            moved.push((seq, due));
        }
        if !moved.is_empty() {
            batch.commit().map_err(lsm("commit"))?;
        }
        Ok(moved)
    }

    fn next_due_ms(&self) -> Result<Option<u64>, String> {
        let first = self.delayed.first_key_value().map_err(lsm("first"))?;
        Ok(first.map(|(key, _)| parse_due_key(&key).0))
    }
}
