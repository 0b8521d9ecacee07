#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The operator's commands after a crash, driving the built binary: `verify` (exit codes,
//! positioned problems, refusing a live store, changing nothing), `recover` (and its dry run),
//! `dump` filters, `replay` idempotency, `inspect`; stores with timer messages in flight,
//! cancellations, and segments deleted by retention.

mod common;
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use std::sync::Arc;

use delaystore::{ManualClock, Message, MessageId, Options, Store};
use serde_json::{json, Value};
use support::{eventually, Tail};

const BIN: &str = env!("CARGO_BIN_EXE_delaystore");
/// Level 1 is delivered within a test; level 2 stays pending.
const LEVELS: &str = "100ms 1h";
const SEGMENT_BYTES: u64 = 65_536;

#[derive(Debug)]
struct Run {
    code: Option<i32>,
    stdout: Vec<Value>,
    stderr: String,
}

fn run(dir: &Path, args: &[&str], input: Option<&str>) -> Run {
    let mut child = Command::new(BIN)
        .arg("--dir")
        .arg(dir)
        .args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn delaystore");
    if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
        use std::io::Write;
        stdin.write_all(input.as_bytes()).unwrap();
    }
    let output = child.wait_with_output().expect("wait for delaystore");
    let stdout = String::from_utf8(output.stdout).expect("stdout is UTF-8");
    Run {
        code: output.status.code(),
        stdout: stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
            .collect(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn run_ok(dir: &Path, args: &[&str], input: Option<&str>) -> Run {
    let out = run(dir, args, input);
    assert_eq!(out.code, Some(0), "delaystore {args:?} failed: {out:?}");
    out
}

/// The last stdout line (a summary).
fn summary(out: &Run) -> &Value {
    out.stdout
        .last()
        .unwrap_or_else(|| panic!("no output: {out:?}"))
}

/// Problem lines of a verify run.
fn problems(out: &Run) -> Vec<&Value> {
    out.stdout
        .iter()
        .filter(|l| l.get("problem").is_some())
        .collect()
}

/// A store of 64 KiB segments (several of them), 2 queues per topic, with
/// immediate messages in `orders` and `audit`, delayed ones (level 1, delivered by the
/// consume below; level 2, pending) and a consumer group's offsets. Returns the acks in order.
fn populated(dir: &Path) -> Vec<Value> {
    run_ok(
        dir,
        &[
            "init",
            "--levels",
            LEVELS,
            "--segment-bytes",
            &SEGMENT_BYTES.to_string(),
            "--queues",
            "2",
        ],
        None,
    );
    let mut lines = Vec::new();
    for i in 0..600 {
        let line = match i % 6 {
            0..=2 => {
                json!({"topic": "orders", "body": format!("order-{i}"), "key": format!("k{i}"),
                                "properties": {"n": i.to_string()}})
            }
            3 => json!({"topic": "audit", "body": format!("audit-{i}")}),
            4 => json!({"topic": "orders", "body": format!("soon-{i}"), "delay_level": 1}),
            _ => json!({"topic": "orders", "body": format!("later-{i}"), "delay_level": 2}),
        };
        lines.push(line.to_string());
    }
    let acks = run_ok(dir, &["put"], Some(&(lines.join("\n") + "\n"))).stdout;
    assert_eq!(acks.len(), 600);
    // Lets level 1 fall due and be delivered, and commits offsets for group g.
    let consumed = run_ok(
        dir,
        &[
            "consume",
            "--topic",
            "orders",
            "--group",
            "g",
            "--idle-exit-ms",
            "1500",
        ],
        None,
    );
    assert_eq!(consumed.stdout.len(), 400, "300 immediate + 100 delivered");
    acks
}

fn id_of(ack: &Value) -> u64 {
    u64::from_str_radix(ack["id"].as_str().unwrap(), 16).unwrap()
}

/// Every file under `dir` with its bytes.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                out.insert(path.clone(), Vec::new());
                stack.push(path);
            } else {
                out.insert(path.clone(), std::fs::read(&path).unwrap());
            }
        }
    }
    out
}

fn segment(dir: &Path, base: u64) -> PathBuf {
    dir.join("commitlog").join(format!("{base:020}"))
}

/// The segment holding log offset `at`, and the offset inside it.
fn locate(dir: &Path, at: u64) -> (PathBuf, u64) {
    let base = at - at % SEGMENT_BYTES;
    (segment(dir, base), at - base)
}

fn write_at(path: &Path, offset: u64, bytes: &[u8]) {
    let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    file.write_all_at(bytes, offset).unwrap();
}

fn flip_byte(path: &Path, offset: u64) {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut byte = [0u8];
    file.read_exact_at(&mut byte, offset).unwrap();
    file.write_all_at(&[byte[0] ^ 0x5a], offset).unwrap();
}

