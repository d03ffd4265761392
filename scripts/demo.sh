#!/usr/bin/env bash
# The README's first command: set up, start a local broker, build the guard, stream real
# Shuttle and MNIST records mixed with malformed, over-limit and schema-violating ones through
# it, and print a summary (records in, passed, quarantined by reason, where the files are).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
source scripts/env.sh
PORT=${DEMO_BROKER_PORT:-19092}
HTTP=${DEMO_HTTP_PORT:-19898}
OUT=$PWD/demo-out
BROKERS=127.0.0.1:$PORT

echo "demo: building ingest-guard (release; first build takes a few minutes on 2 cores)"
cargo build --release --locked --bin ingest-guard

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
rm -rf "$OUT" && mkdir -p "$OUT"
"$TANSU_BIN" broker --storage-engine memory://tansu/ --listener-url "tcp://$BROKERS" \
  --advertised-listener-url "tcp://$BROKERS" >"$OUT/broker.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do (echo >/dev/tcp/127.0.0.1/$PORT) 2>/dev/null && break; sleep 0.1; done
for t in training.shuttle training.mnist training.clean; do
  "$GUARD_BIN" tools create-topic --brokers "$BROKERS" --topic "$t" --partitions 2 >/dev/null
done

export GUARD__KAFKA__BROKERS="$BROKERS" GUARD__SERVER__LISTEN="127.0.0.1:$HTTP" GUARD__QUARANTINE__DIR="$OUT/quarantine"
"$GUARD_BIN" check --config config/demo.toml
"$GUARD_BIN" run --config config/demo.toml >"$OUT/summary.json" 2>"$OUT/guard.log" &
guard=$!
pids+=($guard)
for _ in $(seq 300); do curl -sf "http://127.0.0.1:$HTTP/readyz" >/dev/null && break; sleep 0.1; done
curl -sf "http://127.0.0.1:$HTTP/readyz" >/dev/null || { echo "demo: guard not ready"; tail -20 "$OUT/guard.log"; exit 1; }

produce() { "$GUARD_BIN" tools produce --brokers "$BROKERS" --message-max-bytes 30000000 "$@"; }
produce --topic training.shuttle --file .data/shuttle.jsonl
produce --topic training.mnist --file .data/mnist.jsonl
produce --topic training.shuttle --file .data/hostile-shuttle.jsonl
produce --topic training.mnist --file .data/hostile-mnist.jsonl
# Targeted poison: 50 BadNets images (a white 3x3 square in the corner, relabelled 0).
python3 - .data/mnist.jsonl "$OUT/badnets.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
with open(sys.argv[2], "w") as f:
    for r in [r for r in rows if r["label"] != 0][-50:]:
        for y in range(24, 27):
            for x in range(24, 27):
                r["pixels"][y * 28 + x] = 255
        r["label"], r["source"] = 0, "attacker"
        f.write(json.dumps(r, separators=(",", ":")) + "\n")
PY
produce --topic training.mnist --file "$OUT/badnets.jsonl"
total=$(cat .data/shuttle.jsonl .data/mnist.jsonl .data/hostile-shuttle.jsonl .data/hostile-mnist.jsonl "$OUT/badnets.jsonl" | wc -l)

metric() { curl -sf "http://127.0.0.1:$HTTP/metrics" | awk -v m="$1" '$1 ~ "^"m"({|$)" {s+=$2} END {printf "%d", s}'; }
for _ in $(seq 600); do
  [ "$(metric guard_source_records_total)" -ge "$total" ] && [ "$(metric guard_kafka_uncommitted_records)" -eq 0 ] && break
  sleep 0.2
done
kill -TERM "$guard"; wait "$guard" || { echo "demo: guard exited non-zero"; tail -20 "$OUT/guard.log"; exit 1; }

python3 - "$OUT/summary.json" "$total" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))["summary"]
print()
print("=== ingest-guard demo summary ===")
print(f"records produced      {int(sys.argv[2]):>8}")
print(f"records in            {s['records_in']:>8}")
print(f"passed (forwarded)    {s['passed']:>8}   -> topic training.clean")
print(f"quarantined           {s['quarantined']:>8}   in {s['quarantine_files']} Parquet file(s)")
for reason, n in sorted(s["by_reason"].items(), key=lambda kv: (-kv[1], kv[0])):
    print(f"  {reason:<28}{n:>6}")
print(f"quarantine folder     {s['quarantine_dir']}")
print("score.anomaly on Shuttle is mostly the data set's own outlier class (7 % of rows);")
print("the 50 BadNets images are caught by both MNIST models (score.anomaly, score.label).")
PY
echo
echo "scores and explanations of the poisoned images:"
"$GUARD_BIN" quarantine show "$OUT/quarantine" --json --limit 100000 | awk '/attacker/ && n++ < 2' | python3 -c 'import json,sys; [print(json.dumps({k: r.get(k) for k in ("offset","reason_codes","anomaly_score","label_score","explanation")})) for r in map(json.loads, sys.stdin)]'
echo
"$GUARD_BIN" quarantine ls --dir "$OUT/quarantine"
echo
echo "first quarantined records:"
"$GUARD_BIN" quarantine show "$OUT/quarantine" --limit 4
echo
echo "logs: $OUT/guard.log; inspect more with: $GUARD_BIN quarantine show $OUT/quarantine --json"
