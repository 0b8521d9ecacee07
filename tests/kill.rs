//! Process-kill tier: a child process (this test binary, re-invoked on its own `kill_child`
//! test) opens a store in a real directory and writes synchronous puts, plain and delayed (levels
//! of 20 ms and 60 ms, so its delivery thread re-posts messages while it runs), and reports every
//! acknowledgement on its stdout pipe. The parent kills it:
//!
//! - with `SIGKILL` at a random moment (always run);
//! - with the cargo feature `failpoints`, at each failpoint of `delaystore::failpoint::NAMES`: the
//!   child is armed through `DELAYSTORE_FAILPOINTS=NAME=abort@SKIP` and aborts itself at the
//!   `SKIP + 1`-th hit of that point (`cargo test --release --features failpoints --test kill`).
//!
//! After each kill the parent reopens the directory (the real mmap backend), waits until every
//! due message is delivered, and checks: every acknowledged message is there exactly once, with
//! its acknowledged id and due time and its content intact; nothing is there that was not put; no
//! delivery is early; nothing overdue stays undelivered. A series of rounds shares one directory,
//! so later rounds recover stores that earlier rounds recovered.
//!
//! Every fourth message has an arbitrary delay (up to 1.5 s, so it hops down the timer wheel),
//! and the child cancels one in eight a few puts after putting it (sync mode: an answered
//! cancel is durable). An acknowledged `cancelled` must never be delivered; an unanswered
//! cancel allows either outcome; `already_delivered` must be delivered. Every third round, and
//! the rounds armed at the retention failpoint, run retention (by disk usage, past 4 segments):
//! messages below the log start after the check are counted as retired, not lost.
//!
//! Rounds: 240 random kills by default, 1,000 with `DELAYSTORE_SOAK`; with failpoints, 6 per
//! point (60 with `DELAYSTORE_SOAK`; `DELAYSTORE_FAILPOINT_ONLY=NAME` runs one point). Each
//! round waits in real time for its delayed messages (up to 1.5 s), so directories run
//! [`KILL_THREADS`] at a time; the rounds of one directory run in order. `DELAYSTORE_SEED=n`
//! reproduces a run: the seed plans every kill delay and skip count before any round starts
//! (the child's timing still varies from run to run, as a kill's does).
//! `DELAYSTORE_KEEP_FAILED=DIR` copies the directory of a round that lost or duplicated
//! something, as the kill left it (before the reopen), to `DIR/round<N>` for analysis.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use delaystore::seeded::SeededRng;
use delaystore::{Message, Options, Store, SyncMode};

const CHILD_ENV: &str = "DELAYSTORE_KILL_CHILD";
const TOPICS: [&str; 2] = ["ka", "kb"];
const LEVELS: &str = "20ms 60ms";
const PUTS_MAX: u64 = 4_000;
const ROUNDS_PER_DIR: u64 = 6;
/// Directories run at the same time (their rounds mostly wait for due times).
const KILL_THREADS: usize = 8;

/// Store options; `retention` deletes the oldest segments past 4 of them (unpinned ones only).
fn options(retention: bool) -> Options {
    Options {
        disk_usage_soft_bytes: retention.then_some(4 * 64 * 1024),
        sync_mode: SyncMode::Sync,
        segment_bytes: 64 * 1024,
        consume_queue_file_entries: 64,
        flush_interval_ms: 10,
        checkpoint_interval_ms: 30,
        delay_levels: Some(LEVELS.into()),
        default_queue_count: Some(2),
        ..Options::default()
    }
}

/// The message number `i` of `round`: its topic, key, level and content follow from the
/// numbers, so the parent can check what it reads without being told.
fn message(round: u64, i: u64) -> Message {
    let pad = "p".repeat(((round * 7 + i * 13) % 400) as usize);
    Message::new(TOPICS[(i % 2) as usize], format!("r{round}-{i}-{pad}"))
        .with_key(format!("k{}", i % 5))
        .with_property("n", i.to_string())
        .with_delay_level((i % 4 % 3) as u8)
}

/// Message `i` of `round`, with its delay: every fourth an arbitrary delay of up to 1.5 s
/// (entering timer tier 0, 1 or 2, so it hops), the others a level (0 = plain).
fn delayed_message(round: u64, i: u64) -> Message {
    let message = message(round, i);
    if i % 4 == 3 {
        message
            .with_delay_level(0)
            .with_delay_ms(5 + (round * 31 + i * 17) % 1_500)
    } else {
        message
    }
}

