#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The `delaystore` command's contract, driving the built binary: JSON lines on stdout, one
//! JSON error object on stderr with a non-zero exit code, and delayed delivery on the real
//! clock across processes, including processes killed with SIGKILL.

mod support;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use support::Rng;

const BIN: &str = env!("CARGO_BIN_EXE_delaystore");
const LEVELS: &str = "200ms 1s";
const LEVEL_MS: [u64; 2] = [200, 1_000];
const SEGMENT_BYTES: u64 = 1_048_576;
const ACK_FIELDS: [&str; 4] = ["due_ms", "id", "queue", "topic"];
const MESSAGE_FIELDS: [&str; 9] = [
    "body",
    "born_ms",
    "delivered_ms",
    "due_ms",
    "id",
    "key",
    "offset",
    "queue",
    "topic",
];

/// Wall-clock ms, as the store's system clock reads it.
fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// What one run of the command printed.
#[derive(Debug)]
struct Run {
    code: Option<i32>,
    stdout: Vec<Value>,
    stderr: String,
}

impl Run {
    /// The last line of stderr, parsed as the JSON error object.
    fn error(&self) -> Value {
        let line = self
            .stderr
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or_else(|| panic!("nothing on stderr: {self:?}"));
        let value: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("stderr line {line:?} is not JSON: {e}"));
        assert!(value["error"].is_string(), "no error message: {value}");
        value
    }
}

/// Parses every stdout line as one JSON value.
fn json_lines(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .map(|line| {
            serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("stdout line {line:?} is not JSON: {e}"))
        })
        .collect()
}

/// Runs `delaystore --dir <dir> <args>` with `input` on stdin, to completion.
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
    let writer = match (input, child.stdin.take()) {
        (Some(input), Some(mut stdin)) => {
            let input = input.to_owned();
            // A command that stops early closes its stdin: the rest is not written.
            Some(thread::spawn(move || {
                drop(stdin.write_all(input.as_bytes()))
            }))
        }
        _ => None,
    };
    let output = child.wait_with_output().expect("wait for delaystore");
    if let Some(writer) = writer {
        writer.join().unwrap();
    }
    let stdout = String::from_utf8(output.stdout).expect("stdout is UTF-8");
    Run {
        code: output.status.code(),
        stdout: json_lines(&stdout),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Runs a command that must succeed.
fn run_ok(dir: &Path, args: &[&str], input: Option<&str>) -> Run {
    let out = run(dir, args, input);
    assert_eq!(out.code, Some(0), "delaystore {args:?} failed: {out:?}");
    out
}

/// `init` with the given levels, 1 MiB segments and 2 queues per topic.
fn init(dir: &Path, levels: &str) {
    let out = run_ok(
        dir,
        &[
            "init",
            "--levels",
            levels,
            "--segment-bytes",
            &SEGMENT_BYTES.to_string(),
            "--queues",
            "2",
        ],
        None,
    );
    assert_eq!(out.stdout.len(), 1, "init prints one line: {out:?}");
    let line = &out.stdout[0];
    assert_eq!(line["created"], json!(true));
    assert_eq!(line["dir"], json!(dir.display().to_string()));
}

fn consume(dir: &Path, topic: &str, group: &str, idle_ms: u64) -> Vec<Value> {
    let out = run_ok(
        dir,
        &[
            "consume",
            "--topic",
            topic,
            "--group",
            group,
            "--idle-exit-ms",
            &idle_ms.to_string(),
        ],
        None,
    );
    for line in &out.stdout {
        let mut fields: Vec<&str> = line
            .as_object()
            .unwrap_or_else(|| panic!("not an object: {line}"))
            .keys()
            .map(String::as_str)
            .collect();
        fields.sort_unstable();
        assert_eq!(fields, MESSAGE_FIELDS, "consume line fields: {line}");
        assert_eq!(line["topic"], json!(topic));
    }
    out.stdout
}

/// Checks an acknowledgement line and returns its id.
fn check_ack(ack: &Value, topic: &str) -> String {
    let mut fields: Vec<&str> = ack
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {ack}"))
        .keys()
        .map(String::as_str)
        .collect();
    fields.sort_unstable();
    assert_eq!(fields, ACK_FIELDS, "ack fields: {ack}");
    assert_eq!(ack["topic"], json!(topic), "{ack}");
    let queue = ack["queue"].as_u64().expect("queue is a number");
    assert!(queue < 2, "queue {queue} of a 2-queue store: {ack}");
    let id = ack["id"].as_str().expect("id is a string").to_owned();
    assert!(
        id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "id {id:?} is not 16 hex digits"
    );
    id
}

fn str_of(value: &Value) -> &str {
    value
        .as_str()
        .unwrap_or_else(|| panic!("not a string: {value}"))
}

#[test]
fn init_creates_store_and_refuses_twice() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("s");
    init(&store, LEVELS);
    let again = run(&store, &["init", "--levels", "1s"], None);
    assert_eq!(again.code, Some(2), "second init: {again:?}");
    assert!(again.stdout.is_empty());
    again.error();
    let bad = run(&dir.path().join("bad"), &["init", "--levels", "5x"], None);
    assert_ne!(bad.code, Some(0), "init with a malformed table: {bad:?}");
    bad.error();
    let stats = run_ok(&store, &["stats"], None);
    assert_eq!(stats.stdout[0]["levels_ms"], json!(LEVEL_MS));
}

