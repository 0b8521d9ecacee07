//! The store's notion of time. The core never reads the system clock directly: every due time
//! and store timestamp comes from a [`Clock`], so tests of delays can run on a [`ManualClock`]
//! in milliseconds instead of minutes.

use std::fmt::Debug;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;

use crate::signal::Signal;

/// A source of wall-clock time in milliseconds since the Unix epoch.
pub trait Clock: Send + Sync + Debug {
    /// Current time in ms since the Unix epoch.
    fn now_ms(&self) -> u64;

    /// Registers a signal to notify whenever the clock moves by means other than the passing of
    /// real time (a manual clock being advanced), so sleepers waiting for a due time re-check.
    /// The system clock never needs it.
    fn register_waker(&self, _signal: Arc<Signal>) {}
}

/// The operating system's real-time clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        // A clock before 1970 is treated as time 0 rather than failing.
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0)
    }
}

/// A clock that moves only when told to. Clones share the same time.
#[derive(Debug, Clone, Default)]
pub struct ManualClock {
    inner: Arc<ManualInner>,
}

#[derive(Debug, Default)]
struct ManualInner {
    now_ms: AtomicU64,
    wakers: Mutex<Vec<Arc<Signal>>>,
}

impl ManualClock {
    /// A manual clock reading `start_ms`.
    pub fn new(start_ms: u64) -> Self {
        let clock = ManualClock::default();
        clock.inner.now_ms.store(start_ms, Ordering::SeqCst);
        clock
    }

    /// Moves the clock forward by `delta_ms`.
    pub fn advance_ms(&self, delta_ms: u64) {
        self.inner.now_ms.fetch_add(delta_ms, Ordering::SeqCst);
        self.wake();
    }

    /// Sets the clock to `now_ms` (may move backwards, to test clock jumps).
    pub fn set_ms(&self, now_ms: u64) {
        self.inner.now_ms.store(now_ms, Ordering::SeqCst);
        self.wake();
    }

    fn wake(&self) {
        for signal in self.inner.wakers.lock().iter() {
            signal.notify();
        }
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.inner.now_ms.load(Ordering::SeqCst)
    }

    fn register_waker(&self, signal: Arc<Signal>) {
        self.inner.wakers.lock().push(signal);
    }
}