/// The child cancels message `i - CANCEL_LAG` when that one is `i % 8 == 3` (an arbitrary
/// delay, put a few puts earlier: usually pending, sometimes already delivered).
const CANCEL_LAG: u64 = 5;

/// Whether a round's store runs retention: every third round, and the rounds armed at the
/// retention failpoint. (A round after a retention round once lost timer messages: recovery
/// R25 and R26 in docs/recovery.md.)
fn retention_for(round: u64, failpoints: Option<&str>) -> bool {
    round.is_multiple_of(3) || failpoints.is_some_and(|spec| spec.starts_with("retention."))
}

/// Parses a body back into (round, i).
fn parse_body(body: &[u8]) -> Option<(u64, u64)> {
    let text = std::str::from_utf8(body).ok()?;
    let mut parts = text.splitn(3, '-');
    let round = parts.next()?.strip_prefix('r')?.parse().ok()?;
    let i = parts.next()?.parse().ok()?;
    Some((round, i))
}

/// The child: runs only when re-invoked by the parent with `DELAYSTORE_KILL_CHILD=<dir>`.
#[test]
fn kill_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let round: u64 = std::env::var("DELAYSTORE_KILL_ROUND")
        .unwrap()
        .parse()
        .unwrap();
    let retention = std::env::var("DELAYSTORE_KILL_RETENTION").is_ok();
    let store = Store::open(&dir, options(retention)).unwrap();
    println!("open");
    let mut ids = BTreeMap::new();
    for i in 0..PUTS_MAX {
        println!("try {round} {i}");
        match store.put(&delayed_message(round, i)) {
            Ok(receipt) => {
                ids.insert(i, receipt.id);
                println!(
                    "ack {round} {i} {} {}",
                    receipt.id.0,
                    receipt.due_ms.unwrap_or(0)
                )
            }
            Err(err) => {
                println!("err {round} {i} {err}");
                std::process::exit(3);
            }
        }
        let Some(j) = i.checked_sub(CANCEL_LAG).filter(|j| j % 8 == 3) else {
            continue;
        };
        let Some(&id) = ids.get(&j) else { continue };
        // A sync store: the answer is durable when it returns.
        println!("cancel-try {round} {j}");
        match store.cancel(id) {
            Ok(outcome) => println!("cancel {round} {j} {}", outcome.as_str()),
            Err(err) => {
                println!("err {round} {j} cancel: {err}");
                std::process::exit(3);
            }
        }
    }
    println!("done");
    // Stay alive (delivering) until killed; the parent always kills.
    thread::sleep(Duration::from_secs(30));
    std::process::exit(4);
}

/// What the parent knows: per (round, i), the acknowledged (id, due) if any; tried messages.
#[derive(Debug, Default)]
struct Known {
    acked: BTreeMap<(u64, u64), (u64, u64)>,
    tried: BTreeMap<u64, u64>,
    /// Cancels acknowledged `Cancelled`: must never be delivered.
    cancelled: BTreeMap<(u64, u64), ()>,
    /// Cancels tried but not answered: either outcome.
    cancel_unanswered: BTreeMap<(u64, u64), ()>,
}

#[derive(Debug, Default)]
struct Figures {
    rounds: u64,
    killed: u64,
    aborted_at_failpoint: u64,
    failpoint_not_reached: u64,
    acknowledged: u64,
    acknowledged_lost: u64,
    phantom: u64,
    duplicates: u64,
    early: u64,
    undelivered_overdue: u64,
    child_errors: u64,
    cancels_acked: u64,
    cancelled_delivered: u64,
    retired_by_retention: u64,
}

impl Figures {
    fn add(&mut self, other: &Figures) {
        self.rounds += other.rounds;
        self.killed += other.killed;
        self.aborted_at_failpoint += other.aborted_at_failpoint;
        self.failpoint_not_reached += other.failpoint_not_reached;
        self.acknowledged += other.acknowledged;
        self.acknowledged_lost += other.acknowledged_lost;
        self.phantom += other.phantom;
        self.duplicates += other.duplicates;
        self.early += other.early;
        self.undelivered_overdue += other.undelivered_overdue;
        self.child_errors += other.child_errors;
        self.cancels_acked += other.cancels_acked;
        self.cancelled_delivered += other.cancelled_delivered;
        self.retired_by_retention += other.retired_by_retention;
    }

    fn violations(&self) -> u64 {
        self.acknowledged_lost
            + self.phantom
            + self.duplicates
            + self.early
            + self.undelivered_overdue
            + self.cancelled_delivered
            + self.child_errors
    }

