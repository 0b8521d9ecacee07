//! A wake-up signal between threads: a generation counter plus a condition variable.
//!
//! Producers call [`Signal::notify`] on every event; it costs one atomic add when nobody sleeps,
//! so the append path does not pay a syscall per message. Sleepers wait for the generation to
//! move past the one they last saw, with a timeout.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

/// Generation-counting wake-up signal.
#[derive(Debug, Default)]
pub struct Signal {
    generation: AtomicU64,
    sleepers: AtomicUsize,
    lock: Mutex<()>,
    condvar: Condvar,
}

impl Signal {
    /// A new signal at generation 0.
    pub fn new() -> Self {
        Self::default()
    }

    /// The current generation; pass it to [`Signal::wait_past`] after checking the condition.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Announces an event and wakes every sleeper.
    pub fn notify(&self) {
        // SeqCst pairs with the sleeper's increment of `sleepers` followed by its read of
        // `generation`: either we see the sleeper and notify under the lock, or the sleeper
        // sees the new generation and does not sleep.
        self.generation.fetch_add(1, Ordering::SeqCst);
        if self.sleepers.load(Ordering::SeqCst) > 0 {
            let _guard = self.lock.lock();
            self.condvar.notify_all();
        }
    }

    /// Sleeps until the generation differs from `seen` or `timeout` passes. Returns the
    /// generation observed on waking.
    pub fn wait_past(&self, seen: u64, timeout: Duration) -> u64 {
        let deadline = Instant::now().checked_add(timeout);
        self.sleepers.fetch_add(1, Ordering::SeqCst);
        let mut guard = self.lock.lock();
        loop {
            let now = self.generation.load(Ordering::SeqCst);
            if now != seen {
                break;
            }
            match deadline {
                Some(deadline) => {
                    if self.condvar.wait_until(&mut guard, deadline).timed_out() {
                        break;
                    }
                }
                None => self.condvar.wait(&mut guard),
            }
        }
        drop(guard);
        self.sleepers.fetch_sub(1, Ordering::SeqCst);
        self.generation.load(Ordering::SeqCst)
    }
}
