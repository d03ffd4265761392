#!/usr/bin/env bash
# GPU check (issue 4): the MNIST-shaped models (and Shuttle's) on ONNX Runtime's CUDA execution
# provider at batch 1k/8k/32k, proving CUDA really ran (the provider in use, ONNX Runtime's own
# node-placement report, the outputs against CPU's on the same rows), then the same models on CPU
# on the same machine (one intra-op thread, and all cores). Needs an NVIDIA GPU and driver.
#
#   scripts/gpu-check.sh            # builds with --features guard-score/cuda and fetches the
#                                   # onnxruntime-gpu wheel from PyPI into .tools/onnxruntime-gpu
#
# Prebuilt parts (a machine without a toolchain or registry access):
#   GPU_GUARD_BIN=path/to/ingest-guard ORT_GPU_DIR=folder/with/libonnxruntime* scripts/gpu-check.sh
#
# The CUDA libraries: scripts/gpu-env.sh. Results: one JSON line per measurement in $OUT_DIR (default bench-out/gpu).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh

ORT_GPU_VERSION=1.31.1
OUT_DIR="${OUT_DIR:-bench-out/gpu}"
mkdir -p "$OUT_DIR"

if [ -z "${ORT_GPU_DIR:-}" ]; then
  ORT_GPU_DIR=.tools/onnxruntime-gpu
  if [ ! -f "$ORT_GPU_DIR/libonnxruntime_providers_cuda.so" ]; then
    mkdir -p .tools/wheels "$ORT_GPU_DIR"
    python3 -m pip download -q --no-deps --only-binary=:all: -d .tools/wheels "onnxruntime-gpu==$ORT_GPU_VERSION"
    unzip -q -j -o .tools/wheels/onnxruntime_gpu-"$ORT_GPU_VERSION"-*.whl 'onnxruntime/capi/lib*' -d "$ORT_GPU_DIR"
  fi
fi
if [ -z "${GPU_GUARD_BIN:-}" ]; then
  cargo build --release --features guard-score/cuda
  GPU_GUARD_BIN="$CARGO_TARGET_DIR/release/ingest-guard"
fi
source scripts/gpu-env.sh

failed=0
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT_DIR/gpu.txt"
lscpu | grep -E '^(Model name|CPU\(s\))' | tee -a "$OUT_DIR/gpu.txt"

# The guard's own start-up check with CUDA required: provider and node placement per model.
GUARD__SCORING__EXECUTION_PROVIDER=cuda "$GPU_GUARD_BIN" check --config config/demo.toml 2>&1 | tee "$OUT_DIR/check.txt" ||
  failed=1

bench() { # model schema input provider threads rows [flags]; a failure is reported, the rest still run
  "$GPU_GUARD_BIN" tools score-bench --model "models/$1.onnx" --schema "schemas/$2.schema.json" --input "$3" \
    --provider "$4" --threads "$5" --rows "$6" --batch 1024 --batch 8192 --batch 32768 "${@:7}" || {
    failed=1
    echo "gpu-check: $1 on $4 failed" >&2
  }
}
all=$(nproc)
: >"$OUT_DIR/score-bench.jsonl"
for m in mnist/anomaly:mnist mnist/label:mnist shuttle/anomaly:shuttle; do
  model=${m%%:*} schema=${m##*:}
  input=".data/$schema.jsonl"
  bench "$model" "$schema" "$input" cuda 1 2000000 | tee -a "$OUT_DIR/score-bench.jsonl"
  bench "$model" "$schema" "$input" cpu 1 200000 | tee -a "$OUT_DIR/score-bench.jsonl"
  bench "$model" "$schema" "$input" cpu "$all" 1000000 | tee -a "$OUT_DIR/score-bench.jsonl"
done
# TensorFloat-32 allowed (ONNX Runtime's own default): speed and distance from CPU.
for m in mnist/anomaly:mnist shuttle/anomaly:shuttle; do
  model=${m%%:*} schema=${m##*:}
  bench "$model" "$schema" ".data/$schema.jsonl" cuda 1 2000000 --tf32 | tee -a "$OUT_DIR/score-bench.jsonl"
done
# `auto` must pick CUDA here.
bench mnist/anomaly mnist .data/mnist.jsonl auto 1 200000 | tee -a "$OUT_DIR/score-bench.jsonl"
echo "gpu-check: done; results in $OUT_DIR"
exit "$failed"
