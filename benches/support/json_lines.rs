//! JSON-lines output of the benches: one JSON value per line, in a file overwritten by each
//! run.

// Each bench includes this file as its own module and uses only part of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the epoch, to date a run's lines.
pub fn unix_time_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Where a bench writes its JSON lines: `json` (the bench's `--json`), else `file_name` in the
/// crate's `target/` directory.
pub fn json_path(json: Option<&Path>, file_name: &str) -> PathBuf {
    json.map_or_else(
        || {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("target")
                .join(file_name)
        },
        Path::to_path_buf,
    )
}

/// Writes `lines` to `path` (overwritten, its directory created), one JSON value per line, and
/// says where on stdout.
pub fn write_json_lines(path: &Path, lines: &[serde_json::Value]) -> Result<(), String> {
    let mut out = String::new();
    for line in lines {
        out.push_str(&line.to_string());
        out.push('\n');
    }
    path.parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|()| std::fs::write(path, out))
        .map_err(|e| format!("writing {path:?}: {e}"))?;
    println!("\n{} JSON lines: {}", lines.len(), path.display());
    Ok(())
}
