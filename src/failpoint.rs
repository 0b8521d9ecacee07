//! Failpoints: named places on the durability path where a test can make the store fail or
//! die, to check what a crash or an I/O error at exactly that step leaves behind.
//!
//! Compiled only with the cargo feature `failpoints` (off by default). Without it the
//! `failpoint!` macro (in `lib.rs`) expands to nothing and this module does not exist: normal
//! builds carry no check, no lock and no registry.
//!
//! A failpoint is armed with one of three actions:
//!
//! | action | effect at the failpoint |
//! |---|---|
//! | `off` | nothing (the default for every point) |
//! | `error` | the step returns an I/O error (`Error::Io` on a store path, an `io::Error` in the I/O seam) |
//! | `abort` | the process aborts on the spot, exactly like a `SIGKILL` at that step: no destructor runs, the page cache keeps what was written |
//!
//! Arming, either in-process with [`arm`] or for a whole process through the environment
//! variable [`ENV_VAR`] (`DELAYSTORE_FAILPOINTS`, read at the first hit of any point, so a child
//! process needs no code to be armed):
//!
//! ```text
//! DELAYSTORE_FAILPOINTS=NAME=ACTION[@SKIP][,NAME=ACTION[@SKIP]...]
//! DELAYSTORE_FAILPOINTS=log.after_write=abort@25      # the 26th record written aborts
//! DELAYSTORE_FAILPOINTS=fs.sync_range=error           # every msync of a mapped file fails
//! ```
//!
//! `SKIP` hits pass untouched before the action applies to every later hit.
//!
//! The points, in the order a message meets them (see [`NAMES`]):
//!
//! | name | where | what a kill there leaves |
//! |---|---|---|
//! | `log.after_write` | `CommitLog::append`, the record copied into the segment, not yet published | a complete record past `written_end`, never acknowledged |
//! | `log.roll.after_filler` | `CommitLog::roll`, the filler written, the next segment not yet created | a padded segment and no next one |
//! | `log.roll.after_create` | `CommitLog::roll`, the next segment created, not yet active | an empty next segment |
//! | `log.before_sync` | `CommitLog::sync_to`, before the segments are synced | written records not durable, their puts not acknowledged |
//! | `log.after_sync` | `CommitLog::sync_to`, synced, `durable_end` not yet raised | durable records whose puts are not acknowledged |
//! | `fs.sync_range` | `msync` of any mapped file (segment or queue file), real file system only | — (armed with `error`: the sync fails as `EIO` would, and the store must poison itself) |
//! | `dispatch.after_batch` | `DispatchProgress::dispatch_to`, queue entries written, `dispatched_end` not yet raised | entries the checkpoint does not count |
//! | `checkpoint.before_write` | `write_checkpoint`, queues and log synced, checkpoint not yet replaced | durable queues ahead of the checkpoint |
//! | `delivery.after_repost` | `Inner::deliver` (delivery host), a delivery record appended and its decision slot set, the loop's cursor not yet advanced (nor the record synced) | a delivery record whose progress exists only in the log and the slot |
//! | `delivery.after_hop` | `Inner::hop`, a hop record appended (entry for a lower timer slot), the loop's cursor not yet advanced | a hop whose source entry is not yet consumed |
//! | `delivery.after_discard` | `Inner::discard`, a discard record appended (a cancelled, already delivered or unreadable entry), the cursor not yet advanced | a discard whose entry is not yet consumed |
//! | `cancel.after_append` | `Inner::cancel_pending`, the cancel record appended, its decision slot not yet set | a cancel in the log but not in the slot file (dispatch rebuilds the slot) |
//! | `cancel.after_decision` | `Inner::cancel_pending`, the slot set, `Store::cancel` not yet returned (nor synced) | a decided cancel that was never acknowledged |
//! | `retention.after_retire` | `Inner::retain`, the oldest segments deleted, queue files and decision files not yet following | queue entries and slots pointing below the log start |
//!
//! Where a point's `error` has no real counterpart (an append cannot fail after its copy;
//! nothing can fail between a re-post and its cursor update), arming it with `error` tests the
//! caller's error path only; the kill tests use `abort` there.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use parking_lot::Mutex;

/// Every failpoint name, in the order a message meets them.
pub const NAMES: &[&str] = &[
    "log.after_write",
    "log.roll.after_filler",
    "log.roll.after_create",
    "log.before_sync",
    "log.after_sync",
    "fs.sync_range",
    "dispatch.after_batch",
    "checkpoint.before_write",
    "delivery.after_repost",
    "delivery.after_hop",
    "delivery.after_discard",
    "cancel.after_append",
    "cancel.after_decision",
    "retention.after_retire",
];

