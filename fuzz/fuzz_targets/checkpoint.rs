//! Fuzz target `checkpoint`: the check lives in `common/checkpoint.rs`, shared with
//! `tests/fuzz_regressions.rs`, which replays `fuzz/regressions/checkpoint/`.
#![no_main]

mod common;

libfuzzer_sys::fuzz_target!(|data: &[u8]| common::checkpoint::check(data));
