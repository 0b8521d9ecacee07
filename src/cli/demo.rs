//! `delaystore demo`: the order-timeout scenario on an embedded store.
//!
//! Orders are created at an even pace; each puts a "close order" message delayed by
//! `--delay-ms` (an arbitrary delay, ms precision). A share of the orders is paid at a random
//! moment before its deadline, and the payment cancels the close message. A closer consumer
//! receives every close message that falls due and closes the order only if it is still unpaid
//! (a cancel that lost the race to delivery answers `AlreadyDelivered`, and the closer then
//! sees the order paid). The demo checks what matters: no paid order closed, no order closed
//! early, no unpaid order missed, no message delivered twice, no cancelled message delivered;
//! and measures how late the closes are.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use delaystore::seeded::SeededRng;
use delaystore::{
    CancelOutcome, Clock, Error, Message, MessageId, Options, Store, SyncMode, SystemClock,
};

use super::emit;

const TOPIC: &str = "order-close";
const UNPAID: u8 = 0;
const PAID: u8 = 1;
const CLOSED: u8 = 2;
const PRODUCERS: u64 = 4;
/// An order whose close message is not put yet.
const NO_ID: u64 = u64::MAX;

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Number of orders.
    #[arg(long, default_value_t = 100_000)]
    orders: u64,
    /// Share of orders paid before their deadline (0.0..=1.0).
    #[arg(long, default_value_t = 0.7)]
    pay_share: f64,
    /// Time an order may stay unpaid before it is closed, in ms.
    #[arg(long, default_value_t = 3_000)]
    delay_ms: u64,
    /// Orders are created evenly over this window, in ms.
    #[arg(long, default_value_t = 2_000)]
    create_ms: u64,
    /// Acknowledge puts only once durable (sync mode).
    #[arg(long)]
    sync: bool,
    /// Seed of the payment schedule.
    #[arg(long, default_value_t = 17)]
    seed: u64,
}

struct Orders {
    state: Vec<AtomicU8>,
    deliveries: Vec<AtomicU64>,
    /// The close message's id, once put.
    ids: Vec<AtomicU64>,
    /// Whether the payment's cancel answered `Cancelled`.
    cancelled: Vec<AtomicU8>,
    /// How many cancels answered `Cancelled`.
    cancelled_total: AtomicU64,
}

#[derive(Default)]
struct CloserReport {
    received: u64,
    closed: u64,
    skipped_paid: u64,
    wrongly_closed: u64,
    duplicates: u64,
    delivered_after_cancel: u64,
    store_lateness_ms: Vec<u64>,
    observed_lateness_ms: Vec<u64>,
    first_delivered_ms: u64,
    last_delivered_ms: u64,
}

