//! Inputs the fuzzer (`scripts/fuzz.sh`) found, replayed: every file under
//! `fuzz/regressions/quarantine_file/` must be refused or read by the replay reader without a
//! panic and in bounded time.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::{Duration, Instant};

#[test]
fn fuzz_regressions_read_in_bounded_time() {
    let dir = std::path::PathBuf::from(
        std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_owned()),
    )
    .join("../../fuzz/regressions/quarantine_file");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        let started = Instant::now();
        let result = guard_quarantine::offsets_in(bytes.into());
        let took = started.elapsed();
        eprintln!("{}: {:?} in {took:?}", path.display(), result.as_ref().map(Vec::len));
        assert!(took < Duration::from_secs(2), "{}: {took:?}", path.display());
        n += 1;
    }
    assert!(n >= 1, "the fixtures are there");
}
