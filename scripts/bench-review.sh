#!/usr/bin/env bash
# Review dashboard benchmark (issue 5): 1,000,000 quarantined rows in 100 files; the standalone
# server (`ingest-guard serve --quarantine`) answers the explorer's first page under a
# three-condition filter and a record detail. Reports the index build time, p50/p95 of each
# request over 100 requests (curl's total time, loopback), and the server's RSS.
#   scripts/bench-review.sh [ROWS] [FILES]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
ROWS=${1:-1000000}
FILES=${2:-100}
OUT=bench-out/review
DIR=$OUT/quarantine-$ROWS-$FILES
cargo build --release --quiet
if [ ! -d "$DIR" ]; then
  "$GUARD_BIN" tools review-fixture --out "$DIR" --rows "$ROWS" --files "$FILES"
fi
du -sh "$DIR"
PORT=19877
SHA=$(printf %s bench | sha256sum | cut -d' ' -f1)
rm -rf "$DIR/_review"
start=$(date +%s.%N)
"$GUARD_BIN" serve --quarantine "$DIR" --reviewer "bench:$SHA" --listen "127.0.0.1:$PORT" >"$OUT/serve.log" 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null || true' EXIT
until curl -sf "http://127.0.0.1:$PORT/review" >/dev/null; do sleep 0.05; done
ready=$(date +%s.%N)
echo "index built and serving after $(echo "$ready - $start" | bc) s"
AUTH="bench:bench"
FILTER="topic=training.shuttle&reason=score.anomaly&score=anomaly&score_min=5&sort=anomaly"
curl -sf -u "$AUTH" "http://127.0.0.1:$PORT/api/review/records?$FILTER&page_size=50" >"$OUT/page.json"
python3 -c "import json;d=json.load(open('$OUT/page.json'));print('filter matches', d['total'], 'rows; server-side', round(d['took_ms'],1), 'ms')"
mapfile -t KEYS < <(python3 -c "import json;[print(f\"{r['topic']}/{r['partition']}/{r['offset']}\") for r in json.load(open('$OUT/page.json'))['rows']]")
measure() { # label url...
  local label=$1; shift
  : >"$OUT/$label.times"
  for i in $(seq 1 100); do
    local url=${@:$(( (i - 1) % $# + 1 )):1}
    curl -s -o /dev/null -u "$AUTH" -w '%{time_total}\n' "$url" >>"$OUT/$label.times"
  done
  sort -n "$OUT/$label.times" | awk -v l="$label" '{a[NR]=$1} END {printf "%s: p50 %.1f ms, p95 %.1f ms, max %.1f ms (n=%d)\n", l, a[int(NR*0.5)]*1000, a[int(NR*0.95)]*1000, a[NR]*1000, NR}'
}
measure first_page "http://127.0.0.1:$PORT/api/review/records?$FILTER&page_size=50"
urls=()
for k in "${KEYS[@]}"; do urls+=("http://127.0.0.1:$PORT/api/review/records/$k"); done
measure record_detail "${urls[@]}"
measure unfiltered_first_page "http://127.0.0.1:$PORT/api/review/records?page_size=50"
echo "server RSS: $(awk '/VmRSS/ {print $2, $3}' /proc/$PID/status)"
