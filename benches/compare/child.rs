//! Measurements that must not share a process with the others: the bench re-runs itself with
//! `--child SPEC` (JSON) and reads one JSON line from the child's stdout.
//!
//! - `fill`: open a fresh embedded peer, put `bytes` of 1 KiB delayed messages, print
//!   `{"filled": N}` and wait to be killed (the recovery workload's crash).
//! - `memory`: open a fresh embedded peer, read `RssAnon`, put `count` pending 128 B messages,
//!   let background work settle, read `RssAnon` again and print both (figures of one system
//!   only: no other peer's allocations in the process).

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use delaystore::SystemClock;
use serde_json::{json, Value};

use crate::peer::{self, Class, OpenCtx, PeerKind};
use crate::proc_mem::status_kib;
use crate::servers::Servers;

/// Puts per transaction while filling (one put each for delaystore).
pub const FILL_BATCH: u64 = 1_000;

/// Runs the child side of `spec`; returns the process exit code.
pub fn run(spec: &str) -> i32 {
    match run_spec(spec) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("child {spec}: {e}");
            1
        }
    }
}

fn say(value: Value) -> Result<(), String> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{value}")
        .and_then(|()| out.flush())
        .map_err(|e| format!("stdout: {e}"))
}

fn run_spec(spec: &str) -> Result<(), String> {
    let spec: Value = serde_json::from_str(spec).map_err(|e| format!("bad spec: {e}"))?;
    let kind = spec["peer"]
        .as_str()
        .and_then(PeerKind::from_name)
        .ok_or("spec without a known peer")?;
    let dir = PathBuf::from(spec["dir"].as_str().ok_or("spec without dir")?);
    let delay_ms = spec["delay_ms"].as_u64().ok_or("spec without delay_ms")?;
    let servers = Servers::none();
    let ctx = OpenCtx {
        dir: &dir,
        class: Class::Async,
        clock: Arc::new(SystemClock),
        delay_ms,
        segment_bytes: spec["segment_bytes"]
            .as_u64()
            .ok_or("spec without segment_bytes")?,
        servers: &servers,
        fresh: true,
    };
    let peer = peer::open(kind, &ctx)?;
    match spec["mode"].as_str() {
        Some("fill") => {
            let body = spec["body"].as_u64().ok_or("spec without body")? as usize;
            let count = spec["count"].as_u64().ok_or("spec without count")?;
            let payload = vec![0x42u8; body];
            let mut seq = 0;
            while seq < count {
                let n = FILL_BATCH.min(count - seq);
                peer.put_batch(seq, n, delay_ms, &payload)?;
                seq += n;
            }
            say(json!({"filled": count}))?;
            // Wait for the SIGKILL: no clean close, no final sync.
            loop {
                std::thread::sleep(Duration::from_secs(3600));
            }
        }
        Some("memory") => {
            let count = spec["count"].as_u64().ok_or("spec without count")?;
            let payload = vec![0x42u8; 128];
            std::thread::sleep(Duration::from_millis(300));
            let before = status_kib(None, "RssAnon").ok_or("no RssAnon in /proc/self/status")?;
            let mut seq = 0;
            while seq < count {
                let n = 10_000.min(count - seq);
                peer.put_batch(seq, n, delay_ms, &payload)?;
                seq += n;
            }
            // Let flushes, compactions and indexing settle before reading again.
            std::thread::sleep(Duration::from_millis(1_500));
            let after = status_kib(None, "RssAnon").ok_or("no RssAnon")?;
            let file = status_kib(None, "RssFile").unwrap_or(0);
            let pending = peer.pending()?;
            say(json!({
                "rss_anon_before_kib": before, "rss_anon_after_kib": after,
                "rss_file_kib": file, "pending": pending,
            }))?;
            peer.close()
        }
        other => Err(format!("unknown child mode {other:?}")),
    }
}

/// Starts a child running `spec`.
pub fn spawn(spec: &Value) -> Result<Child, String> {
    let exe = std::env::current_exe().map_err(|e| format!("current exe: {e}"))?;
    Command::new(exe)
        .arg("--child")
        .arg(spec.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("spawning the child: {e}"))
}

/// Reads the child's first JSON line.
pub fn read_line(child: &mut Child) -> Result<Value, String> {
    let stdout = child.stdout.take().ok_or("child without stdout")?;
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .map_err(|e| format!("reading the child: {e}"))?;
    if line.trim().is_empty() {
        let status = child.wait().map_err(|e| format!("waiting: {e}"))?;
        return Err(format!("the child printed nothing ({status})"));
    }
    serde_json::from_str(line.trim()).map_err(|e| format!("child said {line:?}: {e}"))
}

/// A spec for [`run`].
pub fn spec(mode: &str, kind: PeerKind, dir: &Path, delay_ms: u64, segment_bytes: u64) -> Value {
    json!({
        "mode": mode, "peer": kind.name(), "dir": dir.to_string_lossy(),
        "delay_ms": delay_ms, "segment_bytes": segment_bytes,
    })
}
