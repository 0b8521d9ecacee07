//! The seed scenario's two order closers, shared by `benches/delivery.rs` and
//! `benches/compare.rs`: (a) a consumer of delayed close messages and (b) a scanner of the
//! orders table every P seconds (docs/benchmarks.md, "Order timeouts"). A bench including this
//! file also includes `support/pull.rs` and `support/timing.rs`.

use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use delaystore::{Clock, Store, StoredMessage, SystemClock};

use super::pull::{body_seq, consume_topic, Consumer};
use super::timing::{ms_since, sleep_until};

/// An order's state: waiting for payment.
pub const UNPAID: u8 = 0;
/// An order's state: closed for lack of payment.
pub const CLOSED: u8 = 1;

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
    let n = table.state.len();
    let mut closing = Closing {
        table,
        delay_ms,
        closer: Closer {
            lateness_ms: Vec::with_capacity(n),
            ..Closer::default()
        },
    };
    consume_topic(store, topic, Some("closer"), timeout, &mut closing)?;
    Ok(closing.closer)
}

/// The consumer of [`close_by_store`].
struct Closing<'a> {
    table: &'a Table,
    delay_ms: u64,
    closer: Closer,
}

impl Consumer for Closing<'_> {
    fn done(&self) -> bool {
        self.closer.closed >= self.table.state.len() as u64
    }

    fn take(&mut self, batch: &[StoredMessage]) -> Result<(), String> {
        for message in batch {
            let order = body_seq(&message.body) as usize;
            let (Some(state), Some(created)) = (
                self.table.state.get(order),
                self.table.created_ms.get(order),
            ) else {
                return Err(format!("message for unknown order {order}"));
            };
            // One row read per order: the close message names its order.
            self.closer.rows_read += 1;
            if state
                .compare_exchange(UNPAID, CLOSED, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
            {
                self.closer.closed += 1;
                let deadline = created.load(Ordering::Relaxed) + self.delay_ms;
                self.closer.lateness_ms.push(ms_since(deadline));
            } else {
                self.closer.duplicates += 1;
            }
        }
        Ok(())
    }
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
