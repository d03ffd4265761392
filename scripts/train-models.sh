#!/usr/bin/env bash
# Regenerate the committed scoring models (models/<domain>/{anomaly,label}.{onnx,json,fixture.json})
# from the real data sets, deterministically (seed 7). Installs scikit-learn, onnx and
# onnxruntime (Python) into .tools/venv-train from PyPI. About 20 s after the install.
#   scripts/train-models.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh >/dev/null
VENV=.tools/venv-train
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q "scikit-learn==1.9.1" "onnx==1.23.2" "onnxruntime==1.31.1" "numpy==2.4.6"
fi
"$VENV/bin/python" scripts/train_models.py --domain shuttle --data .data/shuttle.jsonl --out models/shuttle
"$VENV/bin/python" scripts/train_models.py --domain mnist --data .data/mnist.jsonl --out models/mnist
