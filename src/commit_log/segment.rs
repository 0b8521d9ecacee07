//! One commit-log segment: a fixed-length mapped file named by the log offset of its first
//! byte. Records are appended in place; a filler record pads the tail when the next record
//! does not fit, so that no record spans two segments.

use std::path::PathBuf;

use crate::io::MappedFile;

/// A segment of the commit log.
#[derive(Debug)]
pub struct Segment {
    /// Log offset of the first byte.
    pub base_offset: u64,
    /// Path of the file.
    pub path: PathBuf,
    /// The mapped file.
    pub file: Box<dyn MappedFile>,
}

impl Segment {
    /// Length in bytes.
    pub fn len_bytes(&self) -> u64 {
        self.file.len_bytes()
    }

    /// Log offset just past the last byte.
    pub fn end_offset(&self) -> u64 {
        self.base_offset + self.len_bytes()
    }

    /// Whether the log offset falls in this segment.
    pub fn contains(&self, log_offset: u64) -> bool {
        (self.base_offset..self.end_offset()).contains(&log_offset)
    }
}