/// `init --segment-bytes` is the store's segment size: later commands must not create
/// segments of another size (the default is 1 GiB, zero-filled on creation).
#[test]
fn later_commands_keep_init_segment_size() {
    let dir = tempfile::tempdir().unwrap();
    init(dir.path(), LEVELS);
    run_ok(dir.path(), &["stats"], None);
    let log = dir.path().join("commitlog");
    let sizes: BTreeMap<String, u64> = std::fs::read_dir(&log)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                e.metadata().unwrap().len(),
            )
        })
        .collect();
    assert!(
        sizes.values().all(|&len| len == SEGMENT_BYTES),
        "after `init --segment-bytes {SEGMENT_BYTES}` and `stats`, segment sizes: {sizes:?}"
    );
}

#[test]
fn put_acks_each_line_and_consume_prints_each_once() {
    let dir = tempfile::tempdir().unwrap();
    init(dir.path(), LEVELS);
    let lines = [
        json!({"topic": "orders", "body": "now-0", "key": "k0"}),
        json!({"topic": "orders", "body": "soon-1", "key": "k1", "delay_level": 1,
               "properties": {"p": "v"}}),
        json!({"topic": "orders", "body": "later-2", "delay_level": 2, "queue": 1}),
        json!({"topic": "orders", "body": "now-3", "queue": 0, "delay_level": 0}),
        json!({"topic": "orders", "body": "soon-4", "delay_level": 1}),
        json!({"topic": "other", "body": "elsewhere", "delay_level": 1}),
    ];
    let mut input: Vec<String> = lines.iter().map(Value::to_string).collect();
    input.insert(3, "   ".into()); // blank lines are skipped
    let input = input.join("\n") + "\n";
    let before = wall_ms();
    let out = run_ok(dir.path(), &["put"], Some(&input));
    let after = wall_ms();
    assert_eq!(out.stdout.len(), lines.len(), "one ack per line: {out:?}");
    let mut acked: BTreeMap<String, (&Value, &Value)> = BTreeMap::new();
    for (ack, line) in out.stdout.iter().zip(&lines) {
        let id = check_ack(ack, str_of(&line["topic"]));
        if let Some(queue) = line.get("queue") {
            assert_eq!(&ack["queue"], queue, "{ack}");
        }
        match line["delay_level"].as_u64().unwrap_or(0) {
            0 => assert!(ack["due_ms"].is_null(), "{ack}"),
            level => {
                let delay = LEVEL_MS[level as usize - 1];
                let due = ack["due_ms"].as_u64().expect("due_ms");
                assert!(
                    (before + delay..=after + delay).contains(&due),
                    "{ack}: due_ms not store time + {delay}"
                );
            }
        }
        assert!(acked.insert(id, (ack, line)).is_none(), "id acked twice");
    }

    let got = consume(dir.path(), "orders", "g1", 2_500);
    assert_eq!(got.len(), 5, "consume printed {got:#?}");
    let mut offsets: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    for message in &got {
        let id = str_of(&message["id"]);
        let (ack, line) = acked
            .get(id)
            .unwrap_or_else(|| panic!("{message}: never acked"));
        assert_eq!(message["queue"], ack["queue"], "{message}");
        assert_eq!(message["body"], line["body"], "{message}");
        assert_eq!(
            message["key"],
            line.get("key").cloned().unwrap_or(Value::Null)
        );
        assert_eq!(message["due_ms"], ack["due_ms"], "{message}");
        let born = message["born_ms"].as_u64().expect("born_ms");
        assert!((before..=after).contains(&born), "{message}: born_ms");
        match ack["due_ms"].as_u64() {
            None => assert!(message["delivered_ms"].is_null(), "{message}"),
            Some(due) => {
                let delivered = message["delivered_ms"].as_u64().expect("delivered_ms");
                assert!(delivered >= due, "{message}: delivered before due");
            }
        }
        offsets
            .entry(message["queue"].as_u64().unwrap())
            .or_default()
            .push(message["offset"].as_u64().unwrap());
    }
    let ids: BTreeSet<&str> = got.iter().map(|m| str_of(&m["id"])).collect();
    assert_eq!(ids.len(), got.len(), "a message printed twice");
    for (queue, offsets) in offsets {
        let want: Vec<u64> = (0..offsets.len() as u64).collect();
        assert_eq!(offsets, want, "queue {queue} offsets");
    }

    let again = consume(dir.path(), "orders", "g1", 300);
    assert!(again.is_empty(), "second consume of g1 printed {again:#?}");
    let other_group = consume(dir.path(), "orders", "g2", 300);
    let other_ids: BTreeSet<&str> = other_group.iter().map(|m| str_of(&m["id"])).collect();
    assert_eq!(other_ids, ids, "another group reads everything again");
}

