#!/usr/bin/env bash
# Regenerate the committed scoring models (models/<domain>/{anomaly,label}.{onnx,json,fixture.json})
# through the same commands a user runs for their own domain (README "Your own domain"):
# `ingest-guard split` (half the rows held out, seed 7; Shuttle's own anomalies, label 1, are
# never trusted) then `ingest-guard train` on the trusted half. Deterministic for the seed.
# About 50 s after the build and setup (setup installs the Python training backend; MNIST's label
# model trains its convolutional member with jax, the default for image rows).
#   scripts/train-models.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh >/dev/null
source scripts/env.sh
cargo build --release --quiet
BIN=$CARGO_TARGET_DIR/release/ingest-guard
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
"$BIN" split --input .data/shuttle.jsonl --holdout 0.5 --seed 7 --trusted-when /label=0 \
  --trusted "$WORK/shuttle.trusted.jsonl" --heldout "$WORK/shuttle.heldout.jsonl"
"$BIN" train --schema schemas/shuttle.schema.json --input "$WORK/shuttle.trusted.jsonl" --roles anomaly --seed 7 --out models/shuttle
"$BIN" split --input .data/mnist.jsonl --holdout 0.5 --seed 7 \
  --trusted "$WORK/mnist.trusted.jsonl" --heldout "$WORK/mnist.heldout.jsonl"
"$BIN" train --schema schemas/mnist.schema.json --input "$WORK/mnist.trusted.jsonl" --seed 7 --out models/mnist
