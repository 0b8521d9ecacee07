//! Fuzz target `meta`: the check lives in `common/meta.rs`, shared with
//! `tests/fuzz_regressions.rs`, which replays `fuzz/regressions/meta/`.
#![no_main]

mod common;

libfuzzer_sys::fuzz_target!(|data: &[u8]| common::meta::check(data));
