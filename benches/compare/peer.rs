//! The one interface every system under comparison implements: a delay queue keyed by (due
//! time, sequence), a target queue that due entries move into, and a bulk queue for the
//! competing writer. Each workload drives every peer through this trait only, with the same
//! payloads and the same durability class.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use delaystore::Clock;

use crate::servers::Servers;

/// What an acknowledged write survives, named the same for every peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Survives a process crash (the write reached the OS), not necessarily power loss.
    Async,
    /// Survives power loss: `fsync`/`fdatasync` (or the peer's equivalent) before the ack.
    Sync,
}

/// The systems compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerKind {
    Delaystore,
    Sqlite,
    Redb,
    Fjall,
    Postgres,
    Redis,
    Rocksdb,
}

impl PeerKind {
    pub const ALL: [PeerKind; 7] = [
        PeerKind::Delaystore,
        PeerKind::Sqlite,
        PeerKind::Redb,
        PeerKind::Fjall,
        PeerKind::Postgres,
        PeerKind::Redis,
        PeerKind::Rocksdb,
    ];

    pub fn name(self) -> &'static str {
        match self {
            PeerKind::Delaystore => "delaystore",
            PeerKind::Sqlite => "sqlite",
            PeerKind::Redb => "redb",
            PeerKind::Fjall => "fjall",
            PeerKind::Postgres => "postgres",
            PeerKind::Redis => "redis",
            PeerKind::Rocksdb => "rocksdb",
        }
    }

    pub fn from_name(name: &str) -> Option<PeerKind> {
        PeerKind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// Embedded in the process (as opposed to a server on 127.0.0.1).
    pub fn embedded(self) -> bool {
        !matches!(self, PeerKind::Postgres | PeerKind::Redis)
    }
}

/// Where and how a peer is opened.
pub struct OpenCtx<'a> {
    pub dir: &'a Path,
    pub class: Class,
    /// The clock due times are computed from (a `ManualClock` in the drain).
    pub clock: Arc<dyn Clock>,
    /// The one delay the workload uses (delaystore's delay-level table is built from it).
    pub delay_ms: u64,
    /// Commit-log segment size for delaystore.
    pub segment_bytes: u64,
    pub servers: &'a Servers,
    /// A fresh queue (true), or the one left in `dir` / on the server (recovery).
    pub fresh: bool,
}

/// A delivered entry: sequence, due time (ms) and when it became visible in the target queue
/// (ms since the epoch, microsecond resolution).
pub type Visit<'a> = dyn FnMut(u64, u64, f64) + 'a;

/// A delay queue under test.
pub trait DelayQueue: Send + Sync {
    /// Puts one delayed message due `delay_ms` from now, acknowledged on its own (one
    /// transaction) under the peer's class.
    fn put(&self, seq: u64, delay_ms: u64, payload: &[u8]) -> Result<(), String>;
    /// Puts `count` delayed messages with sequences `first_seq..`, all due `delay_ms` from now:
    /// one transaction for the table stores; one put each for delaystore (its API).
    fn put_batch(
        &self,
        first_seq: u64,
        count: u64,
        delay_ms: u64,
        payload: &[u8],
    ) -> Result<(), String>;
    /// Appends a non-delayed message to the bulk queue (the competing writer).
    fn append_bulk(&self, payload: &[u8]) -> Result<(), String>;
    /// Entries still waiting in the delay queue.
    fn pending(&self) -> Result<u64, String>;
    /// Runs the delivery side until `expect` entries reached the target queue or `timeout`
    /// passed, calling `visit` for each; returns how many arrived.
    fn deliver(&self, expect: u64, timeout: Duration, visit: &mut Visit) -> Result<u64, String>;
    /// Gets ready for `threads` concurrent callers (servers open their connections here, so
    /// connecting stays out of the timing).
    fn prepare_threads(&self, _threads: usize) -> Result<(), String> {
        Ok(())
    }
    /// Closes cleanly.
    fn close(self: Box<Self>) -> Result<(), String>;
}

/// Opens a peer of `kind`: a fresh one, or (`ctx.fresh == false`) the one left in place.
pub fn open(kind: PeerKind, ctx: &OpenCtx) -> Result<Box<dyn DelayQueue>, String> {
    Ok(match kind {
        PeerKind::Delaystore if !ctx.fresh => {
            Box::new(crate::peer_delaystore::DelaystorePeer::reopen(ctx)?)
        }
        PeerKind::Delaystore => Box::new(crate::peer_delaystore::DelaystorePeer::open(ctx)?),
        PeerKind::Sqlite => Box::new(crate::peer_sqlite::SqlitePeer::open(ctx)?),
        PeerKind::Redb => Box::new(crate::peer_redb::RedbPeer::open(ctx)?),
        PeerKind::Fjall => Box::new(crate::peer_fjall::FjallPeer::open(ctx)?),
        PeerKind::Postgres => Box::new(crate::peer_postgres::PostgresPeer::open(ctx)?),
        PeerKind::Redis => Box::new(crate::peer_redis::RedisPeer::open(ctx)?),
        PeerKind::Rocksdb => open_rocksdb(ctx)?,
    })
}

#[cfg(feature = "bench-rocksdb")]
fn open_rocksdb(ctx: &OpenCtx) -> Result<Box<dyn DelayQueue>, String> {
    Ok(Box::new(crate::peer_rocksdb::RocksdbPeer::open(ctx)?))
}

#[cfg(not(feature = "bench-rocksdb"))]
fn open_rocksdb(_ctx: &OpenCtx) -> Result<Box<dyn DelayQueue>, String> {
    Err("built without the `bench-rocksdb` feature".to_owned())
}

/// Why a peer cannot run on this machine, if it cannot.
pub fn unavailable(kind: PeerKind, servers: &Servers) -> Option<String> {
    match kind {
        PeerKind::Postgres => servers.postgres_missing(),
        PeerKind::Redis => servers.redis_missing(),
        PeerKind::Rocksdb if !cfg!(feature = "bench-rocksdb") => Some(
            "opt-in (its build takes ~9 minutes and needs libclang-dev): \
             cargo bench --features bench-rocksdb --bench compare"
                .to_owned(),
        ),
        _ => None,
    }
}

/// Key of the delay queue: due time then sequence, big-endian so byte order is due order.
pub fn due_key(due_ms: u64, seq: u64) -> [u8; 16] {
    let mut key = [0u8; 16];
    key[..8].copy_from_slice(&due_ms.to_be_bytes());
    key[8..].copy_from_slice(&seq.to_be_bytes());
    key
}

/// (due, seq) from a [`due_key`] (zeros if too short).
pub fn parse_due_key(key: &[u8]) -> (u64, u64) {
    let due = key
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u64::from_be_bytes);
    let seq = key
        .get(8..16)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u64::from_be_bytes);
    (due, seq)
}
