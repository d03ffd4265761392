#!/usr/bin/env bash
# The README's second command, and what .ci/run calls: every check and every test.
#   formatting, clippy (-D warnings), dependency policy (cargo deny: licenses, bans, sources),
#   unit and property tests, the bad-data fixtures, and the integration tests against a real
#   Kafka-protocol broker (Tansu) with the real ingest-guard binary.
#   Also: the deployment files (Kubernetes schemas), the container image (built and run).
# On a 2-core machine: 15 minutes with a warm build cache; 26.5 minutes on a fresh machine
# (one-time installs of cargo-deny, s3s-fs and kubernetes-validate, and the cold builds).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --tests
source scripts/env.sh
# The dashboard's browser test drives Debian's headless Chromium through chromedriver.
if ! command -v chromedriver >/dev/null 2>&1; then
  echo "test: installing chromium and chromium-driver with apt-get (browser test)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
fi
step() { printf '\n=== %s\n' "$*"; }

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy --workspace --all-targets --features test-hooks -- -D warnings"
cargo clippy --locked --workspace --all-targets --features test-hooks -- -D warnings

step "cargo deny check licenses bans sources"
if ! command -v cargo-deny >/dev/null 2>&1; then
  echo "installing cargo-deny from crates.io (one time, several minutes)"
  cargo install --locked cargo-deny --version 0.20.2
fi
cargo deny --locked check licenses bans sources

step "cargo deny --offline check advisories (RustSec snapshot)"
scripts/advisories.sh

step "crate graph: no stage crate depends on another (scripts/crate-graph.py)"
python3 scripts/crate-graph.py

step "SBOM of native and Rust components is current (sbom/ingest-guard.cdx.json)"
python3 scripts/sbom.py --check sbom/ingest-guard.cdx.json

step "deployment files: Kubernetes manifests against the API schemas (kubernetes-validate, offline)"
scripts/validate-deploy.sh

step "container image: rootfs, buildah build, the binary run from the image (scripts/build-image.sh)"
scripts/build-image.sh

step "cargo test (unit, property, fixtures, integration against a real broker)"
# Integration tests start their own broker per test and run one at a time: each one loads the
# 2-core machine with a broker, the guard and a producer. `test-hooks` compiles in the test-only
# faults (a record that makes judging panic, frozen clean acknowledgements); release builds
# for users never have them.
cargo test --release --locked --workspace --features test-hooks -- --test-threads=1
