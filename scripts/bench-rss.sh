#!/usr/bin/env bash
# Memory does not grow with traffic: run the guard with drift monitoring (baseline, DDSketch
# quantiles, per-source table, profiles and events topics) over 10 million records and read
# its resident set size after 1 million and after 10 million. Not part of CI (about 2 minutes
# on 2 cores, ~1 GB of broker memory).
#   scripts/bench-rss.sh [records]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh >/dev/null
N=${1:-10000000}
PORT=${BENCH_BROKER_PORT:-29192}
HTTP=${BENCH_HTTP_PORT:-29998}
OUT=$PWD/bench-out/rss
source scripts/bench-lib.sh
"$GUARD_BIN" tools create-topic --brokers "$B" --topic rss.in --partitions 4 >/dev/null
# 1 % hostile rows among real Shuttle rows; a baseline from 20,000 normal rows.
hostile_mix "$OUT/mix.jsonl"
awk '/"label":0}/ && n++ < 20000' .data/shuttle.jsonl > "$OUT/trusted.jsonl"
"$GUARD_BIN" baseline --schema schemas/shuttle.schema.json --input "$OUT/trusted.jsonl" --out "$OUT/baseline.json" >/dev/null
cat > "$OUT/guard.toml" <<EOT
[kafka]
brokers = "$B"
group_id = "rss-guard"
[pipeline]
mode = "monitor"
[[routes]]
topic = "rss.in"
schema = "$PWD/schemas/shuttle.schema.json"
baseline = "$OUT/baseline.json"
[drift]
events_topic = "rss.drift"
profiles_topic = "rss.profiles"
[quarantine]
dir = "$OUT/quarantine"
[server]
listen = "127.0.0.1:$HTTP"
EOT
rss() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
"$GUARD_BIN" run --config "$OUT/guard.toml" >"$OUT/guard.out" 2>"$OUT/guard.log" &
g=$!; pids+=($g)
# Offered at a steady rate below the guard's capacity, so the working set (prefetch, batches
# in flight, quarantine buffers) is the same at 1 million and at 10 million records; RSS is
# sampled every million while running. (With bursts, RSS swings by ±15 MiB with the backlog
# whatever the count, and glibc keeps the peak.)
RATE=${RATE:-100000}
t0=$(date +%s); next=1000000; : > "$OUT/samples.jsonl"
"$GUARD_BIN" tools produce --brokers "$B" --topic rss.in --file "$OUT/mix.jsonl" --repeat 1000 --count "$N" --rate "$RATE" >"$OUT/produce.log" &
pids+=($!)
while :; do
  n=$(metric guard_source_records_total 2>/dev/null || echo 0)
  if [ "$n" -ge "$next" ]; then
    r=$(rss $g); echo "{\"records\":$n,\"rss_kib\":$r}" | tee -a "$OUT/samples.jsonl"
    [ "$next" -eq 1000000 ] && { at1=$r; n1=$n; }
    next=$((next + 1000000))
  fi
  [ "$n" -ge "$N" ] && break
  sleep 0.1
done
at10=$(rss $g); n10=$n
windows=$(metric guard_stats_windows_total)
python3 -c "import json;print(json.dumps({'rate':$RATE,'records_at_first':$n1,'rss_kib_at_1m':$at1,'records_at_end':$n10,'rss_kib_at_end':$at10,'growth_kib':$at10-$at1,'peak_rss_kib':$(awk '/^VmHWM/ {print $2}' /proc/$g/status),'drift_windows':$windows,'seconds':$(date +%s)-$t0}))" | tee "$OUT/rss.json"
