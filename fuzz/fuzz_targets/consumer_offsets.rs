//! Fuzz target `consumer_offsets`: the check lives in `common/consumer_offsets.rs`, shared with
//! `tests/fuzz_regressions.rs`, which replays `fuzz/regressions/consumer_offsets/`.
#![no_main]

mod common;

libfuzzer_sys::fuzz_target!(|data: &[u8]| common::consumer_offsets::check(data));
