//! Recovery after a kill: a peer is filled with pending 1 KiB delayed messages (async class),
//! then killed with SIGKILL (embedded peers: the child process that filled them; servers: the
//! whole server process group), then reopened and timed until it is ready (delaystore: open
//! plus indexing everything logged; embedded peers: open; servers: until they answer a query).
//! Warm: the files are still in the page cache. Cold: every file of the peer is synced and
//! dropped from the page cache with `posix_fadvise(DONTNEED)` first, which needs no root
//! (dropping the whole cache would). Also records which fraction of the acknowledged messages
//! survived.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use delaystore::SystemClock;

use crate::append_async::FAR_DELAY_MS;
use crate::peer::{Class, PeerKind};
use crate::results::Recorder;
use crate::runner::{fig, PeerSetup, RunCtx, Sample};
use crate::servers::Server;
use crate::util::{remove_dir, settle_disk};

const BODY: usize = 1024;

pub fn run(ctx: &RunCtx, rec: &mut Recorder) {
    let count = (ctx.config.recovery_bytes / BODY as u64).max(1);
    for kind in ctx.order(rec.rep) {
        for cold in [false, true] {
            let workload = format!("recovery/{}", if cold { "cold" } else { "warm" });
            settle_disk();
            let started = Instant::now();
            let result = if kind.embedded() {
                embedded(ctx, kind, count, cold)
            } else {
                server(ctx, kind, count, cold)
            };
            remove_dir(&ctx.peer_dir(kind));
            ctx.report(rec, &workload, kind.name(), started, result);
        }
    }
}

fn setup() -> PeerSetup {
    PeerSetup {
        class: Class::Async,
        clock: Arc::new(SystemClock),
        delay_ms: FAR_DELAY_MS,
    }
}

fn figures(open_secs: f64, count: u64, recovered: u64, dir: &Path) -> Sample {
    let payload_gb = (count * BODY as u64) as f64 / 1e9;
    vec![
        fig("ready_ms", "ms", open_secs * 1e3),
        fig("s_per_gb", "s/GB", open_secs / payload_gb),
        fig(
            "recovered_fraction",
            "share",
            recovered as f64 / count as f64,
        ),
        fig("disk_mib", "MiB", disk_bytes(dir) as f64 / (1 << 20) as f64),
    ]
}

fn embedded(ctx: &RunCtx, kind: PeerKind, count: u64, cold: bool) -> Result<Sample, String> {
    let dir = ctx.peer_dir(kind);
    crate::util::fresh_dir(&dir)?;
    let mut spec = crate::child::spec("fill", kind, &dir, FAR_DELAY_MS, ctx.config.segment_bytes);
    spec["count"] = count.into();
    spec["body"] = BODY.into();
    let mut child = crate::child::spawn(&spec)?;
    let filled = crate::child::read_line(&mut child);
    child
        .kill()
        .map_err(|e| format!("killing the child: {e}"))?;
    child
        .wait()
        .map_err(|e| format!("waiting for the child: {e}"))?;
    filled?;
    if cold {
        evict(&dir)?;
    }
    let start = Instant::now();
    let peer = ctx.open(kind, &setup(), false)?;
    let secs = start.elapsed().as_secs_f64();
    let recovered = peer.pending()?;
    let sample = figures(secs, count, recovered, &dir);
    peer.close()?;
    Ok(sample)
}

fn server(ctx: &RunCtx, kind: PeerKind, count: u64, cold: bool) -> Result<Sample, String> {
    let server: &Server = match kind {
        PeerKind::Postgres => ctx.servers.postgres.as_ref(),
        _ => ctx.servers.redis.as_ref(),
    }
    .map_err(|e| e.clone())?;
    let peer = ctx.open(kind, &setup(), true)?;
    let payload = vec![0x42u8; BODY];
    let mut seq = 0;
    while seq < count {
        let n = crate::child::FILL_BATCH.min(count - seq);
        peer.put_batch(seq, n, FAR_DELAY_MS, &payload)?;
        seq += n;
    }
    drop(peer);
    server.kill()?;
    let data = server.data_dir();
    if cold {
        evict(&data)?;
    }
    let ready = server.kill_and_restart()?;
    let peer = ctx.open(kind, &setup(), false)?;
    let recovered = peer.pending()?;
    peer.close()?;
    Ok(figures(ready.as_secs_f64(), count, recovered, &data))
}

/// Syncs every file under `dir` and drops its pages from the page cache.
fn evict(dir: &Path) -> Result<(), String> {
    for entry in std::fs::read_dir(dir).map_err(|e| format!("reading {dir:?}: {e}"))? {
        let path = entry.map_err(|e| format!("reading {dir:?}: {e}"))?.path();
        if path.is_dir() {
            evict(&path)?;
        } else if path.is_file() {
            let file = std::fs::File::open(&path).map_err(|e| format!("opening {path:?}: {e}"))?;
            file.sync_all()
                .map_err(|e| format!("syncing {path:?}: {e}"))?;
            rustix::fs::fadvise(&file, 0, None, rustix::fs::Advice::DontNeed)
                .map_err(|e| format!("fadvise {path:?}: {e}"))?;
        }
    }
    Ok(())
}

/// Bytes of disk blocks used under `dir`.
fn disk_bytes(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => disk_bytes(&e.path()),
            Ok(m) => m.blocks() * 512,
            Err(_) => 0,
        })
        .sum()
}
