//! Fuzz target `image_mutation`: the check lives in `common/image_mutation.rs`, shared with
//! `tests/fuzz_regressions.rs`, which replays `fuzz/regressions/image_mutation/`.
#![no_main]

mod common;

libfuzzer_sys::fuzz_target!(|data: &[u8]| common::image_mutation::check(data));
