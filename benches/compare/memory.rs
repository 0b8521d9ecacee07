//! Anonymous memory per pending message: 1 M (quick: 100 k) pending 128 B messages due in an
//! hour. Embedded peers run in a child process each (RssAnon of that process before and after
//! the fill); servers are measured as the RssAnon of the server's process tree.

use std::sync::Arc;
use std::time::{Duration, Instant};

use delaystore::SystemClock;

use crate::append_async::FAR_DELAY_MS;
use crate::peer::{Class, PeerKind};
use crate::proc_mem::tree_rss_anon_kib;
use crate::results::Recorder;
use crate::runner::{fig, PeerSetup, RunCtx, Sample};
use crate::servers::Server;
use crate::util::{fresh_dir, remove_dir, settle_disk};

pub fn run(ctx: &RunCtx, rec: &mut Recorder) {
    let workload = "memory".to_owned();
    let count = ctx.config.memory_count;
    for kind in ctx.order(rec.rep) {
        settle_disk();
        let started = Instant::now();
        let result = if kind.embedded() {
            in_child(ctx, kind, count)
        } else {
            in_server(ctx, kind, count)
        };
        remove_dir(&ctx.peer_dir(kind));
        ctx.report(rec, &workload, kind.name(), started, result);
    }
}

fn figures(before_kib: u64, after_kib: u64, count: u64, pending: u64) -> Result<Sample, String> {
    if pending != count {
        return Err(format!("{pending} of {count} pending after the fill"));
    }
    let grown = after_kib.saturating_sub(before_kib) as f64 * 1024.0;
    Ok(vec![
        fig("anon_bytes_per_pending", "B", grown / count as f64),
        fig("rss_anon_mib", "MiB", after_kib as f64 / 1024.0),
    ])
}

fn in_child(ctx: &RunCtx, kind: PeerKind, count: u64) -> Result<Sample, String> {
    let dir = ctx.peer_dir(kind);
    fresh_dir(&dir)?;
    let mut spec = crate::child::spec("memory", kind, &dir, FAR_DELAY_MS, ctx.config.segment_bytes);
    spec["count"] = count.into();
    let mut child = crate::child::spawn(&spec)?;
    let line = crate::child::read_line(&mut child);
    let status = child
        .wait()
        .map_err(|e| format!("waiting for the child: {e}"))?;
    let line = line?;
    if !status.success() {
        return Err(format!("the child exited with {status}"));
    }
    let get = |k: &str| line[k].as_u64().ok_or(format!("child line without {k}"));
    figures(
        get("rss_anon_before_kib")?,
        get("rss_anon_after_kib")?,
        count,
        get("pending")?,
    )
}

fn in_server(ctx: &RunCtx, kind: PeerKind, count: u64) -> Result<Sample, String> {
    let server: &Server = match kind {
        PeerKind::Postgres => ctx.servers.postgres.as_ref(),
        _ => ctx.servers.redis.as_ref(),
    }
    .map_err(|e| e.clone())?;
    let pid = server.pid().ok_or("server not running")?;
    let setup = PeerSetup {
        class: Class::Async,
        clock: Arc::new(SystemClock),
        delay_ms: FAR_DELAY_MS,
    };
    let peer = ctx.open(kind, &setup, true)?;
    // The connection the fill uses is open before the first reading.
    peer.prepare_threads(1)?;
    std::thread::sleep(Duration::from_millis(300));
    let before = tree_rss_anon_kib(pid);
    let payload = vec![0x42u8; 128];
    let mut seq = 0;
    while seq < count {
        let n = 10_000.min(count - seq);
        peer.put_batch(seq, n, FAR_DELAY_MS, &payload)?;
        seq += n;
    }
    std::thread::sleep(Duration::from_millis(1_500));
    let after = tree_rss_anon_kib(pid);
    let pending = peer.pending()?;
    peer.close()?;
    figures(before, after, count, pending)
}
