//! `checkpoint`: the checkpoint codec. Nothing may panic; a checkpoint that decodes encodes to
//! bytes that decode again to the same value.
//!
//! Input: `mode u8, bytes...`. Mode bit 0: the bytes are a payload, framed here with the right
//! magic, version, length and CRC so the fuzzer reaches the payload decoder.

use delaystore::checkpoint::{Checkpoint, CHECKPOINT_MAGIC, CHECKPOINT_VERSION};
use delaystore::framed::frame;

use super::reader::Reader;

/// The check.
pub fn check(data: &[u8]) {
    let mut input = Reader::new(data);
    let mode = input.u8();
    let rest = input.rest();
    let bytes = if mode & 1 != 0 {
        frame(CHECKPOINT_MAGIC, CHECKPOINT_VERSION, rest)
    } else {
        rest.to_vec()
    };
    let Ok(checkpoint) = Checkpoint::decode(&bytes) else {
        return;
    };
    assert!(checkpoint.last_record_offset <= checkpoint.log_end_offset);
    let encoded = checkpoint.encode();
    assert_eq!(
        Checkpoint::decode(&encoded).as_ref(),
        Ok(&checkpoint),
        "checkpoint does not round-trip"
    );
    // The decoder ignores the padding of the fixed part and the topic bytes of a delay-level
    // entry (the encoder writes zeros and none), so the re-encoding may differ there and be
    // shorter, never longer.
    assert!(
        encoded.len() <= bytes.len(),
        "re-encoded checkpoint is longer"
    );
}
