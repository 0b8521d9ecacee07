//! Small helpers of the comparison bench: directories, disk settling, number formatting.

use std::path::Path;
use std::time::Duration;

/// An empty directory at `dir` (removing what was there).
pub fn fresh_dir(dir: &Path) -> Result<(), String> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(|e| format!("removing {dir:?}: {e}"))?;
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {dir:?}: {e}"))
}

/// Removes `dir`, warning (not failing) if that does not work.
pub fn remove_dir(dir: &Path) {
    if dir.exists() {
        if let Err(e) = std::fs::remove_dir_all(dir) {
            eprintln!("warning: removing {dir:?}: {e}");
        }
    }
}

/// Flushes dirty data of earlier workloads (and other users of the disk) so its writeback does
/// not land inside the next measurement. Best effort: a failure only makes the figures noisier.
pub fn settle_disk() {
    if let Err(e) = std::process::Command::new("sync").status() {
        eprintln!("warning: sync: {e}");
    }
    std::thread::sleep(Duration::from_millis(100));
}

/// A number in the unit's usual form: `1.23 M`, `45.6 k`, `12.3`.
pub fn human(value: f64, unit: &str) -> String {
    match unit {
        "msg/s" | "count" | "rows" | "B" => {
            let a = value.abs();
            if a >= 1e6 {
                format!("{:.2} M", value / 1e6)
            } else if a >= 1e4 {
                format!("{:.0} k", value / 1e3)
            } else if a >= 1e3 {
                format!("{:.1} k", value / 1e3)
            } else if a >= 10.0 || value == value.round() {
                format!("{value:.0}")
            } else {
                format!("{value:.1}")
            }
        }
        "ratio" => {
            if value >= 10.0 {
                format!("{value:.0}x")
            } else {
                format!("{value:.2}x")
            }
        }
        _ => {
            let a = value.abs();
            if a >= 100.0 {
                format!("{value:.0}")
            } else if a >= 10.0 {
                format!("{value:.1}")
            } else {
                format!("{value:.2}")
            }
        }
    }
}
