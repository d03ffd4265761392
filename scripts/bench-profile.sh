#!/usr/bin/env bash
# Side by side on one core and the same Shuttle records: the guard's profiling throughput
# (`ingest-guard tools profile`) against whylogs profiling the same rows as a pandas frame.
# Not part of CI: it installs whylogs and pandas from PyPI into .tools/venv-whylogs.
#   scripts/bench-profile.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
bash scripts/setup.sh >/dev/null
VENV=.tools/venv-whylogs
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q "whylogs==1.6.4" "pandas==3.1.1"
fi
cargo build --release --locked -q
BIN=$CARGO_TARGET_DIR/release/ingest-guard
pin() { if command -v taskset >/dev/null; then taskset -c 0 "$@"; else "$@"; fi; }
echo "== guard (DDSketch on), one core"
pin "$BIN" tools profile --schema schemas/shuttle.schema.json --input .data/shuttle.jsonl --passes 20
echo "== guard (DDSketch off), one core"
pin "$BIN" tools profile --schema schemas/shuttle.schema.json --input .data/shuttle.jsonl --passes 20 --quantiles false
echo "== whylogs, one core"
pin "$VENV/bin/python" scripts/bench_whylogs.py .data/shuttle.jsonl 5
