//! SQLite (rusqlite, bundled) as a peer: WAL journal; `synchronous=NORMAL` (commits reach the
//! OS, fsync at checkpoints: survives a process crash) for the async class, `FULL` (fsync per
//! commit) for the sync class. One connection behind a mutex: SQLite admits one writer at a
//! time anyway.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use delaystore::Clock;
use rusqlite::{params, Connection, OptionalExtension};

use crate::dispatcher::{deliver_polling, Mover};
use crate::peer::{Class, DelayQueue, OpenCtx, Visit};

pub struct SqlitePeer {
    conn: Mutex<Connection>,
    clock: Arc<dyn Clock>,
}

fn sql<E: std::fmt::Display>(what: &'static str) -> impl Fn(E) -> String {
    move |e| format!("sqlite {what}: {e}")
}

impl SqlitePeer {
    pub fn open(ctx: &OpenCtx) -> Result<SqlitePeer, String> {
        std::fs::create_dir_all(ctx.dir).map_err(sql("mkdir"))?;
        let conn = Connection::open(ctx.dir.join("queue.sqlite")).map_err(sql("open"))?;
        let synchronous = match ctx.class {
            Class::Async => "NORMAL",
            Class::Sync => "FULL",
        };
        conn.execute_batch(&format!(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous={synchronous};
             CREATE TABLE IF NOT EXISTS delayed (due INTEGER NOT NULL, seq INTEGER NOT NULL,
                 body BLOB NOT NULL, PRIMARY KEY (due, seq)) WITHOUT ROWID;
             CREATE TABLE IF NOT EXISTS target (id INTEGER PRIMARY KEY, seq INTEGER NOT NULL,
                 due INTEGER NOT NULL, body BLOB NOT NULL);
             CREATE TABLE IF NOT EXISTS bulk (id INTEGER PRIMARY KEY, body BLOB NOT NULL);"
        ))
        .map_err(sql("schema"))?;
        Ok(SqlitePeer {
            conn: Mutex::new(conn),
            clock: ctx.clock.clone(),
        })
    }

    fn conn(&self) -> Result<MutexGuard<'_, Connection>, String> {
        self.conn
            .lock()
            .map_err(|_| "sqlite connection mutex poisoned".to_owned())
    }
}

const INSERT_DELAYED: &str = "INSERT INTO delayed (due, seq, body) VALUES (?1, ?2, ?3)";

impl DelayQueue for SqlitePeer {
    fn put(&self, seq: u64, delay_ms: u64, payload: &[u8]) -> Result<(), String> {
        let due = self.clock.now_ms() + delay_ms;
        let conn = self.conn()?;
        let mut insert = conn
            .prepare_cached(INSERT_DELAYED)
            .map_err(sql("prepare"))?;
        insert
            .execute(params![due as i64, seq as i64, payload])
            .map(|_| ())
            .map_err(sql("insert"))
    }

    fn put_batch(
        &self,
        first_seq: u64,
        count: u64,
        delay_ms: u64,
        payload: &[u8],
    ) -> Result<(), String> {
        let due = self.clock.now_ms() + delay_ms;
        let mut conn = self.conn()?;
        let tx = conn.transaction().map_err(sql("begin"))?;
        {
            let mut insert = tx.prepare_cached(INSERT_DELAYED).map_err(sql("prepare"))?;
            for seq in first_seq..first_seq + count {
                insert
                    .execute(params![due as i64, seq as i64, payload])
                    .map_err(sql("insert"))?;
            }
        }
        tx.commit().map_err(sql("commit"))
    }

    fn append_bulk(&self, payload: &[u8]) -> Result<(), String> {
        let conn = self.conn()?;
        let mut insert = conn
            .prepare_cached("INSERT INTO bulk (body) VALUES (?1)")
            .map_err(sql("prepare"))?;
        insert
            .execute(params![payload])
            .map(|_| ())
            .map_err(sql("bulk insert"))
    }

    fn pending(&self) -> Result<u64, String> {
        let conn = self.conn()?;
        conn.query_row("SELECT count(*) FROM delayed", [], |r| r.get::<_, i64>(0))
            .map(|n| n as u64)
            .map_err(sql("count"))
    }

    fn deliver(&self, expect: u64, timeout: Duration, visit: &mut Visit) -> Result<u64, String> {
        deliver_polling(self, self.clock.as_ref(), expect, timeout, visit)
    }

    fn close(self: Box<Self>) -> Result<(), String> {
        let conn = self
            .conn
            .into_inner()
            .map_err(|_| "sqlite connection mutex poisoned".to_owned())?;
        conn.close().map_err(|(_, e)| format!("sqlite close: {e}"))
    }
}

impl Mover for SqlitePeer {
    fn move_due(&self, now_ms: u64, limit: usize) -> Result<Vec<(u64, u64)>, String> {
        let mut conn = self.conn()?;
        let tx = conn.transaction().map_err(sql("begin"))?;
        let mut moved = Vec::new();
        {
            let mut select = tx
                .prepare_cached(
                    "SELECT due, seq, body FROM delayed WHERE due <= ?1 ORDER BY due, seq LIMIT ?2",
                )
                .map_err(sql("prepare"))?;
            let mut insert = tx
                .prepare_cached("INSERT INTO target (seq, due, body) VALUES (?1, ?2, ?3)")
                .map_err(sql("prepare"))?;
            let mut delete = tx
                .prepare_cached("DELETE FROM delayed WHERE due = ?1 AND seq = ?2")
                .map_err(sql("prepare"))?;
            let mut rows = select
                .query(params![now_ms as i64, limit as i64])
                .map_err(sql("select"))?;
            let mut due_rows = Vec::new();
            while let Some(row) = rows.next().map_err(sql("select"))? {
                let due: i64 = row.get(0).map_err(sql("row"))?;
                let seq: i64 = row.get(1).map_err(sql("row"))?;
                let body: Vec<u8> = row.get(2).map_err(sql("row"))?;
                due_rows.push((due, seq, body));
            }
            for (due, seq, body) in due_rows {
                insert
                    .execute(params![seq, due, body])
                    .map_err(sql("move insert"))?;
                delete
                    .execute(params![due, seq])
                    .map_err(sql("move delete"))?;
                moved.push((seq as u64, due as u64));
            }
        }
        tx.commit().map_err(sql("commit"))?;
        Ok(moved)
    }

    fn next_due_ms(&self) -> Result<Option<u64>, String> {
        let conn = self.conn()?;
        conn.query_row("SELECT min(due) FROM delayed", [], |r| {
            r.get::<_, Option<i64>>(0)
        })
        .optional()
        .map(|v| v.flatten().map(|d| d as u64))
        .map_err(sql("min"))
    }
}