#[test]
fn bad_line_stops_put_and_keeps_lines_before() {
    let dir = tempfile::tempdir().unwrap();
    init(dir.path(), LEVELS);
    let ok = |body: &str, level: u64| {
        json!({"topic": "orders", "body": body, "delay_level": level}).to_string()
    };
    // (input lines, number of the bad line)
    let cases = [
        (
            vec![
                ok("a-1", 0),
                ok("a-2", 1),
                r#"{"topic": "orders", "body": "#.to_string(),
                ok("a-after", 0),
            ],
            3,
        ),
        (
            vec![
                ok("b-1", 2),
                json!({"topic": "orders", "body": "b-bad", "delay_level": 3}).to_string(),
                ok("b-after", 0),
            ],
            2,
        ),
        (
            vec![
                ok("c-1", 1),
                json!({"topic": "orders", "body": "c-bad", "queue": 2}).to_string(),
                ok("c-after", 1),
            ],
            2,
        ),
        (
            vec![
                json!({"topic": "orders", "body": "d-bad", "colour": "red"}).to_string(),
                ok("d-after", 0),
            ],
            1,
        ),
    ];
    let mut acked: BTreeMap<String, String> = BTreeMap::new();
    for (lines, bad) in &cases {
        let input = lines.join("\n") + "\n";
        let out = run(dir.path(), &["put"], Some(&input));
        assert_eq!(out.code, Some(1), "bad line {bad}: {out:?}");
        assert_eq!(out.stdout.len(), bad - 1, "acks before line {bad}: {out:?}");
        let error = out.error();
        assert_eq!(error["line"], json!(bad), "{error}");
        for (ack, line) in out.stdout.iter().zip(lines) {
            let id = check_ack(ack, "orders");
            let body: Value = serde_json::from_str(line).unwrap();
            acked.insert(id, str_of(&body["body"]).to_owned());
        }
    }
    let got = consume(dir.path(), "orders", "g", 2_500);
    let printed: BTreeMap<String, String> = got
        .iter()
        .map(|m| (str_of(&m["id"]).to_owned(), str_of(&m["body"]).to_owned()))
        .collect();
    assert_eq!(printed.len(), got.len(), "a message printed twice");
    assert_eq!(
        printed, acked,
        "consumed exactly the lines before each bad one"
    );
}