/// Bodies of every message consumers see, by topic (a fresh group reads from 0).
fn all_bodies(dir: &Path, group: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut out = BTreeMap::new();
    for topic in ["orders", "audit"] {
        let lines = run_ok(
            dir,
            &[
                "consume",
                "--topic",
                topic,
                "--group",
                group,
                "--idle-exit-ms",
                "300",
            ],
            None,
        )
        .stdout;
        let bodies: Vec<String> = lines
            .iter()
            .map(|l| l["body"].as_str().unwrap().to_owned())
            .collect();
        let unique: BTreeSet<String> = bodies.iter().cloned().collect();
        assert_eq!(
            unique.len(),
            bodies.len(),
            "a message seen twice in {topic}"
        );
        out.insert(topic.to_owned(), unique);
    }
    out
}

/// Bodies of the acks whose id is below `limit` and that consumers should see now
/// (immediate ones and level 1, which the consume runs deliver).
fn expected_bodies(acks: &[Value], lines_limit: u64) -> BTreeSet<String> {
    acks.iter()
        .enumerate()
        .filter(|(_, ack)| id_of(ack) < lines_limit)
        .filter(|(i, _)| i % 6 != 5)
        .map(|(i, _)| match i % 6 {
            0..=2 => format!("order-{i}"),
            3 => format!("audit-{i}"),
            _ => format!("soon-{i}"),
        })
        .collect()
}

fn seen(bodies: &BTreeMap<String, BTreeSet<String>>) -> BTreeSet<String> {
    bodies.values().flatten().cloned().collect()
}

#[test]
fn verify_clean_store_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    populated(dir.path());
    let out = run_ok(dir.path(), &["verify"], None);
    assert!(problems(&out).is_empty(), "{out:?}");
    let s = summary(&out);
    assert_eq!(s["problems"], json!(0));
    assert_eq!(s["warnings"], json!(0));
    assert_eq!(s["messages"], json!(600));
    assert_eq!(s["deliveries"], json!(100));
    assert_eq!(s["pending_delayed"], json!(100));
    assert_eq!(s["needs_recovery"], json!(false));
    assert!(s["records"].as_u64().unwrap() >= 700);
    assert!(s["bytes"].as_u64().unwrap() > 0);
    assert!(s["segments"].as_u64().unwrap() > 1, "several segments: {s}");
}

#[test]
fn verify_names_a_flipped_byte_with_file_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    let acks = populated(dir.path());
    let victim = id_of(&acks[100]);
    let (file, offset) = locate(dir.path(), victim);
    flip_byte(&file, offset + 70);
    let out = run(dir.path(), &["verify"], None);
    assert_eq!(out.code, Some(1), "{out:?}");
    let found = problems(&out);
    let damage = found
        .iter()
        .find(|p| p["problem"] == json!("damage_below_checkpoint"))
        .unwrap_or_else(|| panic!("no damage reported: {found:?}"));
    assert_eq!(damage["file"], json!(file.display().to_string()));
    assert_eq!(damage["offset"], json!(offset));
    assert_eq!(damage["log_offset"], json!(victim));
    assert_eq!(damage["severity"], json!("error"));
    assert!(damage["detail"].as_str().unwrap().contains("checksum"));
    assert!(summary(&out)["problems"].as_u64().unwrap() >= 1);
}

#[test]
fn verify_names_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    populated(dir.path());
    let end = summary(&run_ok(dir.path(), &["verify"], None))["log_end_offset"]
        .as_u64()
        .unwrap();
    let (file, offset) = locate(dir.path(), end);
    // Half a record header followed by garbage, as a write cut short leaves.
    write_at(
        &file,
        offset,
        b"DSR1\x54\x00\x00\x00garbage-after-the-last-record",
    );
    let out = run(dir.path(), &["verify"], None);
    assert_eq!(out.code, Some(1), "{out:?}");
    let found = problems(&out);
    let torn = found
        .iter()
        .find(|p| p["problem"] == json!("bad_record"))
        .unwrap_or_else(|| panic!("no torn tail reported: {found:?}"));
    assert_eq!(torn["file"], json!(file.display().to_string()));
    assert_eq!(torn["offset"], json!(offset));
    assert_eq!(torn["log_offset"], json!(end));
}

