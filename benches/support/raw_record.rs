//! Raw files and records for the benches' ceilings: a record laid out like the store's, sealed
//! with a CRC over all its bytes, and files prepared the ways the store prepares a segment.
//! Shared by `benches/append.rs` and `benches/compare.rs` so both ceilings write the same bytes.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

use delaystore::commit_log::record::HEADER_BYTES;

/// Encoded size of a bench message on `topic`: header, topic, no key, no properties, body.
pub fn record_bytes(topic: &str, body: usize) -> usize {
    HEADER_BYTES + topic.len() + body
}

/// A record laid out like the store's (header, topic, body); only the length and the offset and
/// CRC fields matter to the ceiling.
pub fn raw_record(topic: &str, body: usize) -> Vec<u8> {
    let len = record_bytes(topic, body);
    let mut record = vec![0u8; len];
    record[0..4].copy_from_slice(b"DSR1");
    record[4..8].copy_from_slice(&(len as u32).to_le_bytes());
    record[HEADER_BYTES..HEADER_BYTES + topic.len()].copy_from_slice(topic.as_bytes());
    for (i, b) in record[HEADER_BYTES + topic.len()..].iter_mut().enumerate() {
        *b = (i * 31 + 7) as u8;
    }
    record
}

/// Stamps the offset into the record and fills in a CRC over every byte but the CRC field.
pub fn seal_raw(record: &mut [u8], offset: u64) {
    record[16..24].copy_from_slice(&offset.to_le_bytes());
    let mut crc = crc32fast::Hasher::new();
    crc.update(&record[..8]);
    crc.update(&record[12..]);
    let crc = crc.finalize();
    record[8..12].copy_from_slice(&crc.to_le_bytes());
}

/// Creates a file the way the store creates a segment: zeros in 4 KiB writes, then a sync.
pub fn create_zeroed(path: &Path, len_bytes: u64) -> io::Result<File> {
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(path)?;
    let zeros = [0u8; 4096];
    let mut left = len_bytes;
    while left > 0 {
        let n = left.min(zeros.len() as u64) as usize;
        file.write_all(&zeros[..n])?;
        left -= n as u64;
    }
    file.sync_all()?;
    Ok(file)
}
