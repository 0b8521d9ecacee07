//! JSON-lines output of the benches: one JSON value per line, in a file overwritten by each
//! run.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the epoch, to date a run's lines.
pub fn unix_time_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Writes `lines` to `path` (overwritten), one JSON value per line, and says where.
pub fn write_json_lines(path: &Path, lines: &[serde_json::Value]) {
    let mut out = String::new();
    for line in lines {
        out.push_str(&line.to_string());
        out.push('\n');
    }
    let written = path
        .parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|()| std::fs::write(path, out));
    match written {
        Ok(()) => println!("\n{} JSON lines: {}", lines.len(), path.display()),
        Err(e) => eprintln!("writing {path:?}: {e}"),
    }
}
