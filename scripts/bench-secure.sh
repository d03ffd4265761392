#!/usr/bin/env bash
# Throughput of the guard over the same backlog, in one run on this machine, four ways:
#   plain       plaintext Kafka, quarantine in a local folder (the bench-e2e.sh shape);
#   tls         Kafka over TLS (Tansu behind stunnel, as in tests/tls.rs), local folder;
#   s3          plaintext Kafka, quarantine in S3-compatible object storage (s3s-fs);
#   tls+s3      both.
# Each guard reads its own copy of the same 400k records (1% hostile) from a fresh group.
# Not part of CI. Usage: scripts/bench-secure.sh [records]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --tests >/dev/null
N=${1:-400000}
PORT=${BENCH_BROKER_PORT:-29092}
HTTP=${BENCH_HTTP_PORT:-29898}
OUT=$PWD/bench-out/secure
mkdir -p "$(dirname "$OUT")"
source scripts/bench-lib.sh
TPLAIN=$((PORT + 1)); TLS=$((PORT + 2)); S3PORT=$((PORT + 3))

# A CA and a server certificate for 127.0.0.1; stunnel in front of a second broker that
# advertises the TLS port, so every connection to it is TLS.
(cd "$OUT" && openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 -subj /CN=bench-ca 2>/dev/null &&
  openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj /CN=127.0.0.1 2>/dev/null &&
  printf 'subjectAltName=IP:127.0.0.1\n' > ext &&
  openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 2 -extfile ext 2>/dev/null)
"$TANSU_BIN" broker --storage-engine memory://tansu/ --listener-url "tcp://127.0.0.1:$TPLAIN" --advertised-listener-url "tcp://127.0.0.1:$TLS" >"$OUT/broker-tls.log" 2>&1 &
pids+=($!)
printf 'foreground = yes\npid =\n[kafka]\naccept = 127.0.0.1:%s\nconnect = 127.0.0.1:%s\ncert = %s\nkey = %s\n' \
  "$TLS" "$TPLAIN" "$OUT/server.pem" "$OUT/server.key" > "$OUT/stunnel.conf"
STUNNEL=$(command -v stunnel4 || command -v stunnel)
"$STUNNEL" "$OUT/stunnel.conf" >"$OUT/stunnel.log" 2>&1 &
pids+=($!)
mkdir -p "$OUT/s3/bench"
"$S3S_FS_BIN" --host 127.0.0.1 --port "$S3PORT" --access-key bench --secret-key bench-secret "$OUT/s3" >"$OUT/s3.log" 2>&1 &
pids+=($!)
for p in $TLS $S3PORT; do for _ in $(seq 100); do (echo >/dev/tcp/127.0.0.1/$p) 2>/dev/null && break; sleep 0.1; done; done
TLSB=127.0.0.1:$TLS
X=(-X security.protocol=SSL -X "ssl.ca.location=$OUT/ca.pem")

hostile_mix "$OUT/mix.jsonl"
for v in plain s3; do "$GUARD_BIN" tools create-topic --brokers "$B" --topic "in.$v" --partitions 4 >/dev/null; "$GUARD_BIN" tools create-topic --brokers "$B" --topic "out.$v" --partitions 4 >/dev/null; done
for v in tls tls-s3; do "$GUARD_BIN" tools create-topic --brokers "$TLSB" "${X[@]}" --topic "in.$v" --partitions 4 >/dev/null; "$GUARD_BIN" tools create-topic --brokers "$TLSB" "${X[@]}" --topic "out.$v" --partitions 4 >/dev/null; done
for v in plain s3; do "$GUARD_BIN" tools produce --brokers "$B" --topic "in.$v" --file "$OUT/mix.jsonl" --count "$N" >/dev/null; done
for v in tls tls-s3; do "$GUARD_BIN" tools produce --brokers "$TLSB" "${X[@]}" --topic "in.$v" --file "$OUT/mix.jsonl" --count "$N" >/dev/null; done

now() { date +%s.%N; }
run_one() { # variant brokers kafka-properties quarantine-lines
  local v=$1
  cat > "$OUT/guard-$v.toml" <<EOT
[kafka]
brokers = "$2"
group_id = "bench-$v"
output_topic = "out.$v"
[kafka.properties]
$3
[[routes]]
topic = "in.$v"
schema = "$PWD/schemas/shuttle.schema.json"
[quarantine]
$4
[server]
listen = "127.0.0.1:$HTTP"
EOT
  AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench-secret "$GUARD_BIN" run --config "$OUT/guard-$v.toml" >"$OUT/guard-$v.out" 2>"$OUT/guard-$v.log" &
  local g=$!; pids+=($g)
  while [ "$(metric guard_source_records_total 2>/dev/null || echo 0)" -eq 0 ]; do sleep 0.01; done
  local t0 t1; t0=$(now)
  wait_judged "$N" "$g"
  t1=$(now)
  python3 -c "import json;n=$N;s=$t1-$t0;print(json.dumps({'variant':'$v','records':n,'seconds':round(s,3),'records_per_sec':round(n/s)}))" | tee "$OUT/$v.json"
  kill -TERM $g; wait $g || true
}
TLSP=$'"security.protocol" = "SSL"\n"ssl.ca.location" = "'"$OUT"'/ca.pem"'
S3Q=$'url = "s3://bench/q"\nendpoint = "http://127.0.0.1:'"$S3PORT"$'"\nallow_http = true'
run_one plain "$B" "" "dir = \"$OUT/q-plain\""
run_one tls "$TLSB" "$TLSP" "dir = \"$OUT/q-tls\""
run_one s3 "$B" "" "${S3Q/q\"/q-s3\"}"
run_one tls-s3 "$TLSB" "$TLSP" "${S3Q/q\"/q-tls-s3\"}"

python3 - "$OUT" <<'PY'
import json, sys, os
o = sys.argv[1]
r = {v: json.load(open(os.path.join(o, f"{v}.json")))["records_per_sec"] for v in ["plain", "tls", "s3", "tls-s3"]}
print("\n=== guard throughput, same backlog, same run")
for v in ["plain", "tls", "s3", "tls-s3"]:
    print(f"{v:<8} {r[v]:>9} records/s  ({100*r[v]/r['plain']:.0f}% of plain)")
PY
