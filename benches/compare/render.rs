//! Renders the report from a run's JSON lines.
use std::path::Path;

pub fn render_file(_jsonl: &Path, _report: &Path) -> Result<(), String> {
    Ok(())
}
