#!/usr/bin/env bash
# A CPU profile of the guard's scored path (issue 12): N real Shuttle records with 1 % hostile
# ones, the guard with the Shuttle anomaly model (CPU provider), under `perf record -g` (Debian's
# `linux-perf`). Prints the top of `perf report` (self and children) to bench-out/profile/.
# Not part of CI.   scripts/profile-scored.sh [records] [model: shuttle|none|mnist]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh >/dev/null
command -v perf >/dev/null || { echo "profile-scored: needs perf (apt-get install linux-perf)" >&2; exit 1; }
N=${1:-400000}
WHAT=${2:-shuttle}
PORT=${BENCH_BROKER_PORT:-29392}
HTTP=${BENCH_HTTP_PORT:-29999}
OUT=$PWD/bench-out/profile
source scripts/bench-lib.sh
"$GUARD_BIN" tools create-topic --brokers "$B" --topic p.in --partitions 4 >/dev/null
"$GUARD_BIN" tools create-topic --brokers "$B" --topic p.out --partitions 4 >/dev/null
case $WHAT in
  shuttle) SCHEMA=shuttle; MODELS="anomaly_model = \"$PWD/models/shuttle/anomaly.onnx\""; hostile_mix "$OUT/in.jsonl" ;;
  none) SCHEMA=shuttle; MODELS=""; hostile_mix "$OUT/in.jsonl" ;;
  mnist) SCHEMA=mnist; MODELS="anomaly_model = \"$PWD/models/mnist/anomaly.onnx\"
label_model = \"$PWD/models/mnist/label.onnx\""; cp .data/mnist.jsonl "$OUT/in.jsonl" ;;
esac
"$GUARD_BIN" tools produce --brokers "$B" --topic p.in --file "$OUT/in.jsonl" --repeat 1000 --count "$N" >/dev/null
cat > "$OUT/guard.toml" <<EOT
[kafka]
brokers = "$B"
group_id = "profile"
output_topic = "p.out"
[[routes]]
topic = "p.in"
schema = "$PWD/schemas/$SCHEMA.schema.json"
$MODELS
[scoring]
execution_provider = "cpu"
[quarantine]
dir = "$OUT/quarantine"
[server]
listen = "127.0.0.1:$HTTP"
EOT
perf record -F 499 --call-graph dwarf,32768 -o "$OUT/perf.data" -- "$GUARD_BIN" run --config "$OUT/guard.toml" >"$OUT/guard.out" 2>"$OUT/guard.log" &
g=$!; pids+=($g)
for _ in $(seq 300); do curl -sf "http://127.0.0.1:$HTTP/readyz" >/dev/null 2>&1 && break; sleep 0.05; done
wait_judged "$N" "$g"
kill -TERM "$(pgrep -f "ingest-guard run --config $OUT/guard.toml" | head -1)" 2>/dev/null || true
wait $g || true
perf report -i "$OUT/perf.data" --no-children --sort comm,dso,symbol --percent-limit 0.7 --stdio 2>/dev/null \
  | grep -v '^$' | grep '%' | head -60 > "$OUT/self.txt"
perf report -i "$OUT/perf.data" --no-children --sort comm --stdio 2>/dev/null | grep '%' > "$OUT/threads.txt"
echo "--- by thread"; cat "$OUT/threads.txt"
echo "--- self time, top symbols"; cat "$OUT/self.txt"