#[test]
fn verify_names_a_deleted_consume_queue() {
    let dir = tempfile::tempdir().unwrap();
    populated(dir.path());
    let queue_dir = dir.path().join("consumequeue").join("audit").join("1");
    std::fs::remove_dir_all(&queue_dir).unwrap();
    let out = run(dir.path(), &["verify"], None);
    assert_eq!(out.code, Some(1), "{out:?}");
    let found = problems(&out);
    let missing: Vec<&&Value> = found
        .iter()
        .filter(|p| p["problem"] == json!("queue_entry_missing"))
        .collect();
    assert!(!missing.is_empty(), "{out:?}");
    for problem in &missing {
        assert_eq!(problem["file"], json!(queue_dir.display().to_string()));
    }
    let offsets: Vec<u64> = missing
        .iter()
        .map(|p| p["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(offsets[..3], [0, 20, 40], "entry byte offsets: {offsets:?}");
}

#[test]
fn verify_survives_truncated_and_garbage_files() {
    let dir = tempfile::tempdir().unwrap();
    populated(dir.path());
    let first = segment(dir.path(), 0);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&first)
        .unwrap()
        .set_len(1000)
        .unwrap();
    let queue = dir
        .path()
        .join("consumequeue/orders/0/00000000000000000000");
    std::fs::write(&queue, b"not a queue file at all").unwrap();
    std::fs::write(dir.path().join("checkpoint"), b"garbage").unwrap();
    let out = run(dir.path(), &["verify"], None);
    assert_eq!(out.code, Some(1), "{out:?}");
    let kinds: BTreeSet<&str> = problems(&out)
        .iter()
        .map(|p| p["problem"].as_str().unwrap())
        .collect();
    for kind in ["segment_gap", "checkpoint_corrupt", "queue_file_size"] {
        assert!(kinds.contains(kind), "{kind} missing from {kinds:?}");
    }
}

#[test]
fn read_only_commands_change_nothing_and_create_no_lock() {
    let dir = tempfile::tempdir().unwrap();
    let acks = populated(dir.path());
    std::fs::remove_file(dir.path().join("LOCK")).unwrap();
    // A crash-like state: no checkpoint, a damaged record.
    std::fs::remove_file(dir.path().join("checkpoint")).unwrap();
    let (file, offset) = locate(dir.path(), id_of(&acks[300]));
    flip_byte(&file, offset + 70);
    let before = snapshot(dir.path());
    assert_eq!(run(dir.path(), &["verify"], None).code, Some(1));
    run_ok(dir.path(), &["dump", "--topic", "orders"], None);
    run_ok(dir.path(), &["inspect"], None);
    let plan = run_ok(dir.path(), &["recover", "--dry-run"], None);
    assert!(summary(&plan)["torn_tail"].is_object(), "{plan:?}");
    assert_eq!(
        snapshot(dir.path()),
        before,
        "a read-only command changed the store"
    );
    assert!(!dir.path().join("LOCK").exists());
}

#[test]
fn verify_refuses_a_live_store() {
    let dir = tempfile::tempdir().unwrap();
    populated(dir.path());
    let store = Store::open(
        dir.path(),
        Options {
            segment_bytes: SEGMENT_BYTES,
            ..Options::default()
        },
    )
    .unwrap();
    for command in [&["verify"][..], &["recover", "--dry-run"], &["recover"]] {
        let out = run(dir.path(), command, None);
        assert_eq!(out.code, Some(2), "{command:?} on a live store: {out:?}");
        assert!(out.stdout.is_empty());
        assert!(out.stderr.contains("live process"), "{}", out.stderr);
    }
    // Read-only inspection of a live store is sound (pread of what is written) and says so.
    let view = run_ok(dir.path(), &["inspect"], None);
    assert_eq!(summary(&view)["live"], json!(true));
    store.close().unwrap();
    run_ok(dir.path(), &["verify"], None);
}

/// After each kind of damage: `recover`, then `verify` is clean and every acknowledged message
/// written before the damage point is still there (and nothing after a cut reappears).
#[test]
fn recover_then_verify_is_clean_and_keeps_acknowledged_messages() {
    // A torn tail: garbage after the last record.
    let dir = tempfile::tempdir().unwrap();
    let acks = populated(dir.path());
    let end = summary(&run_ok(dir.path(), &["verify"], None))["log_end_offset"]
        .as_u64()
        .unwrap();
    let (file, offset) = locate(dir.path(), end);
    write_at(&file, offset, b"\x01\x02\x03 torn write");
    let out = run_ok(dir.path(), &["recover"], None);
    let s = summary(&out);
    assert_eq!(s["as_planned"], json!(true), "{s}");
    assert!(s["torn_tail"].is_object(), "{s}");
    assert!(s["discarded_tail_bytes"].as_u64().unwrap() > 0);
    assert_eq!(s["records_dropped"], json!(0));
    run_ok(dir.path(), &["verify"], None);
    assert_eq!(
        seen(&all_bodies(dir.path(), "after-torn")),
        expected_bodies(&acks, u64::MAX)
    );

    // A deleted consume queue.
    let dir = tempfile::tempdir().unwrap();
    let acks = populated(dir.path());
    std::fs::remove_dir_all(dir.path().join("consumequeue").join("orders")).unwrap();
    let s = summary(&run_ok(dir.path(), &["recover"], None)).clone();
    let rebuilt: BTreeSet<&str> = s["queues_rebuilt"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q.as_str().unwrap())
        .collect();
    assert_eq!(rebuilt, BTreeSet::from(["orders/0", "orders/1"]), "{s}");
    run_ok(dir.path(), &["verify"], None);
    assert_eq!(
        seen(&all_bodies(dir.path(), "after-queue")),
        expected_bodies(&acks, u64::MAX)
    );

    // A flipped byte in a record, with the checkpoint lost: the full scan cuts there. The dry
    // run lists the records the cut drops; the real run drops exactly those.
    let dir = tempfile::tempdir().unwrap();
    let acks = populated(dir.path());
    let victim = id_of(&acks[450]);
    let (file, offset) = locate(dir.path(), victim);
    flip_byte(&file, offset + 70);
    std::fs::remove_file(dir.path().join("checkpoint")).unwrap();
    let plan = run_ok(dir.path(), &["recover", "--dry-run"], None);
    let dropped: Vec<u64> = plan
        .stdout
        .iter()
        .filter_map(|l| l.get("dropped_record"))
        .map(|r| r["log_offset"].as_u64().unwrap())
        .collect();
    assert!(!dropped.is_empty());
    assert!(dropped.iter().all(|&d| d > victim));
    assert!(acks[451..].iter().all(|a| dropped.contains(&id_of(a))));
    assert!(plan
        .stdout
        .iter()
        .any(|l| l["change"]["zero_after"] == json!(file.display().to_string())));
    let s = summary(&run_ok(dir.path(), &["recover"], None)).clone();
    assert_eq!(s["as_planned"], json!(true), "{s}");
    assert_eq!(s["log_end_offset"], json!(victim));
    assert_eq!(s["records_dropped"], json!(dropped.len()));
    run_ok(dir.path(), &["verify"], None);
    // Level-1 messages put before the cut but delivered after it lost their delivery record:
    // they are delivered again by the consume runs, after their (past) due time.
    assert_eq!(
        seen(&all_bodies(dir.path(), "after-cut")),
        expected_bodies(&acks, victim)
    );
}

#[test]
fn dump_filters() {
    let dir = tempfile::tempdir().unwrap();
    let acks = populated(dir.path());
    let dump = |args: &[&str]| -> Vec<Value> {
        let mut full = vec!["dump"];
        full.extend_from_slice(args);
        run_ok(dir.path(), &full, None).stdout
    };
    assert_eq!(dump(&[]).len(), 600);
    let audit = dump(&["--topic", "audit"]);
    assert_eq!(audit.len(), 100);
    assert!(audit.iter().all(|r| r["topic"] == json!("audit")));
    let queue1 = dump(&["--topic", "orders", "--queue", "1"]);
    assert!(!queue1.is_empty() && queue1.iter().all(|r| r["queue"] == json!(1)));
    let pending = dump(&["--state", "pending"]);
    assert_eq!(pending.len(), 100);
    assert!(pending
        .iter()
        .all(|r| r["body"].as_str().unwrap().starts_with("later-")));
    let delivered = dump(&["--state", "delivered"]);
    assert_eq!(delivered.len(), 100);
    assert!(delivered
        .iter()
        .all(|r| r["delivered_ms"].as_u64().unwrap() >= r["due_ms"].as_u64().unwrap()));
    assert_eq!(dump(&["--state", "immediate"]).len(), 400);
    assert_eq!(dump(&["--state", "cancelled"]).len(), 0);
    assert_eq!(
        dump(&["--state", "pending", "--state", "delivered"]).len(),
        200
    );
    let one = dump(&["--id", acks[7]["id"].as_str().unwrap()]);
    assert_eq!(one.len(), 1);
    assert_eq!(one[0]["body"], json!("order-7"));
    assert_eq!(one[0]["properties"], json!({"n": "7"}));
    assert_eq!(one[0]["key"], json!("k7"));
    let b64 = dump(&["--id", acks[7]["id"].as_str().unwrap(), "--body", "base64"]);
    assert_eq!(b64[0]["body"], json!("b3JkZXItNw=="));
    assert_eq!(b64[0]["body_encoding"], json!("base64"));
    let (from, to) = (id_of(&acks[10]), id_of(&acks[20]));
    let range = dump(&[
        "--from-offset",
        &from.to_string(),
        "--to-offset",
        &to.to_string(),
    ]);
    assert_eq!(range.len(), 10);
    let all = dump(&[]);
    let times: Vec<u64> = all
        .iter()
        .map(|r| r["store_ms"].as_u64().unwrap())
        .collect();
    let mid = times[300];
    let since = dump(&["--since-ms", &mid.to_string()]);
    assert_eq!(since.len(), times.iter().filter(|&&t| t >= mid).count());
    let until = dump(&["--until-ms", &mid.to_string()]);
    assert_eq!(since.len() + until.len(), 600);
    let due = dump(&["--time", "due", "--since-ms", "1"]);
    assert_eq!(due.len(), 200, "only delayed messages have a due time");
    let with_deliveries = dump(&["--deliveries", "--topic", "orders"]);
    let deliveries: Vec<&Value> = with_deliveries
        .iter()
        .filter(|r| r["kind"] == json!("delivery"))
        .collect();
    assert_eq!(deliveries.len(), 100);
    assert!(deliveries.iter().all(|d| d["origin_id"].is_string()));
    let bad = run(dir.path(), &["dump", "--state", "maybe"], None);
    assert_eq!(bad.code, Some(2));
}

#[test]
fn replay_twice_posts_no_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    populated(dir.path());
    let delivered = run_ok(dir.path(), &["dump", "--state", "delivered"], None).stdout;
    let times: Vec<u64> = delivered
        .iter()
        .map(|r| r["delivered_ms"].as_u64().unwrap())
        .collect();
    let (since, until) = (
        *times.iter().min().unwrap(),
        times.iter().max().unwrap() + 1,
    );
    let args = [
        "replay",
        "--topic",
        "orders",
        "--delivered-only",
        "--since-ms",
        &since.to_string(),
        "--until-ms",
        &until.to_string(),
        "--to-topic",
        "orders-replayed",
    ];
    let plan = run_ok(dir.path(), &[&args[..], &["--dry-run"]].concat(), None);
    assert_eq!(summary(&plan)["would_post"], json!(100));
    let export = run_ok(dir.path(), &[&args[..], &["--export"]].concat(), None);
    let exported: Vec<&Value> = export
        .stdout
        .iter()
        .filter(|l| l.get("body").is_some())
        .collect();
    assert_eq!(exported.len(), 100);
    assert!(exported
        .iter()
        .all(|e| e["properties"]["delaystore.replay_key"].is_string()));
    let first = run_ok(dir.path(), &args, None);
    assert_eq!(summary(&first)["posted"], json!(100), "{first:?}");
    let second = run_ok(dir.path(), &args, None);
    assert_eq!(summary(&second)["posted"], json!(0), "{second:?}");
    assert_eq!(summary(&second)["already_replayed"], json!(100));
    let replayed = run_ok(
        dir.path(),
        &[
            "consume",
            "--topic",
            "orders-replayed",
            "--group",
            "r",
            "--idle-exit-ms",
            "300",
        ],
        None,
    )
    .stdout;
    assert_eq!(replayed.len(), 100);
    let bodies: BTreeSet<&str> = replayed
        .iter()
        .map(|m| m["body"].as_str().unwrap())
        .collect();
    assert_eq!(bodies.len(), 100);
    assert!(bodies.iter().all(|b| b.starts_with("soon-")));
    // The export is `put`'s input format: another store takes it as it is.
    let other = tempfile::tempdir().unwrap();
    let lines: Vec<String> = exported.iter().map(|e| e.to_string()).collect();
    let put = run_ok(other.path(), &["put"], Some(&(lines.join("\n") + "\n")));
    assert_eq!(put.stdout.len(), 100);
}