pub fn run(args: &DemoArgs) -> Result<i32, Error> {
    if !(0.0..=1.0).contains(&args.pay_share) || args.orders == 0 || args.delay_ms == 0 {
        super::report_error(
            "need --orders > 0, --delay-ms > 0, 0 <= --pay-share <= 1",
            None,
        );
        return Ok(super::EXIT_FAILED);
    }
    let dir = tempfile::tempdir().map_err(|e| Error::Io {
        path: std::env::temp_dir(),
        source: e,
    })?;
    let options = Options {
        // Default options but 64 MiB segments: the demo writes ~20 MB, and every segment is
        // zero-filled on creation.
        segment_bytes: 64 * 1024 * 1024,
        sync_mode: if args.sync {
            SyncMode::Sync
        } else {
            SyncMode::Async
        },
        ..Options::default()
    };
    let store = Arc::new(Store::open(dir.path(), options)?);
    let orders = Arc::new(Orders {
        state: (0..args.orders).map(|_| AtomicU8::new(UNPAID)).collect(),
        deliveries: (0..args.orders).map(|_| AtomicU64::new(0)).collect(),
        ids: (0..args.orders).map(|_| AtomicU64::new(NO_ID)).collect(),
        cancelled: (0..args.orders).map(|_| AtomicU8::new(0)).collect(),
        cancelled_total: AtomicU64::new(0),
    });
    eprintln!(
        "demo: {} orders over {} ms, close after {} ms, {:.0}% paid; store in {}",
        args.orders,
        args.create_ms,
        args.delay_ms,
        args.pay_share * 100.0,
        dir.path().display()
    );

    // The payment schedule: (pay time after start in ms, order).
    let mut rng = SeededRng::new(args.seed);
    let mut payments: Vec<(u64, u64)> = Vec::new();
    for order in 0..args.orders {
        if rng.unit_f64() < args.pay_share {
            let created = order * args.create_ms / args.orders;
            let pay_after = (rng.unit_f64() * 0.8 * args.delay_ms as f64) as u64;
            payments.push((created + pay_after, order));
        }
    }
    payments.sort_unstable();

    let started = Instant::now();
    let put_nanos = Arc::new(AtomicU64::new(0));
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            let (store, put_nanos, orders) = (store.clone(), put_nanos.clone(), orders.clone());
            let (count, window, delay_ms) = (args.orders, args.create_ms, args.delay_ms);
            std::thread::spawn(move || -> Result<(), Error> {
                for order in (p..count).step_by(PRODUCERS as usize) {
                    sleep_until(started, order * window / count);
                    let message = Message::new(TOPIC, order.to_string())
                        .with_key(format!("order-{order}"))
                        .with_delay_ms(delay_ms);
                    let t = Instant::now();
                    let receipt = store.put(&message)?;
                    put_nanos.fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
                    if let Some(id) = orders.ids.get(order as usize) {
                        id.store(receipt.id.0, Ordering::SeqCst);
                    }
                }
                Ok(())
            })
        })
        .collect();
    let payer = {
        let (orders, store) = (orders.clone(), store.clone());
        std::thread::spawn(move || -> Result<u64, Error> {
            let mut late = 0u64;
            for (at_ms, order) in payments {
                sleep_until(started, at_ms);
                let index = order as usize;
                let (Some(state), Some(id)) = (orders.state.get(index), orders.ids.get(index))
                else {
                    continue;
                };
                if state
                    .compare_exchange(UNPAID, PAID, Ordering::SeqCst, Ordering::SeqCst)
                    .is_err()
                {
                    late += 1;
                    continue;
                }
                // The payment cancels the close message (waiting for its put if it lags).
                let id = loop {
                    match id.load(Ordering::SeqCst) {
                        NO_ID => std::thread::sleep(Duration::from_millis(1)),
                        id => break MessageId(id),
                    }
                };
                if store.cancel(id)? == CancelOutcome::Cancelled {
                    if let Some(flag) = orders.cancelled.get(index) {
                        flag.store(1, Ordering::SeqCst);
                    }
                    orders.cancelled_total.fetch_add(1, Ordering::SeqCst);
                }
            }
            Ok(late)
        })
    };
    let deadline = Duration::from_millis(args.create_ms + args.delay_ms + 30_000);
    let report = close_orders(&store, &orders, args.orders, started, deadline)?;

    for producer in producers {
        match producer.join() {
            Ok(result) => result?,
            Err(_) => super::report_error("a producer thread panicked", None),
        }
    }
    let paid_late = match payer.join() {
        Ok(result) => result?,
        Err(_) => {
            super::report_error("the payer thread panicked", None);
            0
        }
    };
    if let Some(store) = Arc::into_inner(store) {
        store.close()?;
    }

    let paid = orders
        .state
        .iter()
        .filter(|s| s.load(Ordering::SeqCst) == PAID)
        .count() as u64;
    let missed = orders
        .state
        .iter()
        .filter(|s| s.load(Ordering::SeqCst) == UNPAID)
        .count() as u64;
    let cancelled = orders.cancelled_total.load(Ordering::SeqCst);
    let never_delivered = orders
        .deliveries
        .iter()
        .zip(&orders.cancelled)
        .filter(|(d, c)| d.load(Ordering::SeqCst) == 0 && c.load(Ordering::SeqCst) == 0)
        .count() as u64;
    let put_secs = put_nanos.load(Ordering::Relaxed) as f64 / 1e9;
    let delivery_span_ms = report
        .last_delivered_ms
        .saturating_sub(report.first_delivered_ms)
        .max(1);
    let mut store_lateness = report.store_lateness_ms.clone();
    let mut observed = report.observed_lateness_ms.clone();
    let ok = report.wrongly_closed == 0
        && missed == 0
        && report.duplicates == 0
        && never_delivered == 0
        && report.delivered_after_cancel == 0;
    let summary = serde_json::json!({
        "created": args.orders,
        "paid": paid,
        "cancelled": cancelled,
        "delivered_after_cancel": report.delivered_after_cancel,
        "closed": report.closed,
        "wrongly_closed": report.wrongly_closed,
        "missed": missed,
        "duplicates": report.duplicates,
        "never_delivered": never_delivered,
        "paid_after_close": paid_late,
        "lateness_ms": percentiles(&mut store_lateness),
        "observed_lateness_ms": percentiles(&mut observed),
        "put_capacity_msgs_per_s": (args.orders as f64 / put_secs.max(1e-9)).round(),
        "delivered_per_s": (report.received as f64 * 1000.0 / delivery_span_ms as f64).round(),
        "elapsed_ms": started.elapsed().as_millis() as u64,
        "ok": ok,
    });
    eprintln!(
        "created {} | paid {} (close message cancelled: {}) | closed {} | wrongly closed {} | \
         missed {} | duplicates {}\n\
         lateness (delivered - due) p50/p99/max ms: {} | observed by the closer: {}",
        args.orders,
        paid,
        cancelled,
        report.closed,
        report.wrongly_closed,
        missed,
        report.duplicates,
        summary["lateness_ms"],
        summary["observed_lateness_ms"],
    );
    emit(&summary);
    Ok(if ok { 0 } else { super::EXIT_PROBLEM })
}

