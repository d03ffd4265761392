#!/usr/bin/env bash
# Coverage-guided fuzzing with AFL++ on stable Rust (cargo-afl) of what producers control:
#   judge            pre-scan, decoder and schema on arbitrary payloads
#   envelope         key and headers through the bounded copy, envelope limits and judge
#                    (asserts the copies stay bounded and every cut envelope is quarantined)
#   quarantine_file  the replay reader on arbitrary bytes (a foreign or damaged file)
# Usage: scripts/fuzz.sh [SECONDS=600] [TARGET...]   (all targets in parallel, SECONDS each)
# Prints executions, paths, crashes and hangs per target; crashing or hanging inputs are copied
# to fuzz/regressions/<target>/ (commit them: they become fixtures) and the script exits 1.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-600}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(judge envelope quarantine_file)
if ! command -v cargo-afl >/dev/null 2>&1; then
  echo "fuzz: installing cargo-afl 0.18.2 from crates.io (one time, a few minutes)"
  cargo install --locked cargo-afl --version 0.18.2
fi
export CARGO_TARGET_DIR=${FUZZ_TARGET_DIR:-$HOME/.cache/ingest-guard/fuzz-target}
(cd fuzz && cargo afl build --release --locked)
out=${FUZZ_OUT:-fuzz-out}
mkdir -p "$out"
for t in "${targets[@]}"; do
  rm -rf "${out:?}/$t"
  AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_NO_UI=1 AFL_NO_AFFINITY=1 \
    cargo afl fuzz -V "$secs" -i "fuzz/seeds/$t" -o "$out/$t" "$CARGO_TARGET_DIR/release/$t" >"$out/$t.log" 2>&1 &
done
wait
status=0
printf '%-16s %12s %10s %8s %8s %8s\n' target execs "execs/s" paths crashes hangs
for t in "${targets[@]}"; do
  stats="$out/$t/default/fuzzer_stats"
  if [ ! -f "$stats" ]; then echo "fuzz: $t did not run; see $out/$t.log" >&2; status=1; continue; fi
  get() { awk -F' *: *' -v k="$1" '$1 == k {print $2}' "$stats"; }
  printf '%-16s %12s %10s %8s %8s %8s\n' "$t" "$(get execs_done)" "$(get execs_per_sec)" "$(get corpus_count)" "$(get saved_crashes)" "$(get saved_hangs)"
  for kind in crashes hangs; do
    found=$(find "$out/$t/default/$kind" -type f ! -name README.txt 2>/dev/null || true)
    if [ -n "$found" ]; then
      mkdir -p "fuzz/regressions/$t"
      cp $found "fuzz/regressions/$t/"
      echo "fuzz: $t: $kind kept in fuzz/regressions/$t/" >&2
      status=1
    fi
  done
done
exit $status
