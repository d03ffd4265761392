#!/usr/bin/env bash
# End-to-end benchmark through a local broker on this machine (broker, producer and guard share
# it). Measures, in one run and against the same broker and client library:
#   1. throughput of a bare pass-through (consume + re-produce the same bytes, no checks);
#   2. throughput of the guard over the same backlog (limits + decode + schema + forward/quarantine);
#   3. p50/p99 record latency (receive time - record timestamp) at a fixed offered rate, guard
#      and pass-through.
# Not part of CI. Usage: scripts/bench-e2e.sh [records] [latency-rate]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh >/dev/null
N=${1:-400000}
RATE=${2:-20000}
LAT_N=$((RATE * 10))
PORT=${BENCH_BROKER_PORT:-29092}
HTTP=${BENCH_HTTP_PORT:-29898}
OUT=$PWD/bench-out
source scripts/bench-lib.sh
for t in bench.in bench.out bench.pt lat.in lat.out latpt.in latpt.out; do
  "$GUARD_BIN" tools create-topic --brokers "$B" --topic $t --partitions 4 >/dev/null
done
# 1% hostile records mixed into real Shuttle rows.
hostile_mix "$OUT/mix.jsonl"
"$GUARD_BIN" tools produce --brokers "$B" --topic bench.in --file "$OUT/mix.jsonl" --count "$N"

echo "--- pass-through baseline"
"$GUARD_BIN" tools passthrough --brokers "$B" --from bench.in --to bench.pt --count "$N" --group pt | tee "$OUT/passthrough.json"

cat > "$OUT/guard.toml" <<EOT
[kafka]
brokers = "$B"
group_id = "bench-guard"
output_topic = "bench.out"
[[routes]]
topic = "bench.in"
schema = "$PWD/schemas/shuttle.schema.json"
[[routes]]
topic = "lat.in"
schema = "$PWD/schemas/shuttle.schema.json"
[quarantine]
dir = "$OUT/quarantine"
[server]
listen = "127.0.0.1:$HTTP"
EOT
sed 's/output_topic = "bench.out"/output_topic = "lat.out"/' "$OUT/guard.toml" > "$OUT/guard-lat.toml"
now() { date +%s.%N; }

echo "--- guard throughput"
"$GUARD_BIN" run --config "$OUT/guard.toml" >"$OUT/guard.out" 2>"$OUT/guard.log" &
g=$!; pids+=($g)
while [ "$(metric guard_source_records_total 2>/dev/null || echo 0)" -eq 0 ]; do sleep 0.01; done
t0=$(now)
wait_judged "$N" "$g"
t1=$(now)
python3 -c "import json;n=$N;s=$t1-$t0;print(json.dumps({'guard_records':n,'seconds':round(s,3),'records_per_sec':round(n/s)}))" | tee "$OUT/guard.json"
kill -TERM $g; wait $g || true

echo "--- latency at $RATE records/s offered ($LAT_N records), guard"
"$GUARD_BIN" run --config "$OUT/guard-lat.toml" >"$OUT/guard-lat.out" 2>"$OUT/guard-lat.log" &
g=$!; pids+=($g)
for _ in $(seq 300); do curl -sf "http://127.0.0.1:$HTTP/readyz" >/dev/null && break; sleep 0.1; done
"$GUARD_BIN" tools latency --brokers "$B" --topic lat.out --count $((LAT_N * 99 / 100)) > "$OUT/lat-guard.json" &
l=$!
"$GUARD_BIN" tools produce --brokers "$B" --topic lat.in --file .data/shuttle.jsonl --count "$LAT_N" --rate "$RATE"
wait $l; cat "$OUT/lat-guard.json"
kill -TERM $g; wait $g || true

echo "--- latency at $RATE records/s offered, pass-through"
"$GUARD_BIN" tools passthrough --brokers "$B" --from latpt.in --to latpt.out --count "$LAT_N" --group latpt > "$OUT/lat-pt-run.json" &
p=$!
sleep 1
"$GUARD_BIN" tools latency --brokers "$B" --topic latpt.out --count "$LAT_N" > "$OUT/lat-pt.json" &
l=$!
"$GUARD_BIN" tools produce --brokers "$B" --topic latpt.in --file .data/shuttle.jsonl --count "$LAT_N" --rate "$RATE"
wait $l; wait $p || true; cat "$OUT/lat-pt.json"

python3 - "$OUT" <<'PY'
import json, sys, os
o = sys.argv[1]
pt = json.load(open(os.path.join(o, "passthrough.json")))
g = json.load(open(os.path.join(o, "guard.json")))
lg = json.load(open(os.path.join(o, "lat-guard.json")))
lp = json.load(open(os.path.join(o, "lat-pt.json")))
print("\n=== end-to-end (same broker, same client library, same run)")
print(f"pass-through   {pt['records_per_sec']:>9} records/s")
print(f"guard          {g['records_per_sec']:>9} records/s   ({100*g['records_per_sec']/pt['records_per_sec']:.0f}% of pass-through)")
print(f"latency guard        p50 {lg['p50_ms']} ms  p99 {lg['p99_ms']} ms")
print(f"latency pass-through p50 {lp['p50_ms']} ms  p99 {lp['p99_ms']} ms")
PY
