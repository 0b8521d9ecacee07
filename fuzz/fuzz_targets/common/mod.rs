//! The checks behind every fuzz target, one module per target, each with a
//! `pub fn check(data: &[u8])` that panics only on a bug. Shared by the fuzz targets
//! (`fuzz/fuzz_targets/<target>.rs`) and by `tests/fuzz_regressions.rs`, which replays every
//! file under `fuzz/regressions/<target>/` through the same function: one copy of each check.
#![allow(dead_code)]

pub mod checkpoint;
pub mod consumer_offsets;
pub mod decision_slots;
pub mod image;
pub mod image_mutation;
pub mod meta;
pub mod queue_entry;
pub mod reader;
pub mod record_decode;
pub mod store_image;

/// Every target, by name (the directory names under `fuzz/regressions/`).
pub const TARGETS: [&str; 8] = [
    "record_decode",
    "queue_entry",
    "checkpoint",
    "consumer_offsets",
    "meta",
    "store_image",
    "image_mutation",
    "decision_slots",
];

/// Runs the check of the target named `target` on `data`; `false` if no target has that name.
pub fn run(target: &str, data: &[u8]) -> bool {
    match target {
        "record_decode" => record_decode::check(data),
        "queue_entry" => queue_entry::check(data),
        "checkpoint" => checkpoint::check(data),
        "consumer_offsets" => consumer_offsets::check(data),
        "meta" => meta::check(data),
        "store_image" => store_image::check(data),
        "image_mutation" => image_mutation::check(data),
        "decision_slots" => decision_slots::check(data),
        _ => return false,
    }
    true
}
