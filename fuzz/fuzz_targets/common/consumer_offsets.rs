//! `consumer_offsets`: the consumer-offsets codec. Nothing may panic; a table that decodes
//! encodes to bytes that decode to the same table.
//!
//! Input: `mode u8, bytes...`. Mode bit 0: the bytes are a payload, framed here.

use delaystore::consumer_offsets::{
    decode_offsets, encode_offsets, OFFSETS_MAGIC, OFFSETS_VERSION,
};
use delaystore::framed::frame;

use super::reader::Reader;

/// The check.
pub fn check(data: &[u8]) {
    let mut input = Reader::new(data);
    let mode = input.u8();
    let rest = input.rest();
    let bytes = if mode & 1 != 0 {
        frame(OFFSETS_MAGIC, OFFSETS_VERSION, rest)
    } else {
        rest.to_vec()
    };
    let Ok(table) = decode_offsets(&bytes) else {
        return;
    };
    let encoded = encode_offsets(&table);
    assert_eq!(
        decode_offsets(&encoded).as_ref(),
        Ok(&table),
        "consumer offsets do not round-trip"
    );
    // Duplicate keys collapse, so the re-encoding is never longer.
    assert!(encoded.len() <= bytes.len());
}