/// The closer: consumes every close message and closes the order if still unpaid.
fn close_orders(
    store: &Store,
    orders: &Orders,
    expected: u64,
    started: Instant,
    deadline: Duration,
) -> Result<CloserReport, Error> {
    let queues = store.queue_count(TOPIC)?;
    let mut next = vec![0u64; queues as usize];
    let mut report = CloserReport {
        first_delivered_ms: u64::MAX,
        ..CloserReport::default()
    };
    // Every close message arrives except those whose cancel answered `Cancelled`.
    while report.received + orders.cancelled_total.load(Ordering::SeqCst) < expected
        && started.elapsed() < deadline
    {
        let token = store.visibility_token();
        let mut got_any = false;
        for (queue, offset) in (0..queues).zip(next.iter_mut()) {
            let batch = store.pull(TOPIC, queue, *offset, 1024)?;
            let Some(last) = batch.last() else { continue };
            *offset = last.queue_offset + 1;
            got_any = true;
            let now_ms = SystemClock.now_ms();
            for message in batch {
                report.received += 1;
                let due = message.due_ms.unwrap_or(0);
                let delivered = message.delivered_ms.unwrap_or(0);
                report.first_delivered_ms = report.first_delivered_ms.min(delivered);
                report.last_delivered_ms = report.last_delivered_ms.max(delivered);
                report.store_lateness_ms.push(delivered.saturating_sub(due));
                report.observed_lateness_ms.push(now_ms.saturating_sub(due));
                let order: usize = String::from_utf8_lossy(&message.body)
                    .parse()
                    .unwrap_or(usize::MAX);
                let (Some(state), Some(count), Some(cancelled)) = (
                    orders.state.get(order),
                    orders.deliveries.get(order),
                    orders.cancelled.get(order),
                ) else {
                    continue;
                };
                if cancelled.load(Ordering::SeqCst) != 0 {
                    report.delivered_after_cancel += 1;
                }
                if count.fetch_add(1, Ordering::SeqCst) > 0 {
                    report.duplicates += 1;
                    continue;
                }
                match state.compare_exchange(UNPAID, CLOSED, Ordering::SeqCst, Ordering::SeqCst) {
                    Ok(_) => {
                        report.closed += 1;
                        if now_ms < due || delivered < due {
                            report.wrongly_closed += 1;
                        }
                    }
                    Err(_) => report.skipped_paid += 1,
                }
            }
            store.commit_offset("closer", TOPIC, queue, *offset)?;
        }
        if !got_any {
            store.wait_for_entries(token, Duration::from_millis(100));
        }
    }
    Ok(report)
}

fn sleep_until(started: Instant, at_ms: u64) {
    let target = started + Duration::from_millis(at_ms);
    let now = Instant::now();
    if target > now {
        std::thread::sleep(target - now);
    }
}

fn percentiles(values: &mut [u64]) -> serde_json::Value {
    values.sort_unstable();
    let pick = |q: f64| -> u64 {
        if values.is_empty() {
            return 0;
        }
        let index = ((values.len() - 1) as f64 * q).round() as usize;
        values.get(index).copied().unwrap_or(0)
    };
    serde_json::json!({ "p50": pick(0.5), "p99": pick(0.99), "max": pick(1.0) })
}
