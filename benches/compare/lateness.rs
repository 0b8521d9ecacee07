//! Delivery lateness under load: one producer puts delayed 128 B messages at 10k or 100k per
//! second (a batch every millisecond: one transaction per batch for the table stores, one put
//! each for delaystore) while a bulk producer appends non-delayed 1 KiB messages at a fixed
//! 5,000 per second (the same offered load for every peer: a producer "as fast as it can"
//! would load the fastest store hardest); the delivery side (delaystore's consumer, the peers' dispatcher) records for each
//! message when it became visible in the target queue minus its due time.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use delaystore::SystemClock;

use crate::peer::{Class, DelayQueue};
use crate::results::Recorder;
use crate::runner::{fig, PeerSetup, RunCtx, Sample};
use crate::summary::percentile;
use crate::timing::sleep_until;

const BODY: usize = 128;
const BULK_BODY: usize = 1024;
/// Bulk appends per millisecond (5,000/s).
const BULK_PER_MS: u64 = 5;

pub fn run(ctx: &RunCtx, rec: &mut Recorder) {
    let config = &ctx.config;
    let setup = PeerSetup {
        class: Class::Async,
        clock: Arc::new(SystemClock),
        delay_ms: config.lateness_delay_ms,
    };
    for &rate in &config.lateness_rates {
        let workload = format!("lateness/{}k", rate / 1000);
        for kind in ctx.order(rec.rep) {
            ctx.measure(rec, &workload, kind, &setup, |peer, rec| {
                let (sample, mut lateness) =
                    run_one(peer, rate, config.lateness_time, config.lateness_delay_ms)?;
                lateness.sort_by(f64::total_cmp);
                rec.cdf(&workload, kind.name(), &lateness);
                Ok(sample)
            });
        }
    }
}

fn run_one(
    peer: &dyn DelayQueue,
    rate: u64,
    time: Duration,
    delay_ms: u64,
) -> Result<(Sample, Vec<f64>), String> {
    peer.prepare_threads(3)?;
    let per_tick = (rate / 1000).max(1);
    let ticks = time.as_millis() as u64;
    let total = per_tick * ticks;
    let stop = AtomicBool::new(false);
    let bulk_count = AtomicU64::new(0);
    let mut lateness = Vec::with_capacity(total as usize);
    let mut seen = vec![false; total as usize];
    let mut duplicates = 0u64;
    let timeout = time + Duration::from_millis(delay_ms) + Duration::from_secs(60);
    let (delivered, put_secs, bulk_secs) =
        std::thread::scope(|s| -> Result<(u64, f64, f64), String> {
            let bulk = s.spawn(|| -> Result<f64, String> {
                let payload = vec![0xb5u8; BULK_BODY];
                let start = Instant::now();
                let mut tick = 0;
                while !stop.load(Ordering::Relaxed) {
                    for _ in 0..BULK_PER_MS {
                        peer.append_bulk(&payload)?;
                        bulk_count.fetch_add(1, Ordering::Relaxed);
                    }
                    tick += 1;
                    sleep_until(start + Duration::from_millis(tick));
                }
                Ok(start.elapsed().as_secs_f64())
            });
            let producer = s.spawn(|| -> Result<f64, String> {
                let payload = vec![0u8; BODY];
                let start = Instant::now();
                for tick in 0..ticks {
                    peer.put_batch(tick * per_tick, per_tick, delay_ms, &payload)?;
                    sleep_until(start + Duration::from_millis(tick + 1));
                }
                Ok(start.elapsed().as_secs_f64())
            });
            let delivered = peer.deliver(total, timeout, &mut |seq, due_ms, visible_ms| {
                lateness.push(visible_ms - due_ms as f64);
                match seen.get_mut(seq as usize) {
                    Some(slot) if !*slot => *slot = true,
                    _ => duplicates += 1,
                }
            });
            stop.store(true, Ordering::Relaxed);
            let put_secs = producer
                .join()
                .map_err(|_| "producer panicked".to_owned())??;
            let bulk_secs = bulk
                .join()
                .map_err(|_| "bulk producer panicked".to_owned())??;
            Ok((delivered?, put_secs, bulk_secs))
        })?;
    let mut sorted = lateness.clone();
    sorted.sort_by(f64::total_cmp);
    let missing = total.saturating_sub(delivered - duplicates.min(delivered));
    let sample = vec![
        fig("p50_ms", "ms", percentile(&sorted, 0.5)),
        fig("p99_ms", "ms", percentile(&sorted, 0.99)),
        fig("p999_ms", "ms", percentile(&sorted, 0.999)),
        fig("max_ms", "ms", percentile(&sorted, 1.0)),
        fig("delayed_put_rate", "msg/s", total as f64 / put_secs),
        fig(
            "bulk_msg_per_s",
            "msg/s",
            bulk_count.load(Ordering::Relaxed) as f64 / bulk_secs,
        ),
        fig("missing", "count", missing as f64),
        fig("duplicates", "count", duplicates as f64),
    ];
    Ok((sample, lateness))
}