#[test]
fn inspect_and_stats_report_levels_segments_and_lag() {
    let dir = tempfile::tempdir().unwrap();
    populated(dir.path());
    let view = summary(&run_ok(dir.path(), &["inspect"], None)).clone();
    assert_eq!(view["pending_delayed"], json!(100));
    let levels = view["pending_per_level"].as_array().unwrap();
    assert_eq!(levels.len(), 2);
    assert_eq!(levels[0]["pending"], json!(0));
    assert_eq!(levels[1]["pending"], json!(100));
    assert_eq!(levels[1]["delay_ms"], json!(3_600_000));
    assert!(view["next_due_ms"].as_u64().unwrap() <= view["horizon_ms"].as_u64().unwrap());
    let segments = view["segments"].as_array().unwrap();
    assert!(segments.len() > 1);
    assert_eq!(
        segments
            .iter()
            .filter(|s| s["data_end_offset"].is_u64())
            .count(),
        1,
        "the log ends in one segment: {segments:?}"
    );
    let lag = view["consumer_lag"].as_array().unwrap();
    assert_eq!(lag.len(), 2);
    assert!(lag.iter().all(|c| c["lag"] == json!(0)));
    assert!(view["disk_bytes"]["total"].as_u64().unwrap() > 0);
    let stats = summary(&run_ok(dir.path(), &["stats"], None)).clone();
    assert_eq!(stats["horizon_ms"], view["horizon_ms"]);
    assert!(stats["segment_files"].as_array().unwrap().len() > 1);
    assert!(stats["disk_bytes"]["total"].as_u64().unwrap() > 0);
}

