#!/usr/bin/env bash
# The window scan's hold-back: 20,000 MNIST records through a local Tansu and the guard with the
# three committed MNIST models, the scan on (SCAN=true) or off (SCAN=false). Prints the clean
# topic's latency percentiles, the scan's hold metrics and the guard's peak RSS (BENCHMARKS.md).
#   SCAN=true scripts/bench-scan-hold.sh
set -e
SCAN=${SCAN:-true}
cd "$(dirname "$0")/.."; ROOT=$PWD; source scripts/env.sh; BIN=$CARGO_TARGET_DIR/release/ingest-guard; W=$(mktemp -d); trap "rm -rf $W" EXIT
PORT=19293
.tools/tansu broker --storage-engine memory://tansu/ --listener-url tcp://127.0.0.1:$PORT --advertised-listener-url tcp://127.0.0.1:$PORT > $W/tansu.log 2>&1 &
TP=$!
sleep 2
$BIN tools create-topic --brokers 127.0.0.1:$PORT --topic in --partitions 2 >/dev/null
$BIN tools create-topic --brokers 127.0.0.1:$PORT --topic out --partitions 2 >/dev/null
# 20,000 MNIST rows cycled (no campaign): a steady stream
python3 -c "
import itertools
rows=open('.data/mnist.jsonl').read().splitlines()
open('$W/in.jsonl','w').write('\n'.join(itertools.islice(itertools.cycle(rows),20000))+'\n')"
cat > $W/g.toml <<EOT
[kafka]
brokers = "127.0.0.1:$PORT"
group_id = "hb"
output_topic = "out"
[server]
listen = "127.0.0.1:19898"
[quarantine]
dir = "$W/q"
[scoring]
execution_provider = "cpu"
library = "$ROOT/.tools/onnxruntime/libonnxruntime.so.1.31.1"
[scan]
enabled = $SCAN
[[routes]]
topic = "in"
schema = "$ROOT/schemas/mnist.schema.json"
anomaly_model = "$ROOT/models/mnist/anomaly.onnx"
label_model = "$ROOT/models/mnist/label.onnx"
adversarial_model = "$ROOT/models/mnist/adversarial.onnx"
EOT
$BIN run -c $W/g.toml > $W/guard.log 2>&1 &
GP=$!
sleep 3
$BIN tools produce --brokers 127.0.0.1:$PORT --topic in --file $W/in.jsonl >/dev/null
$BIN tools latency --brokers 127.0.0.1:$PORT --topic out --count 19000 2>&1 | tail -2
sleep 3
curl -s 127.0.0.1:19898/metrics | grep -E "^guard_scan_hold_duration_seconds_(sum|count)|^guard_scan_flagged_total|^process_resident_memory_bytes|guard_pipeline_records_passed_total" 
grep VmHWM /proc/$GP/status
kill $GP $TP; wait 2>/dev/null || true
