# Sourced by the scripts: a build cache outside the clone (safe to reuse across clones and
# CI runs on one machine; cargo rebuilds whatever changed).
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/ingest-guard/target}"
export TANSU_BIN="${TANSU_BIN:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/.tools/tansu}"
GUARD_BIN="$CARGO_TARGET_DIR/release/ingest-guard"
# The ONNX Runtime library ort loads at run time (scripts/setup.sh installs it).
export ORT_DYLIB_PATH="${ORT_DYLIB_PATH:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/.tools/onnxruntime/libonnxruntime.so.1.31.1}"