/// Start of every manual clock (a multiple of 2048 ms, so granule boundaries are known).
const T0: u64 = 1_700_000_000_000;
const HOUR_MS: u64 = 3_600_000;

/// Runs verify and checks it exits 0 with no error (warnings allowed); returns its summary.
fn verify_clean(dir: &Path) -> Value {
    let out = run(dir, &["verify"], None);
    let errors: Vec<&Value> = problems(&out)
        .into_iter()
        .filter(|p| p["severity"] == json!("error"))
        .collect();
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(out.code, Some(0), "{out:?}");
    summary(&out).clone()
}

#[test]
fn dump_selects_a_cancelled_message_by_state() {
    let dir = tempfile::tempdir().unwrap();
    run_ok(
        dir.path(),
        &["init", "--queues", "1", "--segment-bytes", "65536"],
        None,
    );
    let lines = [
        json!({"topic": "jobs", "body": "now"}),
        json!({"topic": "jobs", "body": "in-an-hour", "delay_ms": HOUR_MS}),
        json!({"topic": "jobs", "body": "cancel-me", "delay_ms": HOUR_MS}),
        json!({"topic": "jobs", "body": "tomorrow", "delay_ms": 24 * HOUR_MS}),
    ]
    .map(|l| l.to_string())
    .join("\n");
    let acks = run_ok(dir.path(), &["put"], Some(&(lines + "\n"))).stdout;
    let victim = acks[2]["id"].as_str().unwrap().to_owned();
    let cancelled = run_ok(dir.path(), &["cancel", &victim], None).stdout;
    assert_eq!(cancelled[0]["outcome"], json!("cancelled"));
    let dump = |args: &[&str]| -> Vec<Value> {
        let mut full = vec!["dump"];
        full.extend_from_slice(args);
        run_ok(dir.path(), &full, None).stdout
    };

    let only = dump(&["--state", "cancelled"]);
    assert_eq!(only.len(), 1, "{only:?}");
    assert_eq!(only[0]["id"], json!(victim));
    assert_eq!(only[0]["body"], json!("cancel-me"));
    assert_eq!(only[0]["state"], json!("cancelled"));
    assert!(only[0]["cancel_id"].is_string() && only[0]["cancelled_ms"].is_u64());
    assert!(only[0]["delay_queue"]
        .as_str()
        .unwrap()
        .starts_with("__timer/"));
    // Arbitrary delays have a due time too.
    assert_eq!(
        only[0]["due_ms"].as_u64().unwrap(),
        only[0]["store_ms"].as_u64().unwrap() + HOUR_MS
    );
    let pending = dump(&["--state", "pending"]);
    let bodies: BTreeSet<&str> = pending
        .iter()
        .map(|r| r["body"].as_str().unwrap())
        .collect();
    assert_eq!(bodies, BTreeSet::from(["in-an-hour", "tomorrow"]));
    assert_eq!(dump(&["--state", "immediate"]).len(), 1);
    assert_eq!(dump(&["--time", "due", "--since-ms", "1"]).len(), 3);
    // The message's history: itself and the cancel record naming it.
    let history = dump(&["--id", &victim, "--control"]);
    let kinds: Vec<&str> = history
        .iter()
        .map(|r| r["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["message", "cancel"], "{history:?}");
    assert_eq!(history[1]["origin_id"], json!(victim));
    assert_eq!(history[1]["state"], json!("cancelled"));
    assert_eq!(history[1]["topic"], Value::Null);
    // Control records follow their message's topic.
    assert_eq!(
        dump(&["--topic", "jobs", "--control", "--state", "cancelled"]).len(),
        2
    );
    assert_eq!(dump(&["--topic", "other", "--control"]).len(), 0);

    let s = verify_clean(dir.path());
    assert_eq!(s["warnings"], json!(0));
    assert_eq!(s["cancels"], json!(1));
    assert_eq!(s["cancelled_messages"], json!(1));
    assert_eq!(s["pending_delayed"], json!(2));
    assert_eq!(s["decision_slots"], json!(1));
}

/// Puts messages with delays spread over milliseconds to days, cancels some, and moves a
/// manual clock so that some were delivered, some hopped down the wheel and wait in a lower
/// tier, and some cancelled ones fell due and were discarded.
#[test]
fn verify_is_clean_with_timer_messages_in_flight_and_cancels() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let options = Options {
        clock: Arc::new(clock.clone()),
        ..common::small_options()
    };
    let store = common::open(dir.path(), options.clone());
    let mut ids = Vec::new();
    // Delay of each message put with an arbitrary delay below 5 s, by sequence number.
    let short_delay_ms = |seq: u64| 1 + seq * 17 % 5_000;
    for seq in 0..300u64 {
        let message = Message::new("jobs", format!("job {seq}")).with_queue((seq % 2) as u32);
        let message = match seq % 5 {
            0 => message,
            1 => message.with_delay_ms(short_delay_ms(seq)),
            2 => message.with_delay_ms(HOUR_MS + seq),
            3 => message.with_deliver_at_ms(T0 + 10 * 24 * HOUR_MS + seq),
            // Level 1 is 1 s.
            _ => message.with_delay_level(1),
        };
        ids.push(store.put(&message).unwrap().id);
    }
    // Cancel short ones (discarded when they fall due) and long ones (still pending).
    let is_cancelled = |seq: u64| !seq.is_multiple_of(5) && seq % 25 < 5;
    let cancelled: Vec<MessageId> = (0..300u64)
        .filter(|seq| is_cancelled(*seq))
        .map(|seq| ids[seq as usize])
        .collect();
    for id in &cancelled {
        assert_eq!(
            store.cancel(*id).unwrap(),
            delaystore::CancelOutcome::Cancelled
        );
    }
    // At T0 + 2,500 ms, the messages due by then are delivered, and those due in
    // [T0 + 2,048, T0 + 3,072) left tier 2 (granule 1,024 ms) and wait in tiers 0 and 1.
    let now_ms = 2_500;
    let visible = (0..300u64)
        .filter(|seq| match seq % 5 {
            0 => true,
            1 => short_delay_ms(*seq) <= now_ms && !is_cancelled(*seq),
            4 => !is_cancelled(*seq),
            _ => false,
        })
        .count();
    let in_tier_2 = (0..300u64)
        .filter(|seq| seq % 5 == 1 && short_delay_ms(*seq) >= 3_072)
        .count() as u64;
    let in_flight = (0..300u64)
        .filter(|seq| {
            let delay_ms = short_delay_ms(*seq);
            seq % 5 == 1 && delay_ms > now_ms && delay_ms < 3_072 && !is_cancelled(*seq)
        })
        .count();
    assert!(in_flight > 0);
    clock.set_ms(T0 + now_ms);
    let mut tail = Tail::new(&store, "jobs");
    assert_eq!(tail.wait_for(&store, visible), visible);
    let tier_2 = eventually(|| store.stats().pending_per_tier[2], &in_tier_2);
    assert_eq!(tier_2, in_tier_2, "{:?}", store.stats());
    tail.settle(&store);
    assert_eq!(tail.got.len(), visible);
    assert!(!tail.got.iter().any(|m| cancelled.contains(&m.id)));
    let stats = store.stats();
    store.close().unwrap();

    let s = verify_clean(dir.path());
    assert_eq!(s["warnings"], json!(0), "{s}");
    assert!(s["hops"].as_u64().unwrap() > 0, "{s}");
    assert!(s["discards"].as_u64().unwrap() > 0, "{s}");
    assert_eq!(s["cancels"], json!(cancelled.len()));
    assert_eq!(s["cancelled_messages"], json!(cancelled.len()));
    let pending: u64 = stats.pending_per_level.iter().map(|(_, c)| c).sum::<u64>()
        + stats.pending_per_tier.iter().sum::<u64>();
    // The store counts queue entries not yet consumed; cancelled ones still wait for theirs.
    let cancelled_pending =
        s["cancelled_messages"].as_u64().unwrap() - s["discards"].as_u64().unwrap();
    assert_eq!(
        s["pending_delayed"].as_u64().unwrap() + cancelled_pending,
        pending
    );
    let view = summary(&run_ok(dir.path(), &["inspect"], None)).clone();
    assert_eq!(view["pending_delayed"].as_u64(), Some(pending));
    let tiers = view["pending_per_tier"].as_array().unwrap();
    assert!(tiers
        .iter()
        .any(|t| t["tier"] == json!(0) || t["tier"] == json!(1)));
    assert!(view["horizon_ms"].as_u64().unwrap() >= T0 + 10 * 24 * HOUR_MS);

    // The same store after a crash in the middle of the next round, then after recovery.
    let store = common::open(dir.path(), options.clone());
    clock.set_ms(T0 + 4_000);
    let mut tail = Tail::new(&store, "jobs");
    tail.settle(&store);
    store.simulate_crash();
    verify_clean(dir.path());
    run_ok(dir.path(), &["recover"], None);
    let s = verify_clean(dir.path());
    assert_eq!(s["warnings"], json!(0), "{s}");
}

/// Retention deleted the oldest segments (and queue files that pointed only into them): the
/// log and queues no longer start at 0, entries and slots name deleted records. Not problems.
#[test]
fn verify_is_clean_after_retention_deleted_segments() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let options = Options {
        clock: Arc::new(clock.clone()),
        retention_ms: Some(HOUR_MS),
        ..common::small_options()
    };
    let fill = |store: &Store, count: usize| {
        for seq in 0..count {
            let body = vec![b'a' + (seq % 26) as u8; 1000];
            store
                .put(&Message::new("plain", body).with_queue(0))
                .unwrap();
        }
    };
    let store = common::open(dir.path(), options.clone());
    fill(&store, 50);
    let soon = store
        .put(&Message::new("later", "soon").with_delay_ms(2_000))
        .unwrap();
    fill(&store, 100);
    let pending = store
        .put(&Message::new("later", "close order 7").with_delay_ms(5 * 24 * HOUR_MS))
        .unwrap();
    let dropped = store
        .put(&Message::new("later", "never").with_delay_ms(3 * 24 * HOUR_MS))
        .unwrap();
    store.cancel(dropped.id).unwrap();
    clock.set_ms(T0 + 2_000);
    let mut tail = Tail::new(&store, "later");
    assert_eq!(tail.wait_for(&store, 1), 1);
    fill(&store, 200);
    clock.set_ms(T0 + 2 * HOUR_MS);
    fill(&store, 100);
    let start = eventually(|| store.stats().log_start_offset > soon.id.0, &true);
    assert!(start, "{:?}", store.stats());
    store.close().unwrap();
    let s = verify_clean(dir.path());
    assert!(s["log_start_offset"].as_u64().unwrap() > 0, "{s}");
    assert!(
        s["log_start_offset"].as_u64().unwrap() <= pending.id.0,
        "{s}"
    );
    assert_eq!(s["warnings"], json!(0), "{s}");

    // The pending and the cancelled message fall due (delivered, discarded); their segment
    // goes too.
    let store = common::open(dir.path(), options.clone());
    clock.set_ms(T0 + 5 * 24 * HOUR_MS);
    let mut tail = Tail::new(&store, "later");
    let delivered = eventually(
        || {
            tail.poll(&store);
            tail.find(pending.id).is_some()
        },
        &true,
    );
    assert!(delivered);
    let settled = eventually(|| store.stats().pending_per_tier.iter().sum::<u64>(), &0);
    assert_eq!(settled, 0, "the cancelled message is discarded when due");
    fill(&store, 100);
    let start = eventually(|| store.stats().log_start_offset > pending.id.0, &true);
    assert!(start, "{:?}", store.stats());
    store.close().unwrap();
    let s = verify_clean(dir.path());
    assert_eq!(s["warnings"], json!(0), "{s}");
    let plain_files = common::queue_files(dir.path(), "plain", 0);
    assert!(
        plain_files[0].0 > 0,
        "queue files retained: {plain_files:?}"
    );
    let view = summary(&run_ok(dir.path(), &["inspect"], None)).clone();
    assert_eq!(view["log_start_offset"], s["log_start_offset"]);
    assert_eq!(view["pending_delayed"], json!(0));
}

