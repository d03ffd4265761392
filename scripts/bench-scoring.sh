#!/usr/bin/env bash
# Whole-pipeline throughput against a bare pass-through, same broker, one run (issue 12's
# figures). Shuttle: N real records with 1 % hostile ones, consumed by
#   1. a bare pass-through (consume + re-produce the same bytes, no checks),
#   2. the guard without a model,
#   3. the guard with the committed Shuttle anomaly model (CPU provider),
#   4. the same model with a threshold that quarantines nothing (the cost of scoring alone);
# MNIST (784-pixel records, M of them): a pass-through and the guard with both MNIST models,
# at the default memory budget and at 4 GiB (larger fetches, as README "Memory" advises for
# records of kilobytes).
# Then the Shuttle model alone (`tools score-bench`, one core). Not part of CI.
#   scripts/bench-scoring.sh [shuttle-records] [mnist-records]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh >/dev/null
N=${1:-400000}
M=${2:-50000}
PORT=${BENCH_BROKER_PORT:-29292}
HTTP=${BENCH_HTTP_PORT:-29899}
OUT=$PWD/bench-out/scoring
source scripts/bench-lib.sh
for t in sc.in mn.in sc.pt mn.pt sc.out.plain sc.out.scored sc.out.nothing sc.out.mnist sc.out.mnist-4g; do
  "$GUARD_BIN" tools create-topic --brokers "$B" --topic $t --partitions 4 >/dev/null
done
hostile_mix "$OUT/mix.jsonl"
"$GUARD_BIN" tools produce --brokers "$B" --topic sc.in --file "$OUT/mix.jsonl" --repeat 100 --count "$N" >/dev/null
"$GUARD_BIN" tools produce --brokers "$B" --topic mn.in --file .data/mnist.jsonl --repeat 100 --count "$M" >/dev/null
passthrough() { # name, from, to, count
  "$GUARD_BIN" tools passthrough --brokers "$B" --from "$2" --to "$3" --count "$4" --group "pt-$1" \
    | python3 -c "import json,sys;d=json.load(sys.stdin);d['run']='$1';print(json.dumps(d))" | tee "$OUT/$1.json"
}
run() { # name, input topic, schema, count, extra route lines[, extra top-level TOML]
  cat > "$OUT/$1.toml" <<EOT
[kafka]
brokers = "$B"
group_id = "sc-$1"
output_topic = "sc.out.$1"
[[routes]]
topic = "$2"
schema = "$PWD/schemas/$3.schema.json"
$5
[scoring]
execution_provider = "cpu"
[quarantine]
dir = "$OUT/quarantine-$1"
[server]
listen = "127.0.0.1:$HTTP"
${6:-}
EOT
  "$GUARD_BIN" run --config "$OUT/$1.toml" >"$OUT/$1.out" 2>"$OUT/$1.log" &
  local g=$!
  pids+=($g)
  while [ "$(metric guard_source_records_total 2>/dev/null || echo 0)" -eq 0 ]; do sleep 0.01; done
  local t0; t0=$(date +%s.%N)
  wait_judged "$4" "$g"
  local t1; t1=$(date +%s.%N)
  kill -TERM $g; wait $g || true
  python3 -c "import json;n=$4;s=$t1-$t0;print(json.dumps({'run':'$1','records':n,'seconds':round(s,3),'records_per_sec':round(n/s)}))" | tee "$OUT/$1.json"
}
passthrough sc-passthrough sc.in sc.pt "$N"
run plain sc.in shuttle "$N" ""
run scored sc.in shuttle "$N" "anomaly_model = \"$PWD/models/shuttle/anomaly.onnx\""
run nothing sc.in shuttle "$N" "anomaly_model = \"$PWD/models/shuttle/anomaly.onnx\"
anomaly_threshold = 1e30"
passthrough mn-passthrough mn.in mn.pt "$M"
run mnist mn.in mnist "$M" "anomaly_model = \"$PWD/models/mnist/anomaly.onnx\"
label_model = \"$PWD/models/mnist/label.onnx\""
# The README's setting for records of kilobytes: a larger memory budget raises the fetch size
# (budget / 65,536: 4 KiB at the default 256 MiB holds two 1.9 KB MNIST records).
run mnist-4g mn.in mnist "$M" "anomaly_model = \"$PWD/models/mnist/anomaly.onnx\"
label_model = \"$PWD/models/mnist/label.onnx\"" "[pipeline]
memory_budget_mb = 4096"
python3 - "$OUT" <<'PY'
import json, sys
o = sys.argv[1]
r = {k: json.load(open(f"{o}/{k}.json"))["records_per_sec"] for k in
     ["sc-passthrough", "plain", "scored", "nothing", "mn-passthrough", "mnist", "mnist-4g"]}
pt, mpt = r["sc-passthrough"], r["mn-passthrough"]
print(json.dumps({
    "records_per_sec": r,
    "shuttle_no_model_vs_passthrough": round(r["plain"] / pt, 3),
    "shuttle_model_vs_passthrough": round(r["scored"] / pt, 3),
    "shuttle_model_quarantining_nothing_vs_passthrough": round(r["nothing"] / pt, 3),
    "mnist_both_models_vs_passthrough": round(r["mnist"] / mpt, 3),
    "mnist_both_models_4g_budget_vs_passthrough": round(r["mnist-4g"] / mpt, 3),
}))
PY
echo "--- model alone, one core"
pin "$GUARD_BIN" tools score-bench --model models/shuttle/anomaly.onnx --input .data/shuttle.jsonl --schema schemas/shuttle.schema.json --batch 1024 --batch 8192
