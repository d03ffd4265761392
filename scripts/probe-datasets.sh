#!/usr/bin/env bash
# Data sets the repository does not use, brought through `ingest-guard init` as a new user would
# (`init --input X.jsonl --label label --source source`): river's phishing, solar flare and
# chick weights, scikit-learn's digits (8x8 images), wine, breast cancer and iris
# (scripts/probe_datasets.py writes them). One line per set: whether `init` succeeded, its
# calibration rows and whether they meet the budget, and `evaluate` on the held-out rows (clean
# FPR, random rows, label flips; backdoors and FGSM where the rows are images). Outside CI:
# about 2 minutes on 2 cores. BENCHMARKS.md, "Data sets the repository does not use".
#   scripts/probe-datasets.sh [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh >/dev/null
source scripts/env.sh
cargo build --release --locked -q
BIN=$CARGO_TARGET_DIR/release/ingest-guard
OUT=${1:-$(mktemp -d)}
mkdir -p "$OUT"
.tools/venv-train/bin/python scripts/probe_datasets.py .tools/wheels/river-0.26.1-cp311-cp311-manylinux_2_28_x86_64.whl "$OUT"
for name in phishing solar-flare chick-weights digits wine breast-cancer iris; do
  dir=$OUT/$name-init
  rm -rf "$dir"
  start=$(date +%s)
  if ! "$BIN" init --input "$OUT/$name.jsonl" --label label --source source --out "$dir" > "$OUT/$name.log" 2>&1; then
    echo "$name: init FAILED ($(grep -m1 '^error' "$OUT/$name.log" || tail -1 "$OUT/$name.log"))"
    continue
  fi
  secs=$(( $(date +%s) - start ))
  attacks=(--attack none --attack inject:0.05 --attack flip:0.05)
  # Images: backdoors relabelled to the class "0", and FGSM.
  [ -f "$dir/models/adversarial.onnx" ] && attacks+=(--attack trigger:3:0:0.1 --attack blend:0.1:0:0.1 --attack fgsm:0.1 --attack fgsm:0.2)
  "$BIN" evaluate --config "$dir/guard.toml" --input "$dir/heldout.jsonl" "${attacks[@]}" --json 2>"$OUT/$name.evaluate.log" \
    | python3 -c "
import json, sys
meta = json.load(open('$dir/models/label.json'))
head = f\"$name: init $secs s, {meta['calibration_rows']} calibration rows, budget met {meta['budget_met']} (bound {meta['fpr_bound']:.4f})\"
cells = []
for line in sys.stdin:
    d = json.loads(line)
    f = lambda v: '-' if v is None else f'{v:.3f}'
    if d['attack'] == 'none':
        cells.append(f\"clean FPR {d['false_positive_rate']:.4f} of {d['records']}\")
    else:
        cells.append(f\"{d['attack']} P {f(d['precision'])} R {f(d['recall'])} P@R.86 {f(d['precision_at_recall_0.86'])}\")
print(head + '; ' + '; '.join(cells))
"
done
