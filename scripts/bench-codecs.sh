#!/usr/bin/env bash
# Throughput by input codec, and against an earlier build, in one run on one local broker.
# The same backlog of N real Shuttle records (1 % hostile) is produced twice: uncompressed and
# with zstd (what a producer with compression.type=zstd sends). Measured, one after the other:
#   1. bare pass-through (consume + re-produce, no checks) of the uncompressed backlog;
#   2. the guard over the uncompressed backlog, and over the zstd one (new group each);
#   3. with OLD_GUARD_BIN=path: that build over the uncompressed backlog (before/after).
# Each guard run starts on a full backlog and is timed from its first record to its last.
# BENCH_GUARD_EXTRA adds TOML lines to each guard's config (after [[routes]]), e.g. to try
# librdkafka settings: BENCH_GUARD_EXTRA=$'[kafka.consumer_properties]\n"fetch.max.bytes" = "8192"'.
# Not part of CI. Usage: [OLD_GUARD_BIN=...] scripts/bench-codecs.sh [records]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh >/dev/null
N=${1:-400000}
PORT=${BENCH_BROKER_PORT:-29192}
HTTP=${BENCH_HTTP_PORT:-29998}
OUT=$PWD/bench-out/codecs
mkdir -p "$(dirname "$OUT")"
source scripts/bench-lib.sh
hostile_mix "$OUT/mix.jsonl"
for codec in none zstd; do
  "$GUARD_BIN" tools create-topic --brokers "$B" --topic "in.$codec" --partitions 4 >/dev/null
  "$GUARD_BIN" tools produce --brokers "$B" --topic "in.$codec" --file "$OUT/mix.jsonl" --count "$N" --compression "$codec" >/dev/null
done

echo "--- pass-through, uncompressed"
"$GUARD_BIN" tools passthrough --brokers "$B" --from in.none --to pt.out --count "$N" --group pt | tee "$OUT/passthrough.json"

now() { date +%s.%N; }
# run_guard NAME BINARY INPUT-TOPIC: time the guard over the whole backlog.
run_guard() {
  local name=$1 bin=$2 topic=$3
  "$GUARD_BIN" tools create-topic --brokers "$B" --topic "out.$name" --partitions 4 >/dev/null
  cat > "$OUT/$name.toml" <<EOT
[kafka]
brokers = "$B"
group_id = "bench-$name"
output_topic = "out.$name"
[[routes]]
topic = "$topic"
schema = "$PWD/schemas/shuttle.schema.json"
${BENCH_GUARD_EXTRA:-}
[quarantine]
dir = "$OUT/quarantine-$name"
[server]
listen = "127.0.0.1:$HTTP"
EOT
  "$bin" run --config "$OUT/$name.toml" >"$OUT/$name.out" 2>"$OUT/$name.log" &
  local g=$!
  pids+=($g)
  while [ "$(metric guard_source_records_total 2>/dev/null || echo 0)" -eq 0 ]; do sleep 0.01; done
  local t0 t1
  t0=$(now)
  wait_judged "$N" "$g" || return 1
  t1=$(now)
  local rss
  rss=$(awk '/VmHWM/ {print $2}' "/proc/$g/status")
  python3 -c "import json;n=$N;s=$t1-$t0;print(json.dumps({'run':'$name','records':n,'seconds':round(s,3),'records_per_sec':round(n/s),'peak_rss_mib':$rss//1024}))" | tee "$OUT/$name.json"
  kill -TERM $g; wait $g || true
}

echo "--- guard, uncompressed input"
run_guard new-none "$GUARD_BIN" in.none
echo "--- guard, zstd input"
run_guard new-zstd "$GUARD_BIN" in.zstd
if [ -n "${OLD_GUARD_BIN:-}" ]; then
  echo "--- earlier build ($OLD_GUARD_BIN), uncompressed input"
  run_guard old-none "$OLD_GUARD_BIN" in.none
fi

python3 - "$OUT" <<'PY'
import json, sys, os
o = sys.argv[1]
pt = json.load(open(os.path.join(o, "passthrough.json")))["records_per_sec"]
runs = {r: json.load(open(os.path.join(o, r + ".json"))) for r in ("new-none", "new-zstd", "old-none") if os.path.exists(os.path.join(o, r + ".json"))}
print("\n=== throughput (same broker, same backlog, same run)")
print(f"pass-through (uncompressed)   {pt:>9} records/s")
for name, r in runs.items():
    print(f"{name:<29} {r['records_per_sec']:>9} records/s  ({100*r['records_per_sec']/pt:.0f}% of pass-through, peak RSS {r['peak_rss_mib']} MiB)")
if "new-none" in runs and "new-zstd" in runs:
    print(f"zstd / uncompressed: {100*runs['new-zstd']['records_per_sec']/runs['new-none']['records_per_sec']:.0f}%")
if "new-none" in runs and "old-none" in runs:
    print(f"new / old (uncompressed): {100*runs['new-none']['records_per_sec']/runs['old-none']['records_per_sec']:.0f}%")
PY
