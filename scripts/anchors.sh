#!/usr/bin/env bash
# Issue 14's anchor comparison, outside CI: cleanlab on MNIST's label-flip stream and IBM ART's
# spectral-signature and activation-clustering defences on its BadNets and blended-trigger
# streams, on exactly the rows `ingest-guard evaluate` judges (the committed models' split,
# `evaluate --write-attacked`). Installs cleanlab and ART (pinned) into .tools/venv-anchors once.
# Prints the guard's figures (one JSON line per attack) and then the anchors' (scripts/anchors.py).
#   scripts/anchors.sh            (about 1 minute after the build and setup)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh >/dev/null
source scripts/env.sh
cargo build --release --quiet
BIN=$CARGO_TARGET_DIR/release/ingest-guard
VENV=.tools/venv-anchors
if ! "$VENV/bin/python" -c "import art, cleanlab" >/dev/null 2>&1; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q "adversarial-robustness-toolbox==1.20.1" "cleanlab==2.9.0" "scikit-learn==1.9.1" \
    "numpy==2.4.6" "packaging"
fi
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
"$BIN" split --input .data/mnist.jsonl --holdout 0.5 --seed 7 --trusted "$WORK/t.jsonl" --heldout "$WORK/h.jsonl" >/dev/null
"$BIN" evaluate --schema schemas/mnist.schema.json --models models/mnist --input "$WORK/h.jsonl" \
  --attack flip:0.05 --attack trigger:3:0:0.1 --attack blend:0.1:0:0.1 --write-attacked "$WORK/attacked" --json
"$VENV/bin/python" -W ignore scripts/anchors.py --attacked "$WORK/attacked" \
  --stream flip=0.jsonl --stream badnets=1.jsonl --stream blend=2.jsonl
