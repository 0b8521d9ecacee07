//! The seed scenario's two order closers, shared by `benches/delivery.rs` and
//! `benches/compare.rs`: (a) a consumer of delayed close messages and (b) a scanner of the
//! orders table every P seconds (docs/benchmarks.md, "Order timeouts").

use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use delaystore::{Clock, Store, SystemClock};

use super::timing::{ms_since, sleep_until};

/// An order's state: waiting for payment.
pub const UNPAID: u8 = 0;
/// An order's state: closed for lack of payment.
pub const CLOSED: u8 = 1;
const PULL_BATCH: usize = 1024;

/// An in-memory orders table: created time and state per row; rows below `inserted` exist.
pub struct Table {
    pub created_ms: Vec<AtomicU64>,
    pub state: Vec<AtomicU8>,
    pub inserted: AtomicUsize,
}

impl Table {
    pub fn new(rows: usize) -> Self {
        Table {
            created_ms: (0..rows).map(|_| AtomicU64::new(0)).collect(),
            state: (0..rows).map(|_| AtomicU8::new(UNPAID)).collect(),
            inserted: AtomicUsize::new(0),
        }
    }
}

/// What one closer did.
#[derive(Debug, Default)]
pub struct Closer {
    pub lateness_ms: Vec<f64>,
    pub rows_read: u64,
    pub closed: u64,
    pub duplicates: u64,
    pub scans: u64,
}

/// (a): the closer consumes the close messages on `topic` (each body starts with the order
/// number, little-endian u64) and closes each order that is still unpaid.
pub fn close_by_store(
    store: &Store,
    topic: &str,
    table: &Table,
    delay_ms: u64,
    timeout: Duration,
) -> Result<Closer, String> {
    let queues = store
        .queue_count(topic)
        .map_err(|e| format!("queue count: {e}"))?;
    let n = table.state.len() as u64;
    let mut next = vec![0u64; queues as usize];
    let mut closer = Closer {
        lateness_ms: Vec::with_capacity(n as usize),
        ..Closer::default()
    };
    let start = Instant::now();
    while closer.closed < n && start.elapsed() < timeout {
        let token = store.visibility_token();
        let mut got_any = false;
        for (queue, offset) in (0..queues).zip(next.iter_mut()) {
            let batch = store
                .pull(topic, queue, *offset, PULL_BATCH)
                .map_err(|e| format!("pull: {e}"))?;
            let Some(last) = batch.last() else { continue };
            *offset = last.queue_offset + 1;
            got_any = true;
            for message in &batch {
                let order = message
                    .body
                    .get(..8)
                    .and_then(|b| b.try_into().ok())
                    .map_or(u64::MAX, u64::from_le_bytes) as usize;
                let (Some(state), Some(created)) =
                    (table.state.get(order), table.created_ms.get(order))
                else {
                    return Err(format!("message for unknown order {order}"));
                };
                // One row read per order: the close message names its order.
                closer.rows_read += 1;
                if state
                    .compare_exchange(UNPAID, CLOSED, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok()
                {
                    closer.closed += 1;
                    let deadline = created.load(Ordering::Relaxed) + delay_ms;
                    closer.lateness_ms.push(ms_since(deadline));
                } else {
                    closer.duplicates += 1;
                }
            }
            store
                .commit_offset("closer", topic, queue, *offset)
                .map_err(|e| format!("commit offset: {e}"))?;
        }
        if !got_any {
            store.wait_for_entries(token, Duration::from_millis(100));
        }
    }
    Ok(closer)
}

/// (b): every `period_ms` from `start`, examine every row of the table and close each unpaid
/// order past its deadline; stop once every order is closed (or at `timeout`).
pub fn scan_table(
    table: &Table,
    period_ms: u64,
    delay_ms: u64,
    start: Instant,
    timeout: Duration,
) -> Closer {
    let n = table.state.len() as u64;
    let mut closer = Closer {
        lateness_ms: Vec::with_capacity(n as usize),
        ..Closer::default()
    };
    let mut scan = 0u64;
    while closer.closed < n {
        scan += 1;
        let at = Duration::from_millis(scan * period_ms);
        if at > timeout {
            break;
        }
        sleep_until(start + at);
        closer.scans += 1;
        let now_ms = SystemClock.now_ms();
        let rows = table.inserted.load(Ordering::Acquire);
        for (state, created) in table.state.iter().zip(&table.created_ms).take(rows) {
            closer.rows_read += 1;
            let deadline = created.load(Ordering::Relaxed) + delay_ms;
            if deadline <= now_ms && state.load(Ordering::Relaxed) == UNPAID {
                state.store(CLOSED, Ordering::Relaxed);
                closer.closed += 1;
                closer.lateness_ms.push(ms_since(deadline));
            }
        }
    }
    closer
}