/// The environment variable that arms failpoints in a whole process.
pub const ENV_VAR: &str = "DELAYSTORE_FAILPOINTS";

/// What an armed failpoint does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Nothing.
    Off,
    /// The step fails with an I/O error.
    Error,
    /// The process aborts (a kill at that step).
    Abort,
}

/// The error an armed failpoint returns; converts into the crate's and `std`'s I/O errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Triggered {
    /// The failpoint's name.
    pub name: &'static str,
}

impl From<Triggered> for std::io::Error {
    fn from(t: Triggered) -> Self {
        std::io::Error::other(format!("failpoint {} triggered (simulated EIO)", t.name))
    }
}

impl From<Triggered> for crate::Error {
    fn from(t: Triggered) -> Self {
        crate::Error::Io {
            path: format!("failpoint {}", t.name).into(),
            source: t.into(),
        }
    }
}

/// One point's arming and hit count.
#[derive(Debug, Clone, Copy)]
struct Point {
    action: Action,
    skip: u64,
    hits: u64,
}

#[derive(Debug, Default)]
struct Registry {
    points: HashMap<String, Point>,
}

/// Whether any point is armed (a fast check before the lock; hits are still counted).
static ARMED: AtomicBool = AtomicBool::new(false);

fn registry() -> &'static Mutex<Registry> {
    static REGISTRY: OnceLock<Mutex<Registry>> = OnceLock::new();
    REGISTRY.get_or_init(|| {
        let mut registry = Registry::default();
        if let Ok(spec) = std::env::var(ENV_VAR) {
            match parse(&spec) {
                Ok(points) => {
                    ARMED.store(!points.is_empty(), Ordering::SeqCst);
                    registry.points = points;
                }
                Err(reason) => eprintln!("delaystore: ignoring {ENV_VAR}={spec:?}: {reason}"),
            }
        }
        Mutex::new(registry)
    })
}

/// Parses `NAME=ACTION[@SKIP],...`.
fn parse(spec: &str) -> Result<HashMap<String, Point>, String> {
    let mut points = HashMap::new();
    for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (name, rest) = item
            .split_once('=')
            .ok_or_else(|| format!("{item:?} is not NAME=ACTION"))?;
        if !NAMES.contains(&name) {
            return Err(format!("no failpoint is named {name:?} (known: {NAMES:?})"));
        }
        let (action, skip) = match rest.split_once('@') {
            Some((action, skip)) => (
                action,
                skip.parse::<u64>()
                    .map_err(|_| format!("{skip:?} is not a hit count"))?,
            ),
            None => (rest, 0),
        };
        let action = match action {
            "off" => Action::Off,
            "error" => Action::Error,
            "abort" => Action::Abort,
            other => return Err(format!("unknown action {other:?} (off, error, abort)")),
        };
        points.insert(
            name.to_owned(),
            Point {
                action,
                skip,
                hits: 0,
            },
        );
    }
    Ok(points)
}

/// Replaces the arming of this process with `spec` (the syntax of [`ENV_VAR`]); hit counts
/// restart at 0. An empty spec disarms every point.
pub fn arm(spec: &str) -> Result<(), String> {
    let points = parse(spec)?;
    let mut registry = registry().lock();
    ARMED.store(!points.is_empty(), Ordering::SeqCst);
    registry.points = points;
    Ok(())
}

/// Hits of `name` since it was armed (0 if it is not armed: hits are counted for armed points
/// only, arm it `off` to count).
pub fn hits(name: &str) -> u64 {
    registry().lock().points.get(name).map_or(0, |p| p.hits)
}

/// Evaluates the failpoint `name` (called by the crate's `failpoint!` macro).
pub fn hit(name: &'static str) -> Result<(), Triggered> {
    let registry = registry();
    if !ARMED.load(Ordering::SeqCst) {
        return Ok(());
    }
    let action = {
        let mut registry = registry.lock();
        let Some(point) = registry.points.get_mut(name) else {
            return Ok(());
        };
        point.hits += 1;
        if point.hits <= point.skip {
            return Ok(());
        }
        point.action
    };
    match action {
        Action::Off => Ok(()),
        Action::Error => Err(Triggered { name }),
        Action::Abort => {
            eprintln!("delaystore: failpoint {name}: aborting the process");
            std::process::abort()
        }
    }
}
