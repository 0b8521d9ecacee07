//! redb as a peer: a table keyed by (due, seq), a target table and a bulk table, one write
//! transaction per put. redb has no durability between "none" and "fsync": `Durability::None`
//! commits are lost on a process crash unless a later commit is durable. The async class
//! therefore runs it with `None`, a weaker guarantee than the other peers' (which favours
//! redb); the sync class with `Immediate`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use delaystore::Clock;
use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition,
};

use crate::dispatcher::{deliver_polling, Mover};
use crate::peer::{Class, DelayQueue, OpenCtx, Visit};

const DELAYED: TableDefinition<(u64, u64), &[u8]> = TableDefinition::new("delayed");
/// Target entries: ordinal -> seq (8 bytes LE), due (8 bytes LE), body.
const TARGET: TableDefinition<u64, &[u8]> = TableDefinition::new("target");
const BULK: TableDefinition<u64, &[u8]> = TableDefinition::new("bulk");

pub struct RedbPeer {
    db: Database,
    durability: Durability,
    clock: Arc<dyn Clock>,
    next_id: AtomicU64,
}

fn db<E: std::fmt::Display>(what: &'static str) -> impl Fn(E) -> String {
    move |e| format!("redb {what}: {e}")
}

impl RedbPeer {
    pub fn open(ctx: &OpenCtx) -> Result<RedbPeer, String> {
        std::fs::create_dir_all(ctx.dir).map_err(db("mkdir"))?;
        let database = Database::create(ctx.dir.join("queue.redb")).map_err(db("open"))?;
        let durability = match ctx.class {
            Class::Async => Durability::None,
            Class::Sync => Durability::Immediate,
        };
        let peer = RedbPeer {
            db: database,
            durability,
            clock: ctx.clock.clone(),
            next_id: AtomicU64::new(1),
        };
        // Create the tables durably, so a reopen after a crash finds them.
        let txn = peer.db.begin_write().map_err(db("begin"))?;
        txn.open_table(DELAYED).map_err(db("table"))?;
        txn.open_table(TARGET).map_err(db("table"))?;
        txn.open_table(BULK).map_err(db("table"))?;
        txn.commit().map_err(db("commit"))?;
        Ok(peer)
    }

    fn write<T>(
        &self,
        body: impl FnOnce(&redb::WriteTransaction) -> Result<T, String>,
    ) -> Result<T, String> {
        let mut txn = self.db.begin_write().map_err(db("begin"))?;
        txn.set_durability(self.durability)
            .map_err(db("durability"))?;
        let out = body(&txn)?;
        txn.commit().map_err(db("commit"))?;
        Ok(out)
    }
}

impl DelayQueue for RedbPeer {
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
        self.write(|txn| {
            let mut table = txn.open_table(DELAYED).map_err(db("table"))?;
            for seq in first_seq..first_seq + count {
                table.insert((due, seq), payload).map_err(db("insert"))?;
            }
            Ok(())
        })
    }

    fn append_bulk(&self, payload: &[u8]) -> Result<(), String> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.write(|txn| {
            let mut table = txn.open_table(BULK).map_err(db("table"))?;
            table.insert(id, payload).map_err(db("insert"))?;
            Ok(())
        })
    }

    fn pending(&self) -> Result<u64, String> {
        let txn = self.db.begin_read().map_err(db("begin read"))?;
        let table = txn.open_table(DELAYED).map_err(db("table"))?;
        table.len().map_err(db("len"))
    }

    fn deliver(&self, expect: u64, timeout: Duration, visit: &mut Visit) -> Result<u64, String> {
        deliver_polling(self, self.clock.as_ref(), expect, timeout, visit)
    }

    fn close(self: Box<Self>) -> Result<(), String> {
        Ok(())
    }
}

impl Mover for RedbPeer {
    fn move_due(&self, now_ms: u64, limit: usize) -> Result<Vec<(u64, u64)>, String> {
        self.write(|txn| {
            let mut delayed = txn.open_table(DELAYED).map_err(db("table"))?;
            let mut target = txn.open_table(TARGET).map_err(db("table"))?;
            let mut due_rows = Vec::new();
            for row in delayed
                .range(..=(now_ms, u64::MAX))
                .map_err(db("range"))?
                .take(limit)
            {
                let (key, value) = row.map_err(db("range"))?;
                let (due, seq) = key.value();
                due_rows.push((due, seq, value.value().to_vec()));
            }
            let mut moved = Vec::with_capacity(due_rows.len());
            let mut entry = Vec::new();
            for (due, seq, body) in due_rows {
                entry.clear();
                entry.extend_from_slice(&seq.to_le_bytes());
                entry.extend_from_slice(&due.to_le_bytes());
                entry.extend_from_slice(&body);
                let id = self.next_id.fetch_add(1, Ordering::Relaxed);
                target
                    .insert(id, entry.as_slice())
                    .map_err(db("move insert"))?;
                delayed.remove((due, seq)).map_err(db("move remove"))?;
                moved.push((seq, due));
            }
            Ok(moved)
        })
    }

    fn next_due_ms(&self) -> Result<Option<u64>, String> {
        let txn = self.db.begin_read().map_err(db("begin read"))?;
        let table = txn.open_table(DELAYED).map_err(db("table"))?;
        let first = table.first().map_err(db("first"))?;
        Ok(first.map(|(key, _)| key.value().0))
    }
}
