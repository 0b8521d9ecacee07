//! `queue_entry`: the 20-byte consume-queue entry codec. Nothing may panic; an entry that
//! decodes re-encodes to the bytes it came from; only a short buffer or a zero length is
//! rejected.

use delaystore::consume_queue::entry::{Entry, ENTRY_BYTES};

/// The check.
pub fn check(data: &[u8]) {
    match Entry::decode(data) {
        Ok(entry) => {
            assert!(data.len() >= ENTRY_BYTES);
            assert_ne!(entry.record_bytes, 0, "an unwritten entry decoded");
            let encoded = entry.encode();
            assert_eq!(
                &encoded[..],
                &data[..ENTRY_BYTES],
                "entry does not round-trip"
            );
            assert_eq!(Entry::decode(&encoded), Ok(entry));
        }
        Err(_) => assert!(
            data.len() < ENTRY_BYTES || data[8..12] == [0; 4],
            "a well-formed entry was rejected"
        ),
    }
}
