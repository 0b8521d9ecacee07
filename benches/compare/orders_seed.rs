//! The seed scenario (docs/benchmarks.md, "Order timeouts"): orders are created evenly over a
//! window, each due for closing a fixed time after it is created, and closed two ways side by
//! side: (a) a delayed message per order through delaystore, consumed by a closer that reads
//! the one order it names; (b) an orders table scanned every 1 s, 10 s and 60 s (quick: 1 s),
//! each scan reading every row. Figures: closing lateness (close time - deadline), rows read
//! per order, writes per order for the timeout mechanism. The 60 s scanner makes this the
//! longest workload, so it runs once per run, not once per repetition.

use std::sync::Arc;
use std::time::{Duration, Instant};

use delaystore::{Clock, Store, SystemClock};

use crate::orders::{close_by_store, scan_table, Closer, Table};
use crate::peer::Class;
use crate::peer_delaystore::{delayed_message, settle_after_open, store_options};
use crate::results::Recorder;
use crate::runner::{fig, RunCtx, Sample};
use crate::timing::sleep_until;
use crate::util::{fresh_dir, remove_dir, settle_disk};

const TOPIC: &str = "order-close";
const SEGMENT_BYTES: u64 = 64 << 20;

pub fn run(ctx: &RunCtx, rec: &mut Recorder) {
    settle_disk();
    let started = Instant::now();
    let dir = ctx.config.dir.join("orders");
    match run_orders(ctx, &dir) {
        Ok(results) => {
            for (system, sample, mut lateness) in results {
                lateness.sort_by(f64::total_cmp);
                rec.cdf("orders", &system, &lateness);
                ctx.report(rec, "orders", &system, started, Ok(sample));
            }
        }
        Err(e) => rec.fail("orders", "delaystore", e),
    }
    remove_dir(&dir);
}

fn closer_sample(closer: &Closer, orders: u64, writes: f64) -> Sample {
    let mut sorted = closer.lateness_ms.clone();
    sorted.sort_by(f64::total_cmp);
    vec![
        fig("p50_ms", "ms", crate::summary::percentile(&sorted, 0.5)),
        fig("p99_ms", "ms", crate::summary::percentile(&sorted, 0.99)),
        fig("max_ms", "ms", crate::summary::percentile(&sorted, 1.0)),
        fig(
            "rows_read_per_order",
            "rows",
            closer.rows_read as f64 / orders as f64,
        ),
        fig("writes_per_order", "count", writes),
        fig("missed", "count", (orders - closer.closed) as f64),
    ]
}

type Outcome = Vec<(String, Sample, Vec<f64>)>;

fn run_orders(ctx: &RunCtx, dir: &std::path::Path) -> Result<Outcome, String> {
    let config = &ctx.config;
    fresh_dir(dir)?;
    let delay_ms = config.order_delay_ms;
    let options = store_options(Class::Async, SEGMENT_BYTES, delay_ms, Arc::new(SystemClock));
    let store = Store::open(dir, options).map_err(|e| format!("opening delaystore: {e}"))?;
    settle_after_open(dir, SEGMENT_BYTES)?;
    let n = config.orders as usize;
    let by_store = Table::new(n);
    let tables: Vec<Table> = config
        .scan_periods_ms
        .iter()
        .map(|_| Table::new(n))
        .collect();
    let max_period = config.scan_periods_ms.iter().copied().max().unwrap_or(0);
    let timeout = Duration::from_millis(config.order_window_ms + delay_ms + max_period)
        + Duration::from_secs(30);
    let start = Instant::now() + Duration::from_millis(100);
    let (closer, scans, puts) = std::thread::scope(|s| -> Result<_, String> {
        let scanners: Vec<_> = config
            .scan_periods_ms
            .iter()
            .zip(&tables)
            .map(|(&period, table)| {
                s.spawn(move || scan_table(table, period, delay_ms, start, timeout))
            })
            .collect();
        let producer = s.spawn(|| -> Result<u64, String> {
            let window_us = config.order_window_ms * 1000;
            for order in 0..n {
                sleep_until(start + Duration::from_micros(order as u64 * window_us / n as u64));
                let created_ms = SystemClock.now_ms();
                for table in tables.iter().chain(std::iter::once(&by_store)) {
                    table.created_ms[order].store(created_ms, std::sync::atomic::Ordering::Relaxed);
                    table
                        .inserted
                        .store(order + 1, std::sync::atomic::Ordering::Release);
                }
                let body = (order as u64).to_le_bytes().to_vec();
                store
                    .put(&delayed_message(TOPIC, body, delay_ms))
                    .map_err(|e| format!("put: {e}"))?;
            }
            Ok(n as u64)
        });
        let closer = close_by_store(&store, TOPIC, &by_store, delay_ms, timeout);
        let puts = producer
            .join()
            .map_err(|_| "order producer panicked".to_owned())?;
        let scans: Vec<Closer> = scanners
            .into_iter()
            .map(|h| h.join().map_err(|_| "scanner panicked".to_owned()))
            .collect::<Result<_, _>>()?;
        Ok((closer, scans, puts))
    })?;
    store
        .close()
        .map_err(|e| format!("closing delaystore: {e}"))?;
    let (closer, puts) = (closer?, puts?);
    let orders = config.orders;
    // A delayed message costs the producer one put; the store adds one re-post record.
    let mut out = vec![(
        "delaystore".to_owned(),
        closer_sample(&closer, orders, puts as f64 / orders as f64),
        closer.lateness_ms.clone(),
    )];
    for (&period, scan) in config.scan_periods_ms.iter().zip(scans) {
        out.push((
            format!("scan_{}s", period / 1000),
            closer_sample(&scan, orders, 0.0),
            scan.lateness_ms.clone(),
        ));
    }
    Ok(out)
}
