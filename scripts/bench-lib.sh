# Sourced by the bench scripts (after `cd` to the repository root): build the guard, a fresh
# output folder $OUT, an in-memory Tansu broker on $PORT (address $B) stopped on exit together
# with every pid added to `pids`, and small helpers.
source scripts/env.sh
B=127.0.0.1:$PORT
cargo build --release --locked --bin ingest-guard >/dev/null 2>&1
rm -rf "$OUT" && mkdir -p "$OUT"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
"$TANSU_BIN" broker --storage-engine memory://tansu/ --listener-url "tcp://$B" --advertised-listener-url "tcp://$B" >"$OUT/broker.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do (echo >/dev/tcp/127.0.0.1/$PORT) 2>/dev/null && break; sleep 0.1; done

# Sum of a guard metric over its label sets, from the guard listening on $HTTP.
metric() { curl -sf "http://127.0.0.1:$HTTP/metrics" | awk -v m="$1" '$1 ~ "^"m"({|$)" {s+=$2} END {printf "%d", s}'; }
# Run on one core when taskset exists.
pin() { if command -v taskset >/dev/null; then taskset -c 0 "$@"; else "$@"; fi; }
# Real Shuttle rows with every 100th replaced by a hostile one (1e999), into $1.
hostile_mix() { awk 'NR % 100 == 0 {print "{\"source\":\"x\",\"features\":[1e999],\"label\":0}"; next} {print}' .data/shuttle.jsonl > "$1"; }
# Wait until the guard on $HTTP has delivered or quarantined $1 records; stop it (pid $2) and
# fail when it reports a partition stuck on an unreadable batch instead.
wait_judged() {
  local done_n
  while :; do
    done_n=$(( $(metric guard_sink_delivered_records_total) + $(metric guard_pipeline_records_quarantined_total) ))
    [ "$done_n" -ge "$1" ] && return 0
    if curl -sf "http://127.0.0.1:$HTTP/readyz" 2>/dev/null | grep -q '"unreadable"'; then
      echo "bench: the guard stopped on an unreadable batch:" >&2
      curl -s "http://127.0.0.1:$HTTP/readyz" >&2
      kill -TERM "$2"
      return 1
    fi
    sleep 0.02
  done
}