#[test]
fn stats_prints_one_json_object() {
    let dir = tempfile::tempdir().unwrap();
    // Long delays: nothing falls due while the test runs.
    init(dir.path(), "1h 2h");
    let input = [(0, 3), (1, 2), (2, 1)]
        .iter()
        .flat_map(|&(level, n)| {
            (0..n).map(move |i| {
                json!({"topic": "s", "body": format!("{level}-{i}"), "delay_level": level})
                    .to_string()
            })
        })
        .collect::<Vec<_>>()
        .join("\n");
    let acks = run_ok(dir.path(), &["put"], Some(&input)).stdout;
    assert_eq!(acks.len(), 6);
    let first_due = acks.iter().filter_map(|a| a["due_ms"].as_u64()).min();

    let out = run_ok(dir.path(), &["stats"], None);
    assert_eq!(out.stdout.len(), 1, "stats prints one line: {out:?}");
    let stats = &out.stdout[0];
    assert!(stats.is_object(), "{stats}");
    assert_eq!(stats["messages"], json!(3), "{stats}");
    assert_eq!(stats["pending_delayed"], json!(3), "{stats}");
    assert_eq!(
        stats["pending_per_level"],
        json!({"1": 2, "2": 1}),
        "{stats}"
    );
    assert_eq!(stats["next_due_ms"], json!(first_due), "{stats}");
    assert_eq!(stats["levels_ms"], json!([3_600_000, 7_200_000]), "{stats}");
    assert_eq!(stats["consumer_lag"], json!([]), "{stats}");
    assert_eq!(stats["log_start_offset"], json!(0), "{stats}");
    assert!(stats["log_end_offset"].as_u64().unwrap() > 0, "{stats}");
    assert!(stats["segments"].as_u64().unwrap() >= 1, "{stats}");
    assert!(
        stats["segment_bytes"].as_u64().unwrap() >= SEGMENT_BYTES,
        "{stats}"
    );

    assert_eq!(consume(dir.path(), "s", "g", 200).len(), 3);
    let stats = run_ok(dir.path(), &["stats"], None).stdout;
    assert_eq!(stats.len(), 1);
    let lag = stats[0]["consumer_lag"].as_array().expect("consumer_lag");
    let committed: u64 = lag
        .iter()
        .map(|c| {
            assert_eq!(c["group"], json!("g"), "{c}");
            assert_eq!(c["topic"], json!("s"), "{c}");
            assert_eq!(c["lag"], json!(0), "{c}");
            c["committed_offset"].as_u64().unwrap()
        })
        .sum();
    assert_eq!(committed, 3, "{}", stats[0]);
}

#[test]
fn put_count_prints_one_summary_line() {
    let dir = tempfile::tempdir().unwrap();
    init(dir.path(), LEVELS);
    let plain = run_ok(
        dir.path(),
        &[
            "put",
            "--count",
            "50",
            "--body-bytes",
            "16",
            "--producers",
            "2",
        ],
        None,
    );
    let delayed = run_ok(
        dir.path(),
        &["put", "--count", "20", "--delay-level", "1", "--sync"],
        None,
    );
    for (out, count, sync) in [(&plain, 50, false), (&delayed, 20, true)] {
        assert_eq!(out.stdout.len(), 1, "one summary line: {out:?}");
        let summary = &out.stdout[0];
        assert_eq!(summary["count"], json!(count), "{summary}");
        assert_eq!(summary["sync"], json!(sync), "{summary}");
        for field in ["body_bytes", "producers", "elapsed_ms", "msgs_per_s"] {
            assert!(summary[field].is_number(), "{field} in {summary}");
        }
    }
    assert_eq!(plain.stdout[0]["body_bytes"], json!(16));
    assert_eq!(plain.stdout[0]["producers"], json!(2));
    assert_eq!(delayed.stdout[0]["body_bytes"], json!(128));

    let got = consume(dir.path(), "load", "g", 2_500);
    let ids: BTreeSet<&str> = got.iter().map(|m| str_of(&m["id"])).collect();
    assert_eq!(
        ids.len(),
        70,
        "{} messages, {} distinct",
        got.len(),
        ids.len()
    );
    let (now, later): (Vec<&Value>, Vec<&Value>) = got.iter().partition(|m| m["due_ms"].is_null());
    assert_eq!(now.len(), 50);
    assert!(now.iter().all(|m| m["body"] == json!("x".repeat(16))));
    assert_eq!(later.len(), 20);
    for message in later {
        assert_eq!(message["body"], json!("x".repeat(128)));
        let due = message["due_ms"].as_u64().unwrap();
        assert!(
            message["delivered_ms"].as_u64().unwrap() >= due,
            "{message}"
        );
    }
}