    fn line(&self, seed: u64, what: &str) -> String {
        format!(
            "seed={seed} suite={what} kill_rounds={} killed={} aborted_at_failpoint={} failpoint_not_reached={} acknowledged={} cancels_acknowledged={} retired_by_retention={} acknowledged_lost={} phantom={} duplicates={} early={} undelivered_overdue={} cancelled_delivered={} child_errors={}",
            self.rounds, self.killed, self.aborted_at_failpoint, self.failpoint_not_reached,
            self.acknowledged, self.cancels_acked, self.retired_by_retention,
            self.acknowledged_lost, self.phantom, self.duplicates, self.early,
            self.undelivered_overdue, self.cancelled_delivered, self.child_errors
        )
    }

    fn assert_clean(&self, seed: u64, what: &str) {
        let line = self.line(seed, what);
        assert!(
            self.violations() == 0,
            "{line}\nreproduce with DELAYSTORE_SEED={seed} cargo test --release --test kill"
        );
    }
}

fn spawn_child(
    dir: &Path,
    round: u64,
    failpoints: Option<&str>,
) -> (Child, mpsc::Receiver<String>) {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args(["kill_child", "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, dir)
        .env("DELAYSTORE_KILL_ROUND", round.to_string())
        .env_remove("DELAYSTORE_KILL_RETENTION")
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if retention_for(round, failpoints) {
        command.env("DELAYSTORE_KILL_RETENTION", "1");
    }
    match failpoints {
        Some(spec) => command.env("DELAYSTORE_FAILPOINTS", spec),
        None => command.env_remove("DELAYSTORE_FAILPOINTS"),
    };
    let mut child = command.spawn().expect("spawn the child");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

/// How a round ends.
#[cfg_attr(not(feature = "failpoints"), allow(dead_code))]
enum Kill {
    /// SIGKILL this long after the store opened.
    After(Duration),
    /// Wait for the armed failpoint to abort the child (SIGKILL after a timeout if it never
    /// does).
    Failpoint,
}

fn run_round(
    dir: &Path,
    round: u64,
    kill: Kill,
    failpoints: Option<&str>,
    known: &mut Known,
    figures: &mut Figures,
) {
    let (mut child, lines) = spawn_child(dir, round, failpoints);
    let mut received = Vec::new();
    // Wait for the store to open (or the child to die trying: a failpoint can fire in open).
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        match lines.recv_timeout(Duration::from_millis(5)) {
            Ok(line) => {
                let opened = line.ends_with("open");
                received.push(line);
                if opened {
                    break;
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if child.try_wait().unwrap().is_some() {
                    break;
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    match kill {
        Kill::After(delay) => {
            thread::sleep(delay);
            let _ = child.kill();
            figures.killed += 1;
        }
        Kill::Failpoint => {
            let deadline = Instant::now() + Duration::from_secs(3);
            loop {
                if let Some(status) = child.try_wait().unwrap() {
                    use std::os::unix::process::ExitStatusExt;
                    if status.signal() == Some(6) {
                        figures.aborted_at_failpoint += 1;
                    } else {
                        figures.failpoint_not_reached += 1;
                    }
                    break;
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    figures.failpoint_not_reached += 1;
                    break;
                }
                thread::sleep(Duration::from_millis(2));
            }
        }
    }
    child.wait().unwrap();
    received.extend(lines.iter());
    for line in &received {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["try", r, i] => {
                known.tried.insert(r.parse().unwrap(), i.parse().unwrap());
            }
            ["ack", r, i, id, due] => {
                let key = (r.parse().unwrap(), i.parse().unwrap());
                known
                    .acked
                    .insert(key, (id.parse().unwrap(), due.parse().unwrap()));
                figures.acknowledged += 1;
            }
            ["cancel-try", r, i] => {
                let key = (r.parse().unwrap(), i.parse().unwrap());
                known.cancel_unanswered.insert(key, ());
            }
            ["cancel", r, i, outcome] => {
                let key = (r.parse().unwrap(), i.parse().unwrap());
                known.cancel_unanswered.remove(&key);
                figures.cancels_acked += 1;
                match *outcome {
                    "cancelled" => {
                        known.cancelled.insert(key, ());
                    }
                    // Must be delivered: checked as for any acknowledged message.
                    "already_delivered" => {}
                    other => {
                        eprintln!("round {round}: cancel of {key:?} answered {other}");
                        figures.child_errors += 1;
                    }
                }
            }
            ["err", ..] => {
                eprintln!("round {round}: the child failed a put: {line}");
                figures.child_errors += 1;
            }
            _ => {}
        }
    }
    figures.rounds += 1;
    check(dir, round, retention_for(round, failpoints), known, figures);
}

/// Reopens the store and checks every invariant against what the children acknowledged.
fn check(dir: &Path, round: u64, retention: bool, known: &Known, figures: &mut Figures) {
    let keep = std::env::var_os("DELAYSTORE_KEEP_FAILED").map(|keep| {
        let to = PathBuf::from(keep).join(format!("round{round}"));
        if to.exists() {
            std::fs::remove_dir_all(&to).unwrap();
        }
        let copied = Command::new("cp").arg("-a").arg(dir).arg(&to).status();
        assert!(copied.unwrap().success(), "copy {dir:?} to {to:?}");
        to
    });
    let violations_before = figures.violations();
    let store = Store::open(dir, options(retention))
        .unwrap_or_else(|e| panic!("round {round}: reopen: {e}"));
    // Everything is due within 1.5 s of its put; wait (bounded) until it is delivered (or,
    // cancelled, discarded).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let stats = store.stats();
        let pending: u64 = stats.pending_per_level.iter().map(|(_, n)| n).sum::<u64>()
            + stats.pending_per_tier.iter().sum::<u64>();
        if pending == 0 && stats.next_due_ms.is_none() {
            break;
        }
        if Instant::now() > deadline {
            eprintln!("round {round}: {pending} delayed messages still pending");
            figures.undelivered_overdue += pending;
            break;
        }
        thread::sleep(Duration::from_millis(5));
    }
    let mut seen: BTreeMap<(u64, u64), u64> = BTreeMap::new();
    for topic in TOPICS {
        for queue in 0..store.queue_count(topic).unwrap() {
            let mut from = 0;
            loop {
                let batch = store.pull(topic, queue, from, 512).unwrap_or_else(|e| {
                    panic!("round {round}: pull {topic}/{queue} from {from}: {e}")
                });
                let Some(last) = batch.last() else { break };
                from = last.queue_offset + 1;
                for m in batch {
                    let Some(key) = parse_body(&m.body) else {
                        eprintln!("round {round}: garbage body {:?}", m.body);
                        figures.phantom += 1;
                        continue;
                    };
                    let expected = message(key.0, key.1);
                    let tried = known.tried.get(&key.0).is_some_and(|&last| key.1 <= last);
                    let intact = m.body == expected.body
                        && m.key == expected.key
                        && m.properties == expected.properties
                        && m.topic == expected.topic;
                    if !tried || !intact {
                        eprintln!(
                            "round {round}: phantom or damaged message {key:?} (tried: {tried})"
                        );
                        figures.phantom += 1;
                    }
                    if let Some(&(id, due)) = known.acked.get(&key) {
                        if m.id.0 != id || m.due_ms.unwrap_or(0) != due {
                            eprintln!("round {round}: {key:?} has id {} due {:?}, acknowledged {id} {due}", m.id.0, m.due_ms);
                            figures.phantom += 1;
                        }
                    }
                    if let (Some(due), Some(at)) = (m.due_ms, m.delivered_ms) {
                        if at < due {
                            eprintln!("round {round}: {key:?} delivered at {at}, due {due}");
                            figures.early += 1;
                        }
                    }
                    if known.cancelled.contains_key(&key) {
                        eprintln!("round {round}: {key:?} delivered after an acknowledged cancel");
                        figures.cancelled_delivered += 1;
                    }
                    *seen.entry(key).or_default() += 1;
                }
            }
        }
    }
    for (key, count) in &seen {
        if *count > 1 {
            eprintln!("round {round}: {key:?} seen {count} times");
            figures.duplicates += count - 1;
        }
    }
    // Retention (in rounds that run it) deletes old segments: what lay below the log start is
    // gone by design (it never deletes a pending message: those would show as lost below).
    let log_start = store.stats().log_start_offset;
    for (key, &(id, _)) in &known.acked {
        if known.cancelled.contains_key(key) || known.cancel_unanswered.contains_key(key) {
            continue;
        }
        if !seen.contains_key(key) && id < log_start {
            figures.retired_by_retention += 1;
            continue;
        }
        if !seen.contains_key(key) {
            eprintln!("round {round}: acknowledged {key:?} lost");
            figures.acknowledged_lost += 1;
        }
    }
    store.close().unwrap();
    if let Some(to) = keep {
        if figures.violations() == violations_before {
            std::fs::remove_dir_all(&to).unwrap();
        } else {
            eprintln!("round {round}: its directory as the kill left it: {to:?}");
        }
    }
}

fn base_seed() -> u64 {
    std::env::var("DELAYSTORE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x6b11)
}

fn soak() -> bool {
    std::env::var("DELAYSTORE_SOAK").is_ok()
}

/// The rounds of one directory, planned before any runs.
type DirPlan = Vec<(u64, Kill, Option<String>)>;

/// Runs each directory's rounds in order, [`KILL_THREADS`] directories at a time; returns the
/// figures of each directory, in the order of `plans`.
fn run_plans(plans: Vec<DirPlan>) -> Vec<Figures> {
    let count = plans.len();
    let work = Mutex::new(plans.into_iter().enumerate());
    let results: Mutex<Vec<(usize, Figures)>> = Mutex::new(Vec::new());
    thread::scope(|scope| {
        for _ in 0..KILL_THREADS {
            scope.spawn(|| loop {
                let Some((at, plan)) = work.lock().unwrap().next() else {
                    break;
                };
                let dir = tempfile::tempdir().unwrap();
                let mut known = Known::default();
                let mut figures = Figures::default();
                for (round, kill, spec) in plan {
                    run_round(
                        dir.path(),
                        round,
                        kill,
                        spec.as_deref(),
                        &mut known,
                        &mut figures,
                    );
                }
                results.lock().unwrap().push((at, figures));
            });
        }
    });
    let mut results = results.into_inner().unwrap();
    results.sort_by_key(|(at, _)| *at);
    assert_eq!(results.len(), count);
    results.into_iter().map(|(_, figures)| figures).collect()
}

#[test]
fn sigkill_at_random_moments() {
    let seed = base_seed();
    let rounds = if soak() { 1_000 } else { 240 };
    let mut rng = SeededRng::new(seed);
    let mut plans = Vec::new();
    let mut round = 0;
    while round < rounds {
        let mut plan = DirPlan::new();
        for _ in 0..ROUNDS_PER_DIR.min(rounds - round) {
            let delay = Duration::from_millis(rng.below(120));
            plan.push((round, Kill::After(delay), None));
            round += 1;
        }
        plans.push(plan);
    }
    let mut figures = Figures::default();
    for dir in run_plans(plans) {
        figures.add(&dir);
    }
    println!("{}", figures.line(seed, "sigkill"));
    figures.assert_clean(seed, "sigkill");
    assert!(
        figures.acknowledged > 0,
        "no put was acknowledged before a kill"
    );
}

#[cfg(feature = "failpoints")]
#[test]
fn abort_at_every_failpoint() {
    let seed = base_seed();
    let rounds_per_point = if soak() { 60 } else { 6 };
    let mut rng = SeededRng::new(seed ^ 0xfa11);
    let only = std::env::var("DELAYSTORE_FAILPOINT_ONLY").ok();
    // Every point's directories, planned in order, then run together.
    let mut plans = Vec::new();
    let mut plan_points = Vec::new();
    let mut round = 0;
    for name in delaystore::failpoint::NAMES {
        let mut done = 0;
        while done < rounds_per_point {
            let mut plan = DirPlan::new();
            for _ in 0..ROUNDS_PER_DIR.min(rounds_per_point - done) {
                // Early hits (open, the first puts) and late ones (many deliveries) alike; a
                // child run rolls about 20 segments, so the roll points get smaller skips.
                let late = match *name {
                    "log.roll.after_filler" | "log.roll.after_create" => 16,
                    _ => 100,
                };
                let skip = match rng.below(3) {
                    0 => rng.below(4),
                    1 => rng.below(late.min(40)),
                    _ => rng.below(late),
                };
                plan.push((round, Kill::Failpoint, Some(format!("{name}=abort@{skip}"))));
                round += 1;
                done += 1;
            }
            if only.as_deref().is_none_or(|only| only == *name) {
                plans.push(plan);
                plan_points.push(*name);
            }
        }
    }
    let mut per_point: BTreeMap<&str, Figures> = BTreeMap::new();
    for (name, dir) in plan_points.iter().zip(run_plans(plans)) {
        per_point.entry(name).or_default().add(&dir);
    }
    let mut total = Figures::default();
    for name in delaystore::failpoint::NAMES {
        let Some(figures) = per_point.get(name) else {
            continue;
        };
        println!("{}", figures.line(seed, name));
        total.add(figures);
    }
    println!("{}", total.line(seed, "failpoints"));
    for (name, figures) in &per_point {
        figures.assert_clean(seed, name);
        assert!(
            figures.aborted_at_failpoint > 0,
            "failpoint {name} was never reached in {} rounds",
            figures.rounds
        );
    }
}
