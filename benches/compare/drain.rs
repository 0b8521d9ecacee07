//! Backlog drain: a backlog of delayed 128 B messages (1 M in the full run) all due at the same
//! time on a manual clock; the clock jumps 3 hours and the delivery side moves everything into
//! the target queue: re-posts per second (the table stores move 10,000 entries per transaction).

use std::sync::Arc;
use std::time::{Duration, Instant};

use delaystore::ManualClock;

use crate::peer::{Class, PeerKind};
use crate::results::Recorder;
use crate::runner::{fig, PeerSetup, RunCtx};

const BODY: usize = 128;
const DELAY_MS: u64 = 1_000;
const FILL_BATCH: u64 = 10_000;
const START_MS: u64 = 1_700_000_000_000;
const JUMP_MS: u64 = 3 * 3_600_000;

pub fn run(ctx: &RunCtx, rec: &mut Recorder) {
    let count = ctx.config.drain_count;
    let workload = "drain".to_owned();
    for kind in ctx.order(rec.rep) {
        let clock = ManualClock::new(START_MS);
        let setup = PeerSetup {
            class: Class::Async,
            clock: Arc::new(clock.clone()),
            delay_ms: DELAY_MS,
        };
        ctx.measure(rec, &workload, kind, &setup, |peer, _| {
            let payload = vec![0xa5u8; BODY];
            let fill_start = Instant::now();
            let mut seq = 0;
            while seq < count {
                let n = FILL_BATCH.min(count - seq);
                peer.put_batch(seq, n, DELAY_MS, &payload)?;
                seq += n;
            }
            let fill_secs = fill_start.elapsed().as_secs_f64();
            // delaystore indexes puts in the background: wait until all are pending.
            let deadline = Instant::now() + Duration::from_secs(120);
            while kind == PeerKind::Delaystore && peer.pending()? < count {
                if Instant::now() > deadline {
                    return Err("backlog not indexed within 120 s".to_owned());
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            let start = Instant::now();
            clock.advance_ms(JUMP_MS);
            let moved = peer.deliver(count, Duration::from_secs(600), &mut |_, _, _| {})?;
            let secs = start.elapsed().as_secs_f64();
            if moved != count {
                return Err(format!("{moved} of {count} moved"));
            }
            Ok(vec![
                fig("msg_per_s", "msg/s", count as f64 / secs),
                fig("drain_s", "s", secs),
                fig("fill_msg_per_s", "msg/s", count as f64 / fill_secs),
            ])
        });
    }
}
