//! File names that carry an offset: 20 zero-padded decimal digits, as in RocketMQ, so that
//! lexical order is numeric order.

/// Formats `offset` as a 20-digit file name.
pub fn offset_file_name(offset: u64) -> String {
    format!("{offset:020}")
}

/// Parses a 20-digit file name; anything else (temporary files, strangers) is `None`.
pub fn parse_offset_file_name(name: &str) -> Option<u64> {
    if name.len() == 20 && name.bytes().all(|b| b.is_ascii_digit()) {
        name.parse().ok()
    } else {
        None
    }
}
