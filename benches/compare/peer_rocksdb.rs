//! RocksDB as a peer (only with `--features bench-rocksdb`): column families `delayed` (keyed by
//! due, seq big-endian), `target` and `bulk`; one write batch per put, WAL written without sync
//! (survives a process crash) for the async class, `sync = true` for the sync class. Moves take
//! a lock: batches are atomic but not isolated.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use delaystore::Clock;
use rocksdb::{ColumnFamily, IteratorMode, Options, WriteBatch, WriteOptions, DB};

use crate::dispatcher::{deliver_polling, Mover};
use crate::peer::{due_key, parse_due_key, Class, DelayQueue, OpenCtx, Visit};

pub struct RocksdbPeer {
    db: DB,
    sync: bool,
    clock: Arc<dyn Clock>,
    next_id: AtomicU64,
    mover: Mutex<()>,
}

fn rk<E: std::fmt::Display>(what: &'static str) -> impl Fn(E) -> String {
    move |e| format!("rocksdb {what}: {e}")
}

impl RocksdbPeer {
    pub fn open(ctx: &OpenCtx) -> Result<RocksdbPeer, String> {
        let mut options = Options::default();
        options.create_if_missing(true);
        options.create_missing_column_families(true);
        let db = DB::open_cf(
            &options,
            ctx.dir.join("rocksdb"),
            ["delayed", "target", "bulk"],
        )
        .map_err(rk("open"))?;
        Ok(RocksdbPeer {
            db,
            sync: ctx.class == Class::Sync,
            clock: ctx.clock.clone(),
            next_id: AtomicU64::new(1),
            mover: Mutex::new(()),
        })
    }

    fn cf(&self, name: &str) -> Result<&ColumnFamily, String> {
        self.db
            .cf_handle(name)
            .ok_or_else(|| format!("rocksdb: no column family {name}"))
    }

    fn write(&self, batch: WriteBatch) -> Result<(), String> {
        let mut options = WriteOptions::default();
        options.set_sync(self.sync);
        self.db.write_opt(batch, &options).map_err(rk("write"))
    }
}

impl DelayQueue for RocksdbPeer {
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
        let delayed = self.cf("delayed")?;
        let mut batch = WriteBatch::default();
        for seq in first_seq..first_seq + count {
            batch.put_cf(delayed, due_key(due, seq), payload);
        }
        self.write(batch)
    }

    fn append_bulk(&self, payload: &[u8]) -> Result<(), String> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut batch = WriteBatch::default();
        batch.put_cf(self.cf("bulk")?, id.to_be_bytes(), payload);
        self.write(batch)
    }

    fn pending(&self) -> Result<u64, String> {
        let mut n = 0;
        for item in self
            .db
            .iterator_cf(self.cf("delayed")?, IteratorMode::Start)
        {
            item.map_err(rk("iterate"))?;
            n += 1;
        }
        Ok(n)
    }

    fn deliver(&self, expect: u64, timeout: Duration, visit: &mut Visit) -> Result<u64, String> {
        deliver_polling(self, self.clock.as_ref(), expect, timeout, visit)
    }

    fn close(self: Box<Self>) -> Result<(), String> {
        self.db.flush_wal(true).map_err(rk("flush wal"))
    }
}

impl Mover for RocksdbPeer {
    fn move_due(&self, now_ms: u64, limit: usize) -> Result<Vec<(u64, u64)>, String> {
        let _one_mover = self
            .mover
            .lock()
            .map_err(|_| "rocksdb mover lock poisoned".to_owned())?;
        let (delayed, target) = (self.cf("delayed")?, self.cf("target")?);
        let end = due_key(now_ms, u64::MAX);
        let mut batch = WriteBatch::default();
        let mut moved = Vec::new();
        for item in self
            .db
            .iterator_cf(delayed, IteratorMode::Start)
            .take(limit)
        {
            let (key, value) = item.map_err(rk("iterate"))?;
            if key.as_ref() > end.as_slice() {
                break;
            }
            let (due, seq) = parse_due_key(&key);
            let id = self.next_id.fetch_add(1, Ordering::Relaxed);
            let mut entry = Vec::with_capacity(key.len() + value.len());
            entry.extend_from_slice(&key);
            entry.extend_from_slice(&value);
            batch.put_cf(target, id.to_be_bytes(), entry);
            batch.delete_cf(delayed, &key);
            moved.push((seq, due));
        }
        if !moved.is_empty() {
            self.write(batch)?;
        }
        Ok(moved)
    }

    fn next_due_ms(&self) -> Result<Option<u64>, String> {
        match self
            .db
            .iterator_cf(self.cf("delayed")?, IteratorMode::Start)
            .next()
        {
            Some(item) => Ok(Some(parse_due_key(&item.map_err(rk("iterate"))?.0).0)),
            None => Ok(None),
        }
    }
}
