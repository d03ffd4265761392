//! A missing or wrong ONNX Runtime library is an error, not a panic (own process: the library
//! can be loaded only once per process).

#![allow(clippy::unwrap_used, missing_docs)]

use guard_score::{init_runtime, ScoreError};

#[test]
fn missing_and_wrong_libraries_are_errors() {
    let e = init_runtime(std::path::Path::new("/nonexistent/libonnxruntime.so")).unwrap_err();
    assert!(
        matches!(e, ScoreError::Runtime { .. }) && e.to_string().contains("setup.sh"),
        "{e}"
    );
    // A file that is not a shared library.
    let f = std::path::PathBuf::from(
        std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_owned()),
    )
    .join("Cargo.toml");
    let e = init_runtime(&f).unwrap_err();
    assert!(matches!(e, ScoreError::Runtime { .. }), "{e}");
}
