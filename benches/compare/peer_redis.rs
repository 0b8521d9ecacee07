//! Redis as a peer: a sorted set scored by due time whose members are due (8 bytes BE) + seq
//! (8 bytes BE) + payload, so equal scores order by sequence; a Lua script moves up to N due
//! members into a list in one atomic step. AOF on, `appendfsync everysec` for the async class
//! and `always` for the sync class. Tested only where `redis-server` is installed.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use delaystore::Clock;
use redis::{Connection, Script};

use crate::dispatcher::{deliver_polling, Mover};
use crate::peer::{due_key, parse_due_key, Class, DelayQueue, OpenCtx, Visit};

const DELAYED: &str = "delayed";
const TARGET: &str = "target";
const BULK: &str = "bulk";
/// Moves due members (score <= ARGV[1], at most ARGV[2]) to the target list; returns the
/// first 16 bytes (due, seq) of each.
const MOVER: &str = r"
local items = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
local heads = {}
for i, m in ipairs(items) do
  redis.call('ZREM', KEYS[1], m)
  redis.call('RPUSH', KEYS[2], m)
  heads[i] = string.sub(m, 1, 16)
end
return heads
";

pub struct RedisPeer {
    client: redis::Client,
    clock: Arc<dyn Clock>,
    pool: Mutex<Vec<Connection>>,
    mover: Script,
}

fn rd<E: std::fmt::Display>(what: &'static str) -> impl Fn(E) -> String {
    move |e| format!("redis {what}: {e}")
}

impl RedisPeer {
    /// Connects to the run's server and sets its fsync policy; a fresh open empties it.
    pub fn open(ctx: &OpenCtx) -> Result<RedisPeer, String> {
        let server = ctx.servers.redis.as_ref().map_err(|e| e.clone())?;
        let client = redis::Client::open(server.redis_url()).map_err(rd("client"))?;
        let mut conn = client.get_connection().map_err(rd("connect"))?;
        let fsync = match ctx.class {
            Class::Async => "everysec",
            Class::Sync => "always",
        };
        redis::cmd("CONFIG")
            .arg("SET")
            .arg("appendfsync")
            .arg(fsync)
            .query::<()>(&mut conn)
            .map_err(rd("config"))?;
        if ctx.fresh {
            redis::cmd("FLUSHALL")
                .query::<()>(&mut conn)
                .map_err(rd("flushall"))?;
        }
        Ok(RedisPeer {
            client,
            clock: ctx.clock.clone(),
            pool: Mutex::new(vec![conn]),
            mover: Script::new(MOVER),
        })
    }

    fn with<T>(
        &self,
        body: impl FnOnce(&mut Connection) -> Result<T, String>,
    ) -> Result<T, String> {
        let pooled = self.pool.lock().map_err(|_| "redis pool poisoned")?.pop();
        let mut conn = match pooled {
            Some(conn) => conn,
            None => self.client.get_connection().map_err(rd("connect"))?,
        };
        let out = body(&mut conn);
        self.pool
            .lock()
            .map_err(|_| "redis pool poisoned")?
            .push(conn);
        out
    }
}

fn member(due: u64, seq: u64, payload: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(16 + payload.len());
    m.extend_from_slice(&due_key(due, seq));
    m.extend_from_slice(payload);
    m
}

impl DelayQueue for RedisPeer {
    fn put(&self, seq: u64, delay_ms: u64, payload: &[u8]) -> Result<(), String> {
        let due = self.clock.now_ms() + delay_ms;
        self.with(|c| {
            redis::cmd("ZADD")
                .arg(DELAYED)
                .arg(due)
                .arg(member(due, seq, payload))
                .query::<()>(c)
                .map_err(rd("zadd"))
        })
    }

    fn put_batch(
        &self,
        first_seq: u64,
        count: u64,
        delay_ms: u64,
        payload: &[u8],
    ) -> Result<(), String> {
        let due = self.clock.now_ms() + delay_ms;
        self.with(|c| {
            let mut pipe = redis::pipe();
            pipe.atomic();
            for seq in first_seq..first_seq + count {
                pipe.cmd("ZADD")
                    .arg(DELAYED)
                    .arg(due)
                    .arg(member(due, seq, payload))
                    .ignore();
            }
            pipe.query::<()>(c).map_err(rd("zadd batch"))
        })
    }

    fn append_bulk(&self, payload: &[u8]) -> Result<(), String> {
        self.with(|c| {
            redis::cmd("RPUSH")
                .arg(BULK)
                .arg(payload)
                .query::<()>(c)
                .map_err(rd("rpush"))
        })
    }

    fn pending(&self) -> Result<u64, String> {
        self.with(|c| {
            redis::cmd("ZCARD")
                .arg(DELAYED)
                .query::<u64>(c)
                .map_err(rd("zcard"))
        })
    }

    fn deliver(&self, expect: u64, timeout: Duration, visit: &mut Visit) -> Result<u64, String> {
        deliver_polling(self, self.clock.as_ref(), expect, timeout, visit)
    }

    fn prepare_threads(&self, threads: usize) -> Result<(), String> {
        let have = self.pool.lock().map_err(|_| "redis pool poisoned")?.len();
        let new = (have..threads)
            .map(|_| self.client.get_connection().map_err(rd("connect")))
            .collect::<Result<Vec<_>, String>>()?;
        self.pool
            .lock()
            .map_err(|_| "redis pool poisoned")?
            .extend(new);
        Ok(())
    }

    fn close(self: Box<Self>) -> Result<(), String> {
        Ok(())
    }
}

impl Mover for RedisPeer {
    fn move_due(&self, now_ms: u64, limit: usize) -> Result<Vec<(u64, u64)>, String> {
        let heads: Vec<Vec<u8>> = self.with(|c| {
            self.mover
                .key(DELAYED)
                .key(TARGET)
                .arg(now_ms)
                .arg(limit)
                .invoke(c)
                .map_err(rd("mover"))
        })?;
        Ok(heads
            .iter()
            .map(|h| {
                let (due, seq) = parse_due_key(h);
                (seq, due)
            })
            .collect())
    }

    fn next_due_ms(&self) -> Result<Option<u64>, String> {
        let first: Vec<(Vec<u8>, f64)> = self.with(|c| {
            redis::cmd("ZRANGE")
                .arg(DELAYED)
                .arg(0)
                .arg(0)
                .arg("WITHSCORES")
                .query(c)
                .map_err(rd("zrange"))
        })?;
        Ok(first.first().map(|(_, score)| *score as u64))
    }
}
