//! Facts about the machine a benchmark runs on, shared by the benches (each records them with
//! its results, because the machines are shared and noisy), and settling its disk between
//! workloads.

use std::path::Path;
use std::time::Duration;

use serde_json::json;

/// A file's content, trimmed, or why it could not be read.
pub fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|e| format!("unavailable: {e}"))
}

/// Device and file-system type of the mount holding `dir` (longest matching mount point).
pub fn mount_of(dir: &Path) -> (String, String) {
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    mounts
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (dev, point, fs) = (fields.next()?, fields.next()?, fields.next()?);
            dir.starts_with(point)
                .then(|| (point.len(), dev.to_owned(), fs.to_owned()))
        })
        .max_by_key(|(len, _, _)| *len)
        .map_or_else(
            || ("unknown".to_owned(), "unknown".to_owned()),
            |(_, dev, fs)| (dev, fs),
        )
}

/// The CPU model name from `/proc/cpuinfo`.
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".to_owned())
}

/// Total memory in KiB from `/proc/meminfo` (0 if unknown).
pub fn mem_total_kib() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
        })
        .unwrap_or(0)
}

/// The machine facts every bench records with its results: CPUs, kernel, memory, the device
/// and file system of `dir`, the load average when the run starts, and the source measured.
/// `git` is `BENCH_GIT_REV` when set (a run outside a checkout), else `git describe --always
/// --dirty`; `src_dirty` says whether `src/` had uncommitted changes (then the commit alone
/// does not identify the code measured).
pub fn machine_json(dir: &Path) -> serde_json::Value {
    let git_output = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    let git = std::env::var("BENCH_GIT_REV")
        .ok()
        .or_else(|| git_output(&["describe", "--always", "--dirty"]));
    let src_dirty = git_output(&["status", "--porcelain", "--", "src"]).map(|s| !s.is_empty());
    let (device, fs_type) = mount_of(dir);
    json!({
        "nproc": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "kernel": read_trimmed("/proc/version"),
        "cpu": cpu_model(),
        "mem_gib": (mem_total_kib() as f64 / 1048576.0 * 10.0).round() / 10.0,
        "bench_dir": dir.display().to_string(),
        "device": device,
        "fs_type": fs_type,
        "git": git,
        "src_dirty": src_dirty,
        "crate_dir": env!("CARGO_MANIFEST_DIR"),
        "loadavg_at_start": read_trimmed("/proc/loadavg"),
    })
}

/// Prints the machine facts of [`machine_json`] and where the stores are (stdout), and warns
/// when that is tmpfs (stderr).
pub fn print_machine(machine: &serde_json::Value, dir: &Path) {
    let text = |key: &str| machine[key].as_str().unwrap_or("?").to_owned();
    println!(
        "machine: {} cpus ({}), {} GiB; {}",
        machine["nproc"],
        text("cpu"),
        machine["mem_gib"],
        text("kernel")
    );
    println!(
        "stores in {} ({}, {}); load average {}",
        dir.display(),
        text("device"),
        text("fs_type"),
        text("loadavg_at_start")
    );
    if machine["fs_type"] == "tmpfs" {
        eprintln!("warning: the store directory is on tmpfs; the figures do not describe a disk");
    }
}

/// Flushes other dirty data (earlier workloads, other users of the disk) before a workload, so
/// its writeback does not land inside the next measurement. Best effort: a failure to run
/// `sync` only makes the next figure noisier.
pub fn settle_disk() {
    if let Err(e) = std::process::Command::new("sync").status() {
        eprintln!("warning: running sync: {e}");
    }
    std::thread::sleep(Duration::from_millis(200));
}