/// One `put --sync` child fed from a thread, SIGKILLed at a moment of the test's choosing.
struct Feeder {
    child: std::process::Child,
    stop: mpsc::Sender<()>,
    writer: thread::JoinHandle<(usize, bool)>,
    reader: thread::JoinHandle<Vec<String>>,
    errors: thread::JoinHandle<String>,
}

impl Feeder {
    fn start(dir: &Path, lines: Vec<String>) -> Feeder {
        let mut child = Command::new(BIN)
            .arg("--dir")
            .arg(dir)
            .args(["put", "--sync"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn put");
        let mut stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut stderr = child.stderr.take().unwrap();
        let (stop, stopped) = mpsc::channel::<()>();
        // Returns how many lines were written whole, and whether a write failed (the line
        // after them may have been read in part... or whole, if only the error is late).
        let writer = thread::spawn(move || {
            let mut written = 0;
            for line in &lines {
                if stdin.write_all(line.as_bytes()).is_err() {
                    return (written, true);
                }
                written += 1;
            }
            // Keep stdin open until the kill, so the child never ends on its own.
            let _ = stopped.recv();
            (written, false)
        });
        let reader = thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut acks = Vec::new();
            loop {
                let mut line = String::new();
                match reader.read_line(&mut line) {
                    Ok(0) | Err(_) => return acks,
                    // A line cut by the kill is not an acknowledgement.
                    Ok(_) if line.ends_with('\n') => acks.push(line),
                    Ok(_) => return acks,
                }
            }
        });
        let errors = thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            text
        });
        Feeder {
            child,
            stop,
            writer,
            reader,
            errors,
        }
    }

    /// Kills the child; returns (lines possibly sent, acknowledgement lines).
    fn kill(mut self) -> (usize, Vec<String>) {
        self.child.kill().expect("kill");
        let status = self.child.wait().expect("wait");
        drop(self.stop);
        let (written, failed) = self.writer.join().unwrap();
        let acks = self.reader.join().unwrap();
        let errors = self.errors.join().unwrap();
        assert_eq!(
            status.signal(),
            Some(9),
            "the put process ended before the kill: {status:?}, stderr: {errors}"
        );
        (written + usize::from(failed), acks)
    }
}

