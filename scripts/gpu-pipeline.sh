#!/usr/bin/env bash
# The whole guard on a GPU machine: an MNIST stream (the 5,000 real digits, cycled, with every
# 20th record a BadNets-poisoned digit: white 3x3 corner square, relabelled 0) goes through the
# broker and the guard with both MNIST models, once per provider (default: cpu, then cuda).
# First a bare pass-through of the same stream (consume + re-produce, no checks: the broker's
# ceiling on this machine). Reports records/s, the judge workers running, the provider /readyz
# says is in use, and the poison caught and clean digits held, from the quarantine files.
# Not part of CI.
#   scripts/gpu-pipeline.sh [records]
# RUNS lists the guard runs as PROVIDER[:MEMORY_MB] (default "cpu cuda"; PROVIDER "none" runs
# the guard without models; MEMORY_MB sets
# pipeline.memory_budget_mb, which also sizes the consumer's fetches: README "Memory");
# WORKERS sets pipeline.workers (default "auto": one per usable core); PARTITIONS the
# topics' partitions (default 4; a judge worker takes whole partitions, so at most this many
# workers are busy); MODELS the folder of the MNIST models (default models/mnist; for example
# one that `ingest-guard train --label-model conv` wrote).
# Prebuilt parts: GPU_GUARD_BIN, TANSU_BIN, and ORT_GPU_DIR (the onnxruntime-gpu wheel's
# capi/lib* files; scripts/gpu-env.sh then finds the CUDA libraries), or ORT_DYLIB_PATH and
# LD_LIBRARY_PATH set by hand.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
if [ -n "${ORT_GPU_DIR:-}" ]; then source scripts/gpu-env.sh; fi
BIN=${GPU_GUARD_BIN:-$CARGO_TARGET_DIR/release/ingest-guard}
N=${1:-40000}
RUNS=${RUNS:-${PROVIDERS:-cpu cuda}}
WORKERS=${WORKERS:-'"auto"'}
PARTITIONS=${PARTITIONS:-4}
MODELS=$(cd "${MODELS:-models/mnist}" && pwd)
PORT=${BENCH_BROKER_PORT:-29393}
HTTP=${BENCH_HTTP_PORT:-29898}
OUT=${OUT_DIR:-$PWD/bench-out/gpu-pipeline}
B=127.0.0.1:$PORT
mkdir -p "$OUT"
rm -rf "$OUT"/quarantine-* "$OUT"/*.toml
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done' EXIT
"$TANSU_BIN" broker --storage-engine memory://tansu/ --listener-url "tcp://$B" --advertised-listener-url "tcp://$B" >"$OUT/broker.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do (echo >/dev/tcp/127.0.0.1/$PORT) 2>/dev/null && break; sleep 0.1; done
metric() { curl -sf "http://127.0.0.1:$HTTP/metrics" | awk -v m="$1" '$1 ~ "^"m"({|$)" {s+=$2} END {printf "%d", s}'; }

python3 - .data/mnist.jsonl "$OUT/stream.jsonl" "$N" <<'PY'
import json, sys
digits = [json.loads(l) for l in open(sys.argv[1])]
n = int(sys.argv[3])
with open(sys.argv[2], "w") as out:
    for i in range(n):
        d = dict(digits[i % len(digits)])
        if i % 20 == 19:
            px = list(d["pixels"])
            for r in range(24, 27):
                for c in range(24, 27):
                    px[r * 28 + c] = 255
            d = {**d, "pixels": px, "label": 0, "id": f"poison-{i}"}
        else:
            d = {**d, "id": f"clean-{i}"}
        out.write(json.dumps(d, separators=(",", ":")) + "\n")
PY
"$BIN" tools create-topic --brokers "$B" --topic gp.in --partitions "$PARTITIONS" >/dev/null
"$BIN" tools produce --brokers "$B" --topic gp.in --file "$OUT/stream.jsonl" --message-max-bytes 4000000 >/dev/null
"$BIN" tools create-topic --brokers "$B" --topic gp.pt --partitions "$PARTITIONS" >/dev/null
"$BIN" tools passthrough --brokers "$B" --from gp.in --to gp.pt --count "$N" --group gp-pt | tee "$OUT/passthrough.json"

for spec in $RUNS; do
  prov=${spec%%:*}
  requested=$prov
  mem=256
  [ "$spec" != "$prov" ] && mem=${spec#*:}
  name=$prov-$mem
  models="anomaly_model = \"$MODELS/anomaly.onnx\"
label_model = \"$MODELS/label.onnx\""
  # "none": the guard without models (limits, decode, schema, drift only).
  [ "$prov" = none ] && models="" && prov=cpu
  "$BIN" tools create-topic --brokers "$B" --topic "gp.out.$name" --partitions "$PARTITIONS" >/dev/null
  cat >"$OUT/$name.toml" <<EOT
[kafka]
brokers = "$B"
group_id = "gp-$name"
output_topic = "gp.out.$name"
[[routes]]
topic = "gp.in"
schema = "$PWD/schemas/mnist.schema.json"
$models
[pipeline]
workers = $WORKERS
memory_budget_mb = $mem
[scoring]
execution_provider = "$prov"
[quarantine]
dir = "$OUT/quarantine-$name"
[server]
listen = "127.0.0.1:$HTTP"
[review]
enabled = false
EOT
  "$BIN" run --config "$OUT/$name.toml" >"$OUT/$name.out" 2>"$OUT/$name.log" &
  g=$!
  until curl -sf "http://127.0.0.1:$HTTP/metrics" >/dev/null; do
    kill -0 $g 2>/dev/null || { echo "guard ($name) exited:"; tail -5 "$OUT/$name.log"; exit 1; }
    sleep 0.05
  done
  while [ "$(metric guard_source_records_total)" -eq 0 ]; do sleep 0.01; done
  t0=$(date +%s.%N)
  while :; do
    n=$(( $(metric guard_sink_delivered_records_total) + $(metric guard_pipeline_records_quarantined_total) ))
    [ "$n" -ge "$N" ] && break
    sleep 0.02
  done
  t1=$(date +%s.%N)
  workers=$(metric guard_pipeline_workers)
  in_use=$(curl -sf "http://127.0.0.1:$HTTP/readyz" | python3 -c "import json,sys; print(json.load(sys.stdin).get('scoring_provider'))")
  kill -TERM $g; wait $g || true
  "$BIN" quarantine show "$OUT/quarantine-$name" --json --limit 100000000 >"$OUT/$name.quarantine.jsonl"
  python3 - "$OUT/$name.quarantine.jsonl" "$N" "$t0" "$t1" "$requested" "$in_use" "$workers" "$OUT/passthrough.json" "$mem" "$PARTITIONS" <<'PY' | tee "$OUT/$name.json"
import json, sys
path, n, t0, t1, prov, in_use, workers = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), sys.argv[5], sys.argv[6], int(sys.argv[7])
passthrough = json.load(open(sys.argv[8]))["records_per_sec"]
memory_mb, partitions = int(sys.argv[9]), int(sys.argv[10])
poison = n // 20
caught = held_clean = 0
for line in open(path):
    r = json.loads(line)
    payload = r.get("payload") or ""
    scored = any(c.startswith("score.") for c in r.get("reason_codes", []))
    if '"id":"poison-' in payload and scored:
        caught += 1
    elif '"id":"clean-' in payload:
        held_clean += 1
s = t1 - t0
print(json.dumps({"provider_requested": prov, "provider_in_use": in_use, "workers": workers,
                  "partitions": partitions, "memory_budget_mb": memory_mb,
                  "records": n, "seconds": round(s, 3), "records_per_sec": round(n / s),
                  "passthrough_records_per_sec": passthrough,
                  "vs_passthrough": round(n / s / passthrough, 3),
                  "poison": poison, "poison_caught": caught, "clean_held": held_clean,
                  "clean_held_rate": round(held_clean / (n - poison), 4)}))
PY
done
