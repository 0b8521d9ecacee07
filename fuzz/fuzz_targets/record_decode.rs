//! Fuzz target `record_decode`: the check lives in `common/record_decode.rs`, shared with
//! `tests/fuzz_regressions.rs`, which replays `fuzz/regressions/record_decode/`.
#![no_main]

mod common;

libfuzzer_sys::fuzz_target!(|data: &[u8]| common::record_decode::check(data));
