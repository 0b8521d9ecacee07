//! Fuzz target `queue_entry`: the check lives in `common/queue_entry.rs`, shared with
//! `tests/fuzz_regressions.rs`, which replays `fuzz/regressions/queue_entry/`.
#![no_main]

mod common;

libfuzzer_sys::fuzz_target!(|data: &[u8]| common::queue_entry::check(data));
