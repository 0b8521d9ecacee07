//! Fuzz target `store_image`: the check lives in `common/store_image.rs`, shared with
//! `tests/fuzz_regressions.rs`, which replays `fuzz/regressions/store_image/`.
#![no_main]

mod common;

libfuzzer_sys::fuzz_target!(|data: &[u8]| common::store_image::check(data));
