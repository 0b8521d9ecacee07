//! Fuzz target `decision_slots`: the check lives in `common/decision_slots.rs`, shared with
//! `tests/fuzz_regressions.rs`, which replays `fuzz/regressions/decision_slots/`.
#![no_main]

mod common;

libfuzzer_sys::fuzz_target!(|data: &[u8]| common::decision_slots::check(data));
