//! `record_decode`: the commit-log record codec on arbitrary bytes at an arbitrary claimed
//! offset. Nothing may panic; a record that decodes must re-encode to the same bytes and
//! decode again to the same fields; properties and origin references round-trip too.
//!
//! Input: `mode u8, offset u64, record bytes...`. Mode bit 0: claim the `offset` read from
//! the input instead of the offset the record stores (bytes 16..24). Bit 1: store the correct
//! CRC first, so the fuzzer reaches the checks behind it. Bit 2: write a valid magic, version
//! and flags byte first.

use delaystore::commit_log::record::{
    checked_bytes, decode_header, decode_properties, decode_record, encode_filler, encode_message,
    encode_properties, verify_crc, MessageFields, OriginRef, Placement, RecordKind, HEADER_BYTES,
    ORIGIN_REF_BYTES, RECORD_MAGIC, RECORD_VERSION,
};
use delaystore::DecodeError;

use super::reader::Reader;

/// The check.
pub fn check(data: &[u8]) {
    let mut input = Reader::new(data);
    let mode = input.u8();
    let explicit_offset = input.u64();
    let mut buf = input.rest().to_vec();
    if mode & 4 != 0 && buf.len() >= HEADER_BYTES {
        buf[0..4].copy_from_slice(&RECORD_MAGIC.to_le_bytes());
        buf[12] = RECORD_VERSION;
        buf[15] = 0;
    }
    if mode & 2 != 0 {
        fix_crc(&mut buf);
    }
    let offset = if mode & 1 != 0 {
        explicit_offset
    } else {
        stored_offset(&buf)
    };

    properties_round_trip(&buf);
    origin_round_trip(&buf);

    let header = decode_header(&buf, offset);
    if let Ok(header) = &header {
        assert_eq!(
            header.log_offset, offset,
            "header accepted at a wrong offset"
        );
        assert!(u64::from(header.total_bytes) >= HEADER_BYTES as u64);
        assert!(checked_bytes(header) <= u64::from(header.total_bytes));
    }
    let Ok(view) = decode_record(&buf, offset) else {
        return;
    };
    assert_eq!(
        Ok(view.header),
        header,
        "decode_record and decode_header disagree"
    );
    let header = view.header;
    let checked = usize::try_from(checked_bytes(&header)).expect("checked bytes fit usize");
    let original = &buf[..checked];
    properties_round_trip(view.properties);
    match header.kind {
        RecordKind::Filler => {
            assert!(view.topic.is_empty() && view.key.is_empty());
            assert!(view.properties.is_empty() && view.body.is_empty());
            // A filler carries only its offset, length and store time; the encoder writes
            // zeros elsewhere, so only such fillers re-encode to the same bytes.
            let canonical = header.delay_level == 0
                && header.due_ms == 0
                && header.queue_offset == 0
                && header.queue_id == 0;
            let encoded = encode_filler(header.log_offset, header.total_bytes, header.store_ms);
            if canonical {
                assert_eq!(&encoded[..], original, "filler does not round-trip");
            }
            let again = decode_record(&encoded, offset).expect("a re-encoded filler decodes");
            assert_eq!(again.header.total_bytes, header.total_bytes);
            assert_eq!(again.header.store_ms, header.store_ms);
        }
        RecordKind::Message
        | RecordKind::Delivery
        | RecordKind::Hop
        | RecordKind::Cancel
        | RecordKind::Discard => {
            let fields = MessageFields {
                kind: header.kind,
                topic: view.topic,
                queue_id: header.queue_id,
                key: view.key,
                properties: view.properties,
                body: view.body,
                delay_level: header.delay_level,
            };
            let mut encoded = encode_message(&fields).expect("a decoded record re-encodes");
            let sealed = encoded
                .seal(Placement {
                    queue_id: header.queue_id,
                    log_offset: header.log_offset,
                    store_ms: header.store_ms,
                    due_ms: header.due_ms,
                    queue_offset: header.queue_offset,
                })
                .to_vec();
            assert_eq!(
                sealed, original,
                "record does not re-encode to its own bytes"
            );
            let again = decode_record(&sealed, offset).expect("a re-encoded record decodes");
            assert_eq!(again.header, header);
            assert_eq!(again.topic, view.topic);
            assert_eq!(again.key, view.key);
            assert_eq!(again.properties, view.properties);
            assert_eq!(again.body, view.body);
            if header.kind == RecordKind::Delivery {
                assert_eq!(view.body.len(), ORIGIN_REF_BYTES);
                let origin = OriginRef::decode(view.body).expect("a delivery body decodes");
                assert_eq!(&origin.encode()[..], view.body);
            }
        }
    }
}

/// The offset the record stores (bytes 16..24), 0 if too short.
fn stored_offset(buf: &[u8]) -> u64 {
    buf.get(16..24)
        .map_or(0, |b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
}

/// Stores the CRC the decoder will compute over the bytes its header claims are checked.
pub fn fix_crc(buf: &mut [u8]) {
    if buf.len() < HEADER_BYTES {
        return;
    }
    let checked = if buf[13] == 2 {
        HEADER_BYTES
    } else {
        u32::from_le_bytes(buf[4..8].try_into().expect("4 bytes")) as usize
    };
    let checked = checked.clamp(HEADER_BYTES, buf.len());
    if let Err(DecodeError::BadChecksum { computed, .. }) = verify_crc(&buf[..checked], 0) {
        buf[8..12].copy_from_slice(&computed.to_le_bytes());
    } else {
        buf[8..12].copy_from_slice(&0u32.to_le_bytes());
    }
}

fn properties_round_trip(bytes: &[u8]) {
    if let Ok(properties) = decode_properties(bytes) {
        let encoded = encode_properties(&properties).expect("decoded properties re-encode");
        assert_eq!(encoded, bytes, "properties do not round-trip");
    }
}

fn origin_round_trip(bytes: &[u8]) {
    match OriginRef::decode(bytes) {
        Ok(origin) => assert_eq!(&origin.encode()[..], bytes, "origin does not round-trip"),
        Err(_) => assert_ne!(bytes.len(), ORIGIN_REF_BYTES),
    }
}