/// A decision slot lost below the checkpoint is an error that names the file and offset; a
/// slot no record confirms (it outlived its record) is a warning; recovery from the whole log
/// (checkpoint moved aside, as the runbook says) writes the lost slot again.
#[test]
fn verify_checks_decision_slots() {
    let dir = tempfile::tempdir().unwrap();
    run_ok(
        dir.path(),
        &["init", "--queues", "1", "--segment-bytes", "65536"],
        None,
    );
    let lines = [
        json!({"topic": "jobs", "body": "keep", "delay_ms": HOUR_MS}),
        json!({"topic": "jobs", "body": "cancel-me", "delay_ms": HOUR_MS}),
    ]
    .map(|l| l.to_string())
    .join("\n");
    let acks = run_ok(dir.path(), &["put"], Some(&(lines + "\n"))).stdout;
    let victim = acks[1]["id"].as_str().unwrap().to_owned();
    run_ok(dir.path(), &["cancel", &victim], None);
    let record = run_ok(dir.path(), &["dump", "--id", &victim], None).stdout[0].clone();
    let slot: u16 = record["delay_queue"].as_str().unwrap()["__timer/".len()..]
        .parse()
        .unwrap();
    let index = record["queue_offset"].as_u64().unwrap();
    let file = dir
        .path()
        .join("decisions")
        .join((256 + slot).to_string())
        .join(format!("{:020}", 0));
    assert!(file.exists(), "{file:?}");

    // A slot pointing past the log: the store ignores it.
    let stale: u64 = 1 << 62 | 9_999_999;
    write_at(&file, 1000 * 8, &stale.to_le_bytes());
    let out = run(dir.path(), &["verify"], None);
    assert_eq!(out.code, Some(0), "{out:?}");
    let found = problems(&out);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0]["problem"], json!("decision_slot_stale"));
    assert_eq!(found[0]["severity"], json!("warning"));
    assert_eq!(found[0]["offset"], json!(8000));

    // The cancelled message's slot lost: a released entry would be delivered.
    write_at(&file, index * 8, &[0; 8]);
    let out = run(dir.path(), &["verify"], None);
    assert_eq!(out.code, Some(1), "{out:?}");
    let lost: Vec<&Value> = problems(&out)
        .into_iter()
        .filter(|p| p["problem"] == json!("decision_slot_missing"))
        .collect();
    assert_eq!(lost.len(), 1, "{out:?}");
    assert_eq!(lost[0]["severity"], json!("error"));
    assert_eq!(lost[0]["file"], json!(file.display().to_string()));
    assert_eq!(lost[0]["offset"], json!(index * 8));

    std::fs::rename(
        dir.path().join("checkpoint"),
        dir.path().join("checkpoint.aside"),
    )
    .unwrap();
    run_ok(dir.path(), &["recover"], None);
    let s = verify_clean(dir.path());
    assert_eq!(s["warnings"], json!(1), "only the stale slot is left: {s}");
    let history = run_ok(dir.path(), &["dump", "--id", &victim], None).stdout;
    assert_eq!(history[0]["state"], json!("cancelled"));
}
