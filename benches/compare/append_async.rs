//! Async append: one producer puts delayed messages (due in an hour, so nothing moves while it
//! runs), one acknowledged write each, in the async class; 128 B, 1 KiB and 16 KiB bodies.
//! Each peer writes the same bytes, capped by the same time.

use std::sync::Arc;
use std::time::Instant;

use delaystore::SystemClock;

use crate::config::size_label;
use crate::peer::Class;
use crate::results::Recorder;
use crate::runner::{fig, PeerSetup, RunCtx};

/// Far enough that nothing is delivered during the workload.
pub const FAR_DELAY_MS: u64 = 3_600_000;

pub fn run(ctx: &RunCtx, rec: &mut Recorder) {
    let config = &ctx.config;
    let setup = PeerSetup {
        class: Class::Async,
        clock: Arc::new(SystemClock),
        delay_ms: FAR_DELAY_MS,
    };
    for &body in &config.async_bodies {
        let workload = format!("async_append/{}", size_label(body));
        for kind in ctx.order(rec.rep) {
            ctx.measure(rec, &workload, kind, &setup, |peer, _| {
                let count = (config.async_bytes / body as u64).max(1);
                let payload = vec![0x5au8; body];
                let start = Instant::now();
                let mut done = 0u64;
                while done < count {
                    peer.put(done, FAR_DELAY_MS, &payload)?;
                    done += 1;
                    if done.is_multiple_of(64) && start.elapsed() > config.async_time {
                        break;
                    }
                }
                let secs = start.elapsed().as_secs_f64();
                Ok(vec![
                    fig("msg_per_s", "msg/s", done as f64 / secs),
                    fig("mb_per_s", "MB/s", (done * body as u64) as f64 / secs / 1e6),
                    fig("messages", "count", done as f64),
                ])
            });
        }
    }
}
