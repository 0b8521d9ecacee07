//! Helpers shared by `tests/delivery.rs` and `tests/cli.rs` only.
#![allow(dead_code)]

/// The crate's seeded generator (splitmix64): the same seed gives the same schedule on every run.
pub use delaystore::seeded::SeededRng as Rng;
