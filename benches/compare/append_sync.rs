//! Synced append: 1, 4, 16 and 64 producers share one peer and put 1 KiB delayed messages in
//! the sync class (each put acknowledged only once durable) for a fixed time: total msg/s and
//! put latency.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use delaystore::SystemClock;

use crate::append_async::FAR_DELAY_MS;
use crate::peer::{Class, DelayQueue};
use crate::results::Recorder;
use crate::runner::{fig, PeerSetup, RunCtx, Sample};
use crate::summary::percentile;

const BODY: usize = 1024;

pub fn run(ctx: &RunCtx, rec: &mut Recorder) {
    let setup = PeerSetup {
        class: Class::Sync,
        clock: Arc::new(SystemClock),
        delay_ms: FAR_DELAY_MS,
    };
    for &producers in &ctx.config.sync_producers {
        let workload = format!("sync_append/{producers}");
        for kind in ctx.order(rec.rep) {
            ctx.measure(rec, &workload, kind, &setup, |peer, _| {
                run_producers(peer, producers, ctx.config.sync_time)
            });
        }
    }
}

fn run_producers(
    peer: &dyn DelayQueue,
    producers: usize,
    duration: Duration,
) -> Result<Sample, String> {
    peer.prepare_threads(producers)?;
    let stop = AtomicBool::new(false);
    let barrier = Barrier::new(producers + 1);
    let (latencies_us, elapsed) = std::thread::scope(|s| {
        let handles: Vec<_> = (0..producers)
            .map(|t| {
                let (stop, barrier) = (&stop, &barrier);
                s.spawn(move || -> Result<Vec<f64>, String> {
                    let payload = vec![0x5au8; BODY];
                    let mut latencies = Vec::with_capacity(1 << 12);
                    barrier.wait();
                    let mut seq = (t as u64) << 40;
                    while !stop.load(Ordering::Relaxed) {
                        let t0 = Instant::now();
                        peer.put(seq, FAR_DELAY_MS, &payload)?;
                        latencies.push(t0.elapsed().as_secs_f64() * 1e6);
                        seq += 1;
                    }
                    Ok(latencies)
                })
            })
            .collect();
        barrier.wait();
        let start = Instant::now();
        std::thread::sleep(duration);
        stop.store(true, Ordering::Relaxed);
        let mut all = Vec::new();
        let mut failure = None;
        for h in handles {
            match h.join() {
                Ok(Ok(l)) => all.extend(l),
                Ok(Err(e)) => failure = Some(e),
                Err(_) => failure = Some("a producer panicked".to_owned()),
            }
        }
        let elapsed = start.elapsed().as_secs_f64();
        match failure {
            Some(e) => Err(e),
            None => Ok((all, elapsed)),
        }
    })?;
    let mut latencies_us = latencies_us;
    latencies_us.sort_by(f64::total_cmp);
    Ok(vec![
        fig("msg_per_s", "msg/s", latencies_us.len() as f64 / elapsed),
        fig("p50_us", "us", percentile(&latencies_us, 0.5)),
        fig("p99_us", "us", percentile(&latencies_us, 0.99)),
    ])
}
