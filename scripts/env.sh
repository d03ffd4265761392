# Sourced by the scripts: a build cache outside the clone (safe to reuse across clones and
# CI runs on one machine; cargo rebuilds whatever changed).
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/ingest-guard/target}"
export TANSU_BIN="${TANSU_BIN:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/.tools/tansu}"
GUARD_BIN="$CARGO_TARGET_DIR/release/ingest-guard"
# The ONNX Runtime library ort loads at run time (scripts/setup.sh installs it).
export ORT_DYLIB_PATH="${ORT_DYLIB_PATH:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/.tools/onnxruntime/libonnxruntime.so.1.31.1}"
# The S3-compatible server for the object-storage tests (scripts/setup.sh installs it into the
# cache once per machine).
export S3S_FS_BIN="${S3S_FS_BIN:-$HOME/.cache/ingest-guard/s3s-fs-0.14.1/bin/s3s-fs}"
