#!/usr/bin/env bash
# The whole guard on a GPU machine: an MNIST stream (the 5,000 real digits, cycled, with every
# 20th record a BadNets-poisoned digit: white 3x3 corner square, relabelled 0) goes through the
# broker and the guard with both MNIST models, once per provider (default: cpu, then cuda).
# Reports records/s, the provider /readyz says is in use, and the poison caught and clean
# digits held, from the quarantine files. Not part of CI.
#   scripts/gpu-pipeline.sh [records]
# Prebuilt parts: GPU_GUARD_BIN, ORT_DYLIB_PATH (a CUDA build of ONNX Runtime), TANSU_BIN,
# LD_LIBRARY_PATH with the CUDA libraries (see scripts/gpu-check.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
BIN=${GPU_GUARD_BIN:-$CARGO_TARGET_DIR/release/ingest-guard}
N=${1:-40000}
PROVIDERS=${PROVIDERS:-cpu cuda}
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
"$BIN" tools create-topic --brokers "$B" --topic gp.in --partitions 4 >/dev/null
"$BIN" tools produce --brokers "$B" --topic gp.in --file "$OUT/stream.jsonl" --message-max-bytes 4000000 >/dev/null

for prov in $PROVIDERS; do
  "$BIN" tools create-topic --brokers "$B" --topic "gp.out.$prov" --partitions 4 >/dev/null
  cat >"$OUT/$prov.toml" <<EOT
[kafka]
brokers = "$B"
group_id = "gp-$prov"
output_topic = "gp.out.$prov"
[[routes]]
topic = "gp.in"
schema = "$PWD/schemas/mnist.schema.json"
anomaly_model = "$PWD/models/mnist/anomaly.onnx"
label_model = "$PWD/models/mnist/label.onnx"
[scoring]
execution_provider = "$prov"
[quarantine]
dir = "$OUT/quarantine-$prov"
[server]
listen = "127.0.0.1:$HTTP"
[review]
enabled = false
EOT
  "$BIN" run --config "$OUT/$prov.toml" >"$OUT/$prov.out" 2>"$OUT/$prov.log" &
  g=$!
  until curl -sf "http://127.0.0.1:$HTTP/metrics" >/dev/null; do
    kill -0 $g 2>/dev/null || { echo "guard ($prov) exited:"; tail -5 "$OUT/$prov.log"; exit 1; }
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
  in_use=$(curl -sf "http://127.0.0.1:$HTTP/readyz" | python3 -c "import json,sys; print(json.load(sys.stdin).get('scoring_provider'))")
  kill -TERM $g; wait $g || true
  "$BIN" quarantine show "$OUT/quarantine-$prov" --json --limit 100000000 >"$OUT/$prov.quarantine.jsonl"
  python3 - "$OUT/$prov.quarantine.jsonl" "$N" "$t0" "$t1" "$prov" "$in_use" <<'PY' | tee "$OUT/$prov.json"
import json, sys
path, n, t0, t1, prov, in_use = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), sys.argv[5], sys.argv[6]
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
print(json.dumps({"provider_requested": prov, "provider_in_use": in_use, "records": n,
                  "seconds": round(s, 3), "records_per_sec": round(n / s),
                  "poison": poison, "poison_caught": caught, "clean_held": held_clean,
                  "clean_held_rate": round(held_clean / (n - poison), 4)}))
PY
done
