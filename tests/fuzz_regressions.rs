#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Replays every input under `fuzz/regressions/<target>/` through the same check the fuzz
//! target `<target>` runs (`fuzz/fuzz_targets/common/<target>.rs`, included here, so there is
//! one copy of each check). Needs no cargo-fuzz and no nightly: a plain test.
//!
//! A panic anywhere fails the test, including in a store's background thread (which the store
//! would otherwise only report on stderr when it joins the thread): a panic hook counts them.
//! Note that `cargo test --release` has no overflow checks, while the fuzz runs
//! (`cargo fuzz run -a`) have them: an input whose only fault is an arithmetic overflow fails
//! here under `cargo test` (debug) and passes under `--release`.

#[path = "../fuzz/fuzz_targets/common/mod.rs"]
mod common;

use std::fs;
use std::panic;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

static PANICS: AtomicUsize = AtomicUsize::new(0);

#[test]
fn every_fuzz_regression_input_passes_its_target_check() {
    let default_hook = panic::take_hook();
    panic::set_hook(Box::new(move |info| {
        PANICS.fetch_add(1, Ordering::SeqCst);
        default_hook(info);
    }));

    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions");
    let mut failures = Vec::new();
    let mut replayed = 0;
    for dir in fs::read_dir(&root).expect("read fuzz/regressions") {
        let dir = dir.expect("list fuzz/regressions").path();
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            common::TARGETS.contains(&name.as_str()),
            "fuzz/regressions/{name} is not named after a fuzz target ({:?})",
            common::TARGETS
        );
    }
    for target in common::TARGETS {
        let Ok(entries) = fs::read_dir(root.join(target)) else {
            continue;
        };
        let mut files: Vec<_> = entries
            .map(|entry| entry.expect("list a regression directory").path())
            .filter(|path| path.is_file())
            .collect();
        files.sort();
        for file in files {
            let data = fs::read(&file).expect("read a regression input");
            let label = format!("{target}/{}", file.file_name().unwrap().to_string_lossy());
            eprintln!("replaying fuzz/regressions/{label} ({} bytes)", data.len());
            let before = PANICS.load(Ordering::SeqCst);
            let result = panic::catch_unwind(|| common::run(target, &data));
            let panicked = PANICS.load(Ordering::SeqCst) != before;
            match result {
                Ok(true) if !panicked => {}
                Ok(false) => failures.push(format!("{label}: no such target")),
                _ => failures.push(format!("{label}: panicked (see the message above)")),
            }
            replayed += 1;
        }
    }
    drop(panic::take_hook());
    assert!(
        failures.is_empty(),
        "{} of {replayed} fuzz regression inputs fail:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
