//! Little-endian field access on byte slices that never panics: a read past the end yields
//! zero and a write past the end is dropped. Codecs check lengths first; these helpers are the
//! last line of defence, so that no input can make a decoder panic.
#![deny(clippy::indexing_slicing)]

use crate::error::DecodeError;

fn read<const N: usize>(buf: &[u8], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    if let Some(src) = at.checked_add(N).and_then(|end| buf.get(at..end)) {
        out.copy_from_slice(src);
    }
    out
}

fn write(buf: &mut [u8], at: usize, bytes: &[u8]) {
    if let Some(dst) = at
        .checked_add(bytes.len())
        .and_then(|end| buf.get_mut(at..end))
    {
        dst.copy_from_slice(bytes);
    }
}

/// Reads a `u8` at `at`.
pub fn get_u8(buf: &[u8], at: usize) -> u8 {
    read::<1>(buf, at)[0]
}
/// Reads a little-endian `u16` at `at`.
pub fn get_u16(buf: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(read(buf, at))
}
/// Reads a little-endian `u32` at `at`.
pub fn get_u32(buf: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(read(buf, at))
}
/// Reads a little-endian `u64` at `at`.
pub fn get_u64(buf: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(read(buf, at))
}
/// Writes a `u8` at `at`.
pub fn put_u8(buf: &mut [u8], at: usize, value: u8) {
    write(buf, at, &[value]);
}
/// Writes a little-endian `u16` at `at`.
pub fn put_u16(buf: &mut [u8], at: usize, value: u16) {
    write(buf, at, &value.to_le_bytes());
}
/// Writes a little-endian `u32` at `at`.
pub fn put_u32(buf: &mut [u8], at: usize, value: u32) {
    write(buf, at, &value.to_le_bytes());
}
/// Writes a little-endian `u64` at `at`.
pub fn put_u64(buf: &mut [u8], at: usize, value: u64) {
    write(buf, at, &value.to_le_bytes());
}

/// Splits `bytes` at `at`, or reports how many bytes were missing.
pub fn split(bytes: &[u8], at: usize) -> Result<(&[u8], &[u8]), DecodeError> {
    if at <= bytes.len() {
        Ok(bytes.split_at(at))
    } else {
        Err(DecodeError::Truncated {
            needed: at as u64,
            available: bytes.len() as u64,
        })
    }
}