#[test]
fn sigkill_during_delayed_puts_loses_and_duplicates_nothing() {
    const ROUNDS: u64 = 20;
    const LINES: u64 = 1_500;
    let dir = tempfile::tempdir().unwrap();
    init(dir.path(), LEVELS);
    let mut rng = Rng::new(0x0005_1691_111d);
    // body -> (level, acknowledged id and due time)
    let mut sent: HashMap<String, (u64, Option<(String, u64)>)> = HashMap::new();
    let mut acknowledged = 0usize;
    for round in 0..ROUNDS {
        let levels: Vec<u64> = (0..LINES).map(|_| rng.between(1, 2)).collect();
        let bodies: Vec<String> = (0..LINES).map(|i| format!("r{round}-m{i}")).collect();
        let lines: Vec<String> = bodies
            .iter()
            .zip(&levels)
            .enumerate()
            .map(|(i, (body, level))| {
                json!({"topic": "kill", "body": body, "key": format!("k{}", i % 7),
                       "delay_level": level})
                .to_string()
                    + "\n"
            })
            .collect();
        let feeder = Feeder::start(dir.path(), lines);
        thread::sleep(Duration::from_millis(rng.below(300)));
        let (maybe_sent, acks) = feeder.kill();
        assert!(acks.len() <= maybe_sent, "more acks than lines sent");
        for (body, level) in bodies.iter().zip(&levels).take(maybe_sent) {
            sent.insert(body.clone(), (*level, None));
        }
        for (i, line) in acks.iter().enumerate() {
            let ack: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("ack line {line:?} is not JSON: {e}"));
            let id = check_ack(&ack, "kill");
            let due = ack["due_ms"].as_u64().expect("a delayed ack has due_ms");
            sent.get_mut(&bodies[i]).unwrap().1 = Some((id, due));
        }
        acknowledged += acks.len();
    }
    assert!(acknowledged > 0, "no put was acknowledged before its kill");

    // Every due time has passed within 1 s of the last kill; the consumer's own store delivers
    // what is due, and stops after 2.5 s without a new message.
    let got = consume(dir.path(), "kill", "check", 2_500);
    let mut seen_bodies: HashMap<&str, usize> = HashMap::new();
    let mut seen_ids: HashMap<&str, usize> = HashMap::new();
    let (mut early, mut phantom, mut wrong_id) = (0, Vec::new(), Vec::new());
    for message in &got {
        let body = str_of(&message["body"]);
        let id = str_of(&message["id"]);
        *seen_bodies.entry(body).or_default() += 1;
        *seen_ids.entry(id).or_default() += 1;
        match sent.get(body) {
            None => phantom.push(message.clone()),
            Some((_, Some((acked_id, due)))) => {
                if acked_id != id || message["due_ms"] != json!(due) {
                    wrong_id.push(message.clone());
                }
            }
            Some((_, None)) => {}
        }
        match (message["due_ms"].as_u64(), message["delivered_ms"].as_u64()) {
            (Some(due), Some(delivered)) if delivered >= due => {}
            _ => early += 1,
        }
    }
    let duplicates = seen_bodies.values().filter(|&&n| n > 1).count()
        + seen_ids.values().filter(|&&n| n > 1).count();
    let lost: Vec<&String> = sent
        .iter()
        .filter(|(body, (_, ack))| ack.is_some() && !seen_bodies.contains_key(body.as_str()))
        .map(|(body, _)| body)
        .collect();
    println!(
        "rounds={ROUNDS} acknowledged={acknowledged} delivered={} duplicates={duplicates} \
         lost={} early={early}",
        got.len(),
        lost.len()
    );
    assert!(
        duplicates == 0 && lost.is_empty() && early == 0,
        "duplicates {duplicates}, lost {lost:?}, early {early}"
    );
    assert!(phantom.is_empty(), "never sent: {phantom:#?}");
    assert!(
        wrong_id.is_empty(),
        "id or due time differs from the ack: {wrong_id:#?}"
    );
}

#[test]
fn put_takes_arbitrary_delays_and_cancel_prints_one_outcome_each() {
    let dir = tempfile::tempdir().unwrap();
    init(dir.path(), "1s");
    let far = wall_ms() + 3_600_000;
    let input = format!(
        "{{\"topic\":\"orders\",\"body\":\"close 1\",\"delay_ms\":600000}}\n\
         {{\"topic\":\"orders\",\"body\":\"close 2\",\"deliver_at_ms\":{far}}}\n\
         {{\"topic\":\"orders\",\"body\":\"now\"}}\n"
    );
    let out = run_ok(dir.path(), &["put"], Some(&input));
    assert_eq!(out.stdout.len(), 3, "{out:?}");
    let ids: Vec<String> = out
        .stdout
        .iter()
        .map(|ack| check_ack(ack, "orders"))
        .collect();
    assert_eq!(out.stdout[1]["due_ms"], json!(far));
    let out = run_ok(
        dir.path(),
        &["cancel", &ids[0], &ids[1], &ids[2], "00000000000fffff"],
        None,
    );
    let outcomes: Vec<(&str, &str)> = out
        .stdout
        .iter()
        .map(|line| (str_of(&line["id"]), str_of(&line["outcome"])))
        .collect();
    assert_eq!(
        outcomes,
        [
            (ids[0].as_str(), "cancelled"),
            (ids[1].as_str(), "cancelled"),
            (ids[2].as_str(), "already_delivered"),
            ("00000000000fffff", "not_found"),
        ]
    );
    let bad = run(dir.path(), &["cancel", "not-an-id"], None);
    assert_eq!(bad.code, Some(1), "{bad:?}");
}
