//! Comparison benchmark: delaystore next to the stores a user would pick instead, on the same
//! machine in the same run, every figure also a ratio to a raw ceiling measured in that run.
//!
//! Peers (`compare/peer_*.rs`), all behind one delay-queue interface (`compare/peer.rs`):
//! delaystore; embedded SQLite (rusqlite, bundled), redb and fjall; PostgreSQL and Redis
//! servers when installed (started on 127.0.0.1, data in the run's directory, stopped at the
//! end; skipped with a line saying how to install them otherwise); RocksDB behind the opt-in
//! `bench-rocksdb` feature. Within each repetition every workload runs against every peer in
//! turn (A B C, A B C, ...), the order rotated between repetitions.
//!
//! Workloads: raw ceilings at the start and end (`ceilings.rs`); async append (`append_async.rs`);
//! synced append with 1/4/16/64 producers (`append_sync.rs`); delivery lateness at 10k and 100k
//! due/s under a competing writer (`lateness.rs`); backlog drain (`drain.rs`); recovery after a
//! kill, warm and cold (`recovery.rs`); anonymous memory per pending message (`memory.rs`); the
//! seed scenario, orders table scans vs delayed messages (`orders_seed.rs`).
//!
//! Run: `cargo bench --bench compare -- --suite all [--quick]`. Writes JSON lines
//! (`target/compare.jsonl`) and renders the generated section of `docs/benchmarks.md` with
//! SVG plots in `docs/img/`; `-- --render-only target/compare.jsonl` re-renders from a file.

#[path = "support/machine.rs"]
mod machine;
#[path = "support/orders.rs"]
mod orders;
#[path = "support/raw_record.rs"]
mod raw_record;
#[path = "support/summary.rs"]
mod summary;
#[path = "support/timing.rs"]
mod timing;

#[path = "compare/append_async.rs"]
mod append_async;
#[path = "compare/append_sync.rs"]
mod append_sync;
#[path = "compare/ceilings.rs"]
mod ceilings;
#[path = "compare/child.rs"]
mod child;
#[path = "compare/config.rs"]
mod config;
#[path = "compare/dispatcher.rs"]
mod dispatcher;
#[path = "compare/drain.rs"]
mod drain;
#[path = "compare/lateness.rs"]
mod lateness;
#[path = "compare/memory.rs"]
mod memory;
#[path = "compare/orders_seed.rs"]
mod orders_seed;
#[path = "compare/peer.rs"]
mod peer;
#[path = "compare/peer_delaystore.rs"]
mod peer_delaystore;
#[path = "compare/peer_fjall.rs"]
mod peer_fjall;
#[path = "compare/peer_postgres.rs"]
mod peer_postgres;
#[path = "compare/peer_redb.rs"]
mod peer_redb;
#[path = "compare/peer_redis.rs"]
mod peer_redis;
#[cfg(feature = "bench-rocksdb")]
#[path = "compare/peer_rocksdb.rs"]
mod peer_rocksdb;
#[path = "compare/peer_sqlite.rs"]
mod peer_sqlite;
#[path = "compare/plots.rs"]
mod plots;
#[path = "compare/proc_mem.rs"]
mod proc_mem;
#[path = "compare/recovery.rs"]
mod recovery;
#[path = "compare/render.rs"]
mod render;
#[path = "compare/results.rs"]
mod results;
#[path = "compare/runner.rs"]
mod runner;
#[path = "compare/servers.rs"]
mod servers;
#[path = "compare/util.rs"]
mod util;

use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use clap::Parser;
use serde_json::json;

use config::{Args, Config, SUITES};
use peer::PeerKind;
use results::Recorder;
use runner::RunCtx;
use servers::Servers;

fn main() {
    let args = Args::parse();
    if let Some(spec) = &args.child {
        std::process::exit(child::run(spec));
    }
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let report = args
        .report
        .clone()
        .unwrap_or_else(|| manifest.join("docs").join("benchmarks.md"));
    if let Some(path) = &args.render_only {
        if let Err(e) = render::render_file(path, &report) {
            eprintln!("rendering: {e}");
            std::process::exit(1);
        }
        return;
    }
    match run(&args, &manifest, &report) {
        Ok(0) => {}
        Ok(failures) => {
            eprintln!("{failures} measurement(s) failed (see FAILED lines and the JSON)");
            std::process::exit(1);
        }
        Err(e) => {
            eprintln!("compare: {e}");
            std::process::exit(1);
        }
    }
}

