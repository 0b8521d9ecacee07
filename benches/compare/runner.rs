//! What every workload shares: the run's configuration, servers and peers, the round-robin
//! order of the peers within a repetition, and opening / closing one peer around a measurement.

use std::path::PathBuf;
use std::sync::Arc;

use delaystore::Clock;

use crate::config::Config;
use crate::peer::{self, Class, DelayQueue, OpenCtx, PeerKind};
use crate::results::Recorder;
use crate::servers::Servers;
use crate::util::{fresh_dir, remove_dir, settle_disk};

/// One measured figure: name, unit, value.
pub type Sample = Vec<(String, &'static str, f64)>;

pub fn fig(name: &str, unit: &'static str, value: f64) -> (String, &'static str, f64) {
    (name.to_owned(), unit, value)
}

pub struct RunCtx {
    pub config: Config,
    pub servers: Servers,
    /// Peers that run, in the order of the first repetition.
    pub peers: Vec<PeerKind>,
}

/// How one peer is opened for one measurement.
pub struct PeerSetup {
    pub class: Class,
    pub clock: Arc<dyn Clock>,
    pub delay_ms: u64,
}

impl RunCtx {
    /// The peers in this repetition's order: rotated by one each repetition, so no peer always
    /// runs first (A B C, then B C A, ...).
    pub fn order(&self, rep: usize) -> Vec<PeerKind> {
        let mut peers = self.peers.clone();
        if !peers.is_empty() {
            let by = rep % peers.len();
            peers.rotate_left(by);
        }
        peers
    }

    pub fn peer_dir(&self, kind: PeerKind) -> PathBuf {
        self.config.dir.join(format!("peer-{}", kind.name()))
    }

    pub fn open(
        &self,
        kind: PeerKind,
        setup: &PeerSetup,
        fresh: bool,
    ) -> Result<Box<dyn DelayQueue>, String> {
        let dir = self.peer_dir(kind);
        if fresh {
            fresh_dir(&dir)?;
        }
        let ctx = OpenCtx {
            dir: &dir,
            class: setup.class,
            clock: setup.clock.clone(),
            delay_ms: setup.delay_ms,
            segment_bytes: match setup.class {
                Class::Async => self.config.segment_bytes,
                Class::Sync => self.config.sync_segment_bytes,
            },
            servers: &self.servers,
            fresh,
        };
        peer::open(kind, &ctx)
    }

    /// Opens a fresh `kind`, runs `body` on it, closes it and removes its files; records the
    /// figures under (`workload`, peer name), or the failure.
    pub fn measure(
        &self,
        rec: &mut Recorder,
        workload: &str,
        kind: PeerKind,
        setup: &PeerSetup,
        body: impl FnOnce(&dyn DelayQueue, &mut Recorder) -> Result<Sample, String>,
    ) {
        settle_disk();
        let started = std::time::Instant::now();
        let result = self.open(kind, setup, true).and_then(|peer| {
            let out = body(peer.as_ref(), rec);
            let closed = peer.close();
            let sample = out?;
            closed?;
            Ok(sample)
        });
        remove_dir(&self.peer_dir(kind));
        self.report(rec, workload, kind.name(), started, result);
    }

    /// Records a result (or a failure) and prints a progress line.
    pub fn report(
        &self,
        rec: &mut Recorder,
        workload: &str,
        system: &str,
        started: std::time::Instant,
        result: Result<Sample, String>,
    ) {
        match result {
            Ok(sample) => {
                let shown: Vec<String> = sample
                    .iter()
                    .take(3)
                    .map(|(f, u, v)| format!("{f} {}", crate::util::human(*v, u)))
                    .collect();
                eprintln!(
                    "  rep {} {workload:<26} {system:<10} {:>5.1} s  {}",
                    rec.rep + 1,
                    started.elapsed().as_secs_f64(),
                    shown.join(", ")
                );
                for (figure, unit, value) in sample {
                    rec.add(workload, system, &figure, unit, value);
                }
            }
            Err(e) => rec.fail(workload, system, e),
        }
    }
}
