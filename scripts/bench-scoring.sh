#!/usr/bin/env bash
# Whole-pipeline throughput with and without model scoring, same backlog, same broker, one run:
# the guard (enforce mode, Shuttle schema, 1 % hostile records) consumes N records twice, in
# two consumer groups, first without a model, then with the committed Shuttle anomaly model on
# the CPU provider. Then the model alone (`tools score-bench`, one core). Not part of CI.
#   scripts/bench-scoring.sh [records]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh >/dev/null
N=${1:-400000}
PORT=${BENCH_BROKER_PORT:-29292}
HTTP=${BENCH_HTTP_PORT:-29899}
OUT=$PWD/bench-out/scoring
source scripts/bench-lib.sh
for t in sc.in sc.out.plain sc.out.scored; do
  "$GUARD_BIN" tools create-topic --brokers "$B" --topic $t --partitions 4 >/dev/null
done
hostile_mix "$OUT/mix.jsonl"
"$GUARD_BIN" tools produce --brokers "$B" --topic sc.in --file "$OUT/mix.jsonl" --repeat 100 --count "$N" >/dev/null
run() { # name, extra route lines
  cat > "$OUT/$1.toml" <<EOT
[kafka]
brokers = "$B"
group_id = "sc-$1"
output_topic = "sc.out.$1"
[[routes]]
topic = "sc.in"
schema = "$PWD/schemas/shuttle.schema.json"
$2
[scoring]
execution_provider = "cpu"
[quarantine]
dir = "$OUT/quarantine-$1"
[server]
listen = "127.0.0.1:$HTTP"
EOT
  "$GUARD_BIN" run --config "$OUT/$1.toml" >"$OUT/$1.out" 2>"$OUT/$1.log" &
  local g=$!
  while [ "$(metric guard_source_records_total 2>/dev/null || echo 0)" -eq 0 ]; do sleep 0.01; done
  local t0; t0=$(date +%s.%N)
  while :; do
    local n=$(( $(metric guard_sink_delivered_records_total) + $(metric guard_pipeline_records_quarantined_total) ))
    [ "$n" -ge "$N" ] && break
    sleep 0.02
  done
  local t1; t1=$(date +%s.%N)
  kill -TERM $g; wait $g || true
  python3 -c "import json;n=$N;s=$t1-$t0;print(json.dumps({'run':'$1','records':n,'seconds':round(s,3),'records_per_sec':round(n/s)}))" | tee "$OUT/$1.json"
}
run plain ""
run scored "anomaly_model = \"$PWD/models/shuttle/anomaly.onnx\""
python3 - "$OUT" <<'PY'
import json, sys
a = json.load(open(f"{sys.argv[1]}/plain.json")); b = json.load(open(f"{sys.argv[1]}/scored.json"))
print(json.dumps({"scored_vs_plain": round(b["records_per_sec"] / a["records_per_sec"], 3)}))
PY
echo "--- model alone, one core"
pin "$GUARD_BIN" tools score-bench --model models/shuttle/anomaly.onnx --input .data/shuttle.jsonl --schema schemas/shuttle.schema.json --batch 1024 --batch 8192
