//! PostgreSQL as a peer: table `delayed (due, seq)` with its primary key, `target`, `bulk`; the
//! mover deletes up to N due rows `FOR UPDATE SKIP LOCKED` and inserts them into `target` in
//! one statement (one transaction). `synchronous_commit = off` for the async class (the WAL
//! reaches the server's buffers and is flushed within 3 x `wal_writer_delay`: survives a client
//! crash, not a server crash); `on` for the sync class (the commit waits for the WAL fsync;
//! concurrent commits share flushes).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use delaystore::Clock;
use postgres::{Client, NoTls, Statement};

use crate::dispatcher::{deliver_polling, Mover};
use crate::peer::{Class, DelayQueue, OpenCtx, Visit};

struct Conn {
    client: Client,
    put: Statement,
    put_batch: Statement,
    bulk: Statement,
    mover: Statement,
}

pub struct PostgresPeer {
    url: String,
    class: Class,
    clock: Arc<dyn Clock>,
    pool: Mutex<Vec<Conn>>,
}

fn pg<E: std::fmt::Display>(what: &'static str) -> impl Fn(E) -> String {
    move |e| format!("postgres {what}: {e}")
}

impl PostgresPeer {
    /// Connects to the run's server; a fresh open drops and recreates the tables.
    pub fn open(ctx: &OpenCtx) -> Result<PostgresPeer, String> {
        let server = ctx.servers.postgres.as_ref().map_err(|e| e.clone())?;
        let peer = PostgresPeer {
            url: server.postgres_url(),
            class: ctx.class,
            clock: ctx.clock.clone(),
            pool: Mutex::new(Vec::new()),
        };
        if ctx.fresh {
            let mut client = Client::connect(&peer.url, NoTls).map_err(pg("connect"))?;
            client
                .batch_execute(
                    "DROP TABLE IF EXISTS delayed, target, bulk;
                     CREATE TABLE delayed (due bigint NOT NULL, seq bigint NOT NULL,
                         body bytea NOT NULL, PRIMARY KEY (due, seq));
                     CREATE TABLE target (id bigserial PRIMARY KEY, seq bigint NOT NULL,
                         due bigint NOT NULL, body bytea NOT NULL);
                     CREATE TABLE bulk (id bigserial PRIMARY KEY, body bytea NOT NULL);
                     CHECKPOINT;",
                )
                .map_err(pg("schema"))?;
        }
        Ok(peer)
    }

    fn connect(&self) -> Result<Conn, String> {
        let mut client = Client::connect(&self.url, NoTls).map_err(pg("connect"))?;
        let commit = match self.class {
            Class::Async => "off",
            Class::Sync => "on",
        };
        client
            .batch_execute(&format!("SET synchronous_commit = {commit}"))
            .map_err(pg("set"))?;
        let put = client
            .prepare("INSERT INTO delayed (due, seq, body) VALUES ($1, $2, $3)")
            .map_err(pg("prepare"))?;
        let put_batch = client
            .prepare(
                "INSERT INTO delayed (due, seq, body)
                 SELECT $1, s, $3 FROM generate_series($2::bigint, $2 + $4 - 1) AS s",
            )
            .map_err(pg("prepare"))?;
        let bulk = client
            .prepare("INSERT INTO bulk (body) VALUES ($1)")
            .map_err(pg("prepare"))?;
        let mover = client
            .prepare(
                "WITH due AS (
                     DELETE FROM delayed WHERE (due, seq) IN (
                         SELECT due, seq FROM delayed WHERE due <= $1 ORDER BY due, seq
                         LIMIT $2 FOR UPDATE SKIP LOCKED)
                     RETURNING due, seq, body)
                 INSERT INTO target (seq, due, body) SELECT seq, due, body FROM due
                 RETURNING seq, due",
            )
            .map_err(pg("prepare"))?;
        Ok(Conn {
            client,
            put,
            put_batch,
            bulk,
            mover,
        })
    }

    /// Runs `body` on a pooled connection (opening one if none is free).
    fn with<T>(&self, body: impl FnOnce(&mut Conn) -> Result<T, String>) -> Result<T, String> {
        let pooled = self
            .pool
            .lock()
            .map_err(|_| "postgres pool poisoned")?
            .pop();
        let mut conn = match pooled {
            Some(conn) => conn,
            None => self.connect()?,
        };
        let out = body(&mut conn);
        self.pool
            .lock()
            .map_err(|_| "postgres pool poisoned")?
            .push(conn);
        out
    }
}

impl DelayQueue for PostgresPeer {
    fn put(&self, seq: u64, delay_ms: u64, payload: &[u8]) -> Result<(), String> {
        let due = (self.clock.now_ms() + delay_ms) as i64;
        self.with(|c| {
            c.client
                .execute(&c.put, &[&due, &(seq as i64), &payload])
                .map(|_| ())
                .map_err(pg("insert"))
        })
    }

    fn put_batch(
        &self,
        first_seq: u64,
        count: u64,
        delay_ms: u64,
        payload: &[u8],
    ) -> Result<(), String> {
        let due = (self.clock.now_ms() + delay_ms) as i64;
        self.with(|c| {
            c.client
                .execute(
                    &c.put_batch,
                    &[&due, &(first_seq as i64), &payload, &(count as i64)],
                )
                .map(|_| ())
                .map_err(pg("insert batch"))
        })
    }

    fn append_bulk(&self, payload: &[u8]) -> Result<(), String> {
        self.with(|c| {
            c.client
                .execute(&c.bulk, &[&payload])
                .map(|_| ())
                .map_err(pg("bulk insert"))
        })
    }

    fn pending(&self) -> Result<u64, String> {
        self.with(|c| {
            c.client
                .query_one("SELECT count(*) FROM delayed", &[])
                .map(|row| row.get::<_, i64>(0) as u64)
                .map_err(pg("count"))
        })
    }

    fn deliver(&self, expect: u64, timeout: Duration, visit: &mut Visit) -> Result<u64, String> {
        deliver_polling(self, self.clock.as_ref(), expect, timeout, visit)
    }

    fn prepare_threads(&self, threads: usize) -> Result<(), String> {
        let have = self
            .pool
            .lock()
            .map_err(|_| "postgres pool poisoned")?
            .len();
        let new = (have..threads)
            .map(|_| self.connect())
            .collect::<Result<Vec<_>, String>>()?;
        self.pool
            .lock()
            .map_err(|_| "postgres pool poisoned")?
            .extend(new);
        Ok(())
    }

    fn close(self: Box<Self>) -> Result<(), String> {
        Ok(())
    }
}

impl Mover for PostgresPeer {
    fn move_due(&self, now_ms: u64, limit: usize) -> Result<Vec<(u64, u64)>, String> {
        self.with(|c| {
            let rows = c
                .client
                .query(&c.mover, &[&(now_ms as i64), &(limit as i64)])
                .map_err(pg("move"))?;
            Ok(rows
                .iter()
                .map(|r| (r.get::<_, i64>(0) as u64, r.get::<_, i64>(1) as u64))
                .collect())
        })
    }

    fn next_due_ms(&self) -> Result<Option<u64>, String> {
        self.with(|c| {
            c.client
                .query_one("SELECT min(due) FROM delayed", &[])
                .map(|row| row.get::<_, Option<i64>>(0).map(|d| d as u64))
                .map_err(pg("min"))
        })
    }
}
