//! `meta`: the store-meta codec (JSON in a frame). Nothing may panic; a meta that decodes
//! encodes to bytes that decode to the same value.
//!
//! Input: `mode u8, bytes...`. Mode bit 0: the bytes are a JSON payload, framed here.

use delaystore::framed::frame;
use delaystore::meta::{StoreMeta, FORMAT_VERSION, META_MAGIC};

use super::reader::Reader;

/// The check.
pub fn check(data: &[u8]) {
    let mut input = Reader::new(data);
    let mode = input.u8();
    let rest = input.rest();
    let bytes = if mode & 1 != 0 {
        frame(META_MAGIC, FORMAT_VERSION, rest)
    } else {
        rest.to_vec()
    };
    let Ok(meta) = StoreMeta::decode(&bytes) else {
        return;
    };
    let _ = meta.queue_count("orders");
    assert_eq!(
        StoreMeta::decode(&meta.encode()).as_ref(),
        Ok(&meta),
        "meta does not round-trip"
    );
}
