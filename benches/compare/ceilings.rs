//! Raw ceilings of this machine, measured at the start and at the end of every run: what the
//! disk and the page cache give with no store at all, for the same records.
//!
//! - `mmap_crc/{size}`: records sealed with a CRC over all their bytes (as the store seals
//!   them), copied into a zero-filled, synced, pre-faulted file mapping; the ceiling of async
//!   append.
//! - `pwrite_fdatasync`: one 1 KiB record `pwrite` + `fdatasync` at a time into a zero-filled
//!   file; the ceiling of one synced writer.
//! - `buffered_fsync/{size}`: the same records through `write` (64 KiB user buffer) into a new
//!   file, one `fsync` at the end, included in the time; the ceiling of writing each record
//!   once, durably, in bulk (the drain re-posts 128 B records).

use std::fs::OpenOptions;
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

use memmap2::MmapOptions;

use crate::config::{size_label, Config};
use crate::raw_record::{create_zeroed, raw_record, record_bytes, seal_raw};
use crate::results::Recorder;
use crate::summary::percentile;

const TOPIC: &str = "target";
const SYNC_BODY: usize = 1024;

/// Measures every ceiling once, recording under system `ceiling`.
pub fn measure(config: &Config, rec: &mut Recorder, when: &str) {
    let dir = config.dir.join("ceilings");
    for body in config.async_bodies.clone() {
        let count = (config.ceiling_bytes / record_bytes(TOPIC, body) as u64).max(1);
        let workload = format!("ceiling/mmap_crc/{}", size_label(body));
        run(rec, &dir, &workload, when, |d| mmap_crc(d, body, count));
        let workload = format!("ceiling/buffered_fsync/{}", size_label(body));
        run(rec, &dir, &workload, when, |d| {
            buffered_fsync(d, body, count)
        });
    }
    run(rec, &dir, "ceiling/pwrite_fdatasync", when, |d| {
        pwrite_fdatasync(d, config.ceiling_sync_time)
    });
}

type Sample = Vec<(&'static str, &'static str, f64)>;

fn run(
    rec: &mut Recorder,
    dir: &Path,
    workload: &str,
    when: &str,
    body: impl FnOnce(&Path) -> Result<Sample, String>,
) {
    crate::util::settle_disk();
    let result = crate::util::fresh_dir(dir).and_then(|()| body(dir));
    crate::util::remove_dir(dir);
    match result {
        Ok(sample) => {
            let shown: Vec<String> = sample
                .iter()
                .map(|(f, u, v)| format!("{f} {}", crate::util::human(*v, u)))
                .collect();
            eprintln!("  {workload} ({when}): {}", shown.join(", "));
            for (figure, unit, value) in sample {
                rec.add(workload, "ceiling", figure, unit, value);
            }
        }
        Err(e) => rec.fail(workload, "ceiling", e),
    }
}

#[allow(unsafe_code)]
fn mmap_crc(dir: &Path, body: usize, count: u64) -> Result<Sample, String> {
    let mut record = raw_record(TOPIC, body);
    let len = record.len();
    let total = count as usize * len;
    let file_len = total.div_ceil(4096) * 4096;
    let path = dir.join("mmap");
    let file =
        create_zeroed(&path, file_len as u64).map_err(|e| format!("creating {path:?}: {e}"))?;
    // SAFETY: the file was just created in this run's private directory; nothing else maps or
    // truncates it while the map lives (it is dropped before the directory is removed).
    let mut map = unsafe { MmapOptions::new().len(file_len).populate().map_mut(&file) }
        .map_err(|e| format!("mapping {path:?}: {e}"))?;
    let start = Instant::now();
    let mut at = 0usize;
    while at < total {
        seal_raw(&mut record, at as u64);
        map[at..at + len].copy_from_slice(&record);
        at += len;
    }
    let secs = start.elapsed().as_secs_f64();
    std::hint::black_box(&map);
    Ok(vec![
        ("msg_per_s", "msg/s", count as f64 / secs),
        ("mb_per_s", "MB/s", total as f64 / secs / 1e6),
    ])
}

fn buffered_fsync(dir: &Path, body: usize, count: u64) -> Result<Sample, String> {
    let mut record = raw_record(TOPIC, body);
    let path = dir.join("buffered");
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| format!("creating {path:?}: {e}"))?;
    let start = Instant::now();
    let mut out = BufWriter::with_capacity(64 * 1024, file);
    let mut at = 0u64;
    for _ in 0..count {
        seal_raw(&mut record, at);
        out.write_all(&record).map_err(|e| format!("write: {e}"))?;
        at += record.len() as u64;
    }
    let file = out.into_inner().map_err(|e| format!("flush: {e}"))?;
    file.sync_all().map_err(|e| format!("fsync: {e}"))?;
    let secs = start.elapsed().as_secs_f64();
    Ok(vec![
        ("msg_per_s", "msg/s", count as f64 / secs),
        ("mb_per_s", "MB/s", at as f64 / secs / 1e6),
    ])
}

fn pwrite_fdatasync(dir: &Path, duration: Duration) -> Result<Sample, String> {
    const FILE_BYTES: u64 = 64 << 20;
    let mut record = raw_record(TOPIC, SYNC_BODY);
    let len = record.len() as u64;
    let path = dir.join("fdatasync");
    let file = create_zeroed(&path, FILE_BYTES).map_err(|e| format!("creating {path:?}: {e}"))?;
    let mut latencies_us = Vec::with_capacity(1 << 16);
    let start = Instant::now();
    let mut at = 0u64;
    while start.elapsed() < duration {
        let t0 = Instant::now();
        seal_raw(&mut record, at);
        file.write_all_at(&record, at)
            .and_then(|()| file.sync_data())
            .map_err(|e| format!("pwrite + fdatasync at {at}: {e}"))?;
        latencies_us.push(t0.elapsed().as_secs_f64() * 1e6);
        at = if at + 2 * len > FILE_BYTES {
            0
        } else {
            at + len
        };
    }
    let secs = start.elapsed().as_secs_f64();
    latencies_us.sort_by(f64::total_cmp);
    Ok(vec![
        ("msg_per_s", "msg/s", latencies_us.len() as f64 / secs),
        ("p50_us", "us", percentile(&latencies_us, 0.5)),
        ("p99_us", "us", percentile(&latencies_us, 0.99)),
    ])
}
