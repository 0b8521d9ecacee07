//! The frame every small file is written in (checkpoint, meta, consumer offsets): magic,
//! version, payload length and a CRC32 over all of it. One codec serves all three, so a torn or
//! rotted small file is detected the same way everywhere. Pure; never panics.
#![deny(clippy::indexing_slicing, clippy::unwrap_used, clippy::expect_used)]

use crate::bytes::{get_u32, put_u32};
use crate::error::DecodeError;

/// Frame header length in bytes.
pub const FRAME_HEADER_BYTES: usize = 16;

/// Wraps `payload` in a frame.
pub fn frame(magic: u32, version: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; FRAME_HEADER_BYTES];
    put_u32(&mut out, 0, magic);
    put_u32(&mut out, 4, version);
    // Payloads are small files; a payload over 4 GiB cannot be framed: its length field is
    // saturated, so the exact-length check rejects it on read rather than this panicking.
    put_u32(
        &mut out,
        8,
        u32::try_from(payload.len()).unwrap_or(u32::MAX),
    );
    out.extend_from_slice(payload);
    let crc = frame_crc(&out);
    put_u32(&mut out, 12, crc);
    out
}

/// Checks a frame and returns its payload.
pub fn unframe(bytes: &[u8], magic: u32, version: u32) -> Result<&[u8], DecodeError> {
    let header = bytes
        .get(..FRAME_HEADER_BYTES)
        .ok_or(DecodeError::Truncated {
            needed: FRAME_HEADER_BYTES as u64,
            available: bytes.len() as u64,
        })?;
    let found = get_u32(header, 0);
    if found != magic {
        return Err(DecodeError::BadMagic { found });
    }
    let found = get_u32(header, 4);
    if found != version {
        return Err(DecodeError::BadVersion { found });
    }
    let len = get_u32(header, 8) as usize;
    let total = FRAME_HEADER_BYTES.saturating_add(len);
    if bytes.len() != total {
        return Err(DecodeError::BadLength { length: len as u64 });
    }
    let stored = get_u32(header, 12);
    let computed = frame_crc(bytes);
    if stored != computed {
        return Err(DecodeError::BadChecksum { stored, computed });
    }
    Ok(bytes.get(FRAME_HEADER_BYTES..).unwrap_or_default())
}

fn frame_crc(bytes: &[u8]) -> u32 {
    let mut crc = crc32fast::Hasher::new();
    crc.update(bytes.get(..12).unwrap_or_default());
    crc.update(bytes.get(FRAME_HEADER_BYTES..).unwrap_or_default());
    crc.finalize()
}
