#!/usr/bin/env bash
# README screenshots of the review dashboard over the demo's quarantine (run scripts/demo.sh
# first): the explorer sorted by anomaly score, and the most anomalous MNIST record. Needs
# chromium and chromedriver (scripts/test.sh installs them). Writes docs/screenshots/.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
PORT=19897; WD=19515
SHA=$(printf %s demo | sha256sum | cut -d' ' -f1)
"$GUARD_BIN" serve --quarantine demo-out/quarantine --reviewer "demo:$SHA" --listen "127.0.0.1:$PORT" >/dev/null 2>&1 &
S=$!
chromedriver --port=$WD >/dev/null 2>&1 &
D=$!
trap 'kill $S $D 2>/dev/null || true' EXIT
until curl -sf "http://127.0.0.1:$PORT/review" >/dev/null && curl -sf "http://127.0.0.1:$WD/status" >/dev/null; do sleep 0.1; done
wd() { curl -sf -X "$1" "http://127.0.0.1:$WD/session$2" -H 'Content-Type: application/json' ${3:+-d "$3"}; }
SID=$(wd POST "" '{"capabilities":{"alwaysMatch":{"browserName":"chrome","goog:chromeOptions":{"binary":"/usr/bin/chromium","args":["--headless=new","--no-sandbox","--disable-gpu","--window-size=1400,1000"]}}}}' | python3 -c 'import json,sys;print(json.load(sys.stdin)["value"]["sessionId"])')
js() { wd POST "/$SID/execute/sync" "$(python3 -c 'import json,sys;print(json.dumps({"script":sys.argv[1],"args":[]}))' "$1")" >/dev/null; }
shot() { wd GET "/$SID/screenshot" | python3 -c 'import json,sys,base64;open(sys.argv[1],"wb").write(base64.b64decode(json.load(sys.stdin)["value"]))' "$1"; }
wd POST "/$SID/url" "{\"url\":\"http://127.0.0.1:$PORT/review\"}" >/dev/null
sleep 1
js "document.getElementById('login-name').value='demo';document.getElementById('login-password').value='demo';document.getElementById('login-submit').click();"
sleep 1
js "location.hash='#/explorer?topic=training.mnist&reason=score.&sort=anomaly';"
sleep 1.5
mkdir -p docs/screenshots
shot docs/screenshots/explorer.png
js "document.querySelector('tr.row').click();"
sleep 1.5
shot docs/screenshots/record-mnist.png
wd DELETE "/$SID" >/dev/null
echo "wrote docs/screenshots/explorer.png and record-mnist.png"