/// Runs the selected suites; returns the number of failed measurements.
fn run(args: &Args, manifest: &Path, report: &Path) -> Result<usize, String> {
    let suites: Vec<&str> = if args.suite == "all" {
        SUITES.to_vec()
    } else {
        let wanted: Vec<&str> = args.suite.split(',').map(str::trim).collect();
        if let Some(bad) = wanted.iter().find(|w| !SUITES.contains(w)) {
            return Err(format!(
                "unknown suite {bad:?}; known: all, {}",
                SUITES.join(", ")
            ));
        }
        SUITES
            .iter()
            .copied()
            .filter(|s| wanted.contains(s))
            .collect()
    };
    let wanted_peers: Vec<PeerKind> = match &args.peers {
        None => PeerKind::ALL.to_vec(),
        Some(list) => list
            .split(',')
            .map(|n| PeerKind::from_name(n.trim()).ok_or(format!("unknown peer {n:?}")))
            .collect::<Result<_, _>>()?,
    };
    let root = args
        .dir
        .clone()
        .or_else(|| std::env::var_os("DELAYSTORE_BENCH_DIR").map(PathBuf::from))
        .unwrap_or_else(|| manifest.join("target"));
    let dir = root.join(format!("bench-compare-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {dir:?}: {e}"))?;
    let json_path = args
        .json
        .clone()
        .unwrap_or_else(|| manifest.join("target").join("compare.jsonl"));
    let config = Config::new(dir.clone(), args.quick, args.reps);
    let mode = if args.quick { "quick" } else { "full" };
    let machine = machine_info(&dir);
    println!(
        "machine: {} cpus ({}), {} GiB; {}; stores in {} ({}, {})",
        machine["nproc"],
        machine["cpu"],
        machine["mem_gib"],
        machine["kernel"],
        dir.display(),
        machine["device"],
        machine["fs_type"]
    );
    if machine["fs_type"] == "tmpfs" {
        eprintln!("warning: the run directory is on tmpfs; the figures do not describe a disk");
    }

    let started = Instant::now();
    let mut rec = Recorder::default();
    let servers = Servers::start(
        &dir,
        wanted_peers.contains(&PeerKind::Postgres),
        wanted_peers.contains(&PeerKind::Redis),
    );
    let mut peers = Vec::new();
    for kind in wanted_peers {
        match peer::unavailable(kind, &servers) {
            Some(reason) => rec.skip(kind.name(), &reason),
            None => peers.push(kind),
        }
    }
    println!(
        "peers: {}",
        peers
            .iter()
            .map(|p| p.name())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let ctx = RunCtx {
        config,
        servers,
        peers,
    };
    for (prefix, ceiling) in [
        ("async_append/128B", "ceiling/mmap_crc/128B"),
        ("async_append/1KiB", "ceiling/mmap_crc/1KiB"),
        ("async_append/16KiB", "ceiling/mmap_crc/16KiB"),
        ("sync_append/", "ceiling/pwrite_fdatasync"),
        ("drain", "ceiling/buffered_fsync/128B"),
    ] {
        rec.judge_against(prefix, "msg_per_s", ceiling, "msg_per_s");
    }

    eprintln!("ceilings (start of run)");
    ceilings::measure(&ctx.config, &mut rec, "start");
    for rep in 0..ctx.config.reps {
        rec.rep = rep;
        for suite in &suites {
            eprintln!("rep {}/{}: {suite}", rep + 1, ctx.config.reps);
            match *suite {
                "async" => append_async::run(&ctx, &mut rec),
                "sync" => append_sync::run(&ctx, &mut rec),
                "lateness" => lateness::run(&ctx, &mut rec),
                "drain" => drain::run(&ctx, &mut rec),
                "recovery" => recovery::run(&ctx, &mut rec),
                "memory" => memory::run(&ctx, &mut rec),
                // The 60 s scanner makes it long; once per run.
                "orders" if rep == 0 => orders_seed::run(&ctx, &mut rec),
                _ => {}
            }
        }
    }
    eprintln!("ceilings (end of run)");
    ceilings::measure(&ctx.config, &mut rec, "end");
    let secs = started.elapsed().as_secs_f64();
    eprintln!("total {secs:.0} s");
    ctx.servers.stop();
    util::remove_dir(&dir);

    let unix_time = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let head = vec![
        json!({"kind": "machine", "machine": machine}),
        json!({
            "kind": "run", "mode": mode, "reps": ctx.config.reps, "suites": suites,
            "secs": secs, "unix_time": unix_time,
            "sizes": {
                "async_bytes": ctx.config.async_bytes,
                "async_time_s": ctx.config.async_time.as_secs_f64(),
                "sync_time_s": ctx.config.sync_time.as_secs_f64(),
                "lateness_time_s": ctx.config.lateness_time.as_secs_f64(),
                "lateness_delay_ms": ctx.config.lateness_delay_ms,
                "drain_count": ctx.config.drain_count,
                "recovery_bytes": ctx.config.recovery_bytes,
                "memory_count": ctx.config.memory_count,
                "orders": ctx.config.orders, "order_window_ms": ctx.config.order_window_ms,
                "order_delay_ms": ctx.config.order_delay_ms,
                "scan_periods_ms": ctx.config.scan_periods_ms,
            },
        }),
    ];
    if let Some(parent) = json_path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| format!("creating {parent:?}: {e}"))?;
    }
    std::fs::write(&json_path, rec.to_json_lines(&head))
        .map_err(|e| format!("writing {json_path:?}: {e}"))?;
    println!("JSON lines: {}", json_path.display());
    render::render_file(&json_path, report)?;
    Ok(rec.failures.len())
}

fn machine_info(dir: &Path) -> serde_json::Value {
    let (device, fs_type) = machine::mount_of(dir);
    let git = std::process::Command::new("git")
        .args(["describe", "--always", "--dirty"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    json!({
        "nproc": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "kernel": machine::read_trimmed("/proc/version"),
        "cpu": machine::cpu_model(),
        "mem_gib": (machine::mem_total_kib() as f64 / 1048576.0 * 10.0).round() / 10.0,
        "device": device,
        "fs_type": fs_type,
        "git": git,
        "loadavg_at_start": machine::read_trimmed("/proc/loadavg"),
    })
}
