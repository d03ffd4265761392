#!/usr/bin/env bash
# Known-vulnerable dependencies gate the build: `cargo deny --offline check advisories` against
# the newest offline RustSec snapshot found (these machines cannot reach the database's git
# host). Snapshots are looked for in ../shared/advisory-db/ (kept current by the workplace) and
# in .ci/advisory-db/ (a copy in the repository, so a clone alone still gates); the newest by
# the date in its name wins. Online, run `cargo deny check advisories` instead (README).
set -euo pipefail
cd "$(dirname "$0")/.."
snap=$( { ls -1 ../shared/advisory-db/rustsec-advisory-db-*.tar.gz .ci/advisory-db/rustsec-advisory-db-*.tar.gz 2>/dev/null || true; } \
  | awk -F'rustsec-advisory-db-' '{print $2 "\t" $0}' | sort | tail -n 1 | cut -f2)
if [ -z "$snap" ]; then
  echo "advisories: no RustSec snapshot found (../shared/advisory-db or .ci/advisory-db)" >&2
  exit 1
fi
# cargo-deny 0.20 reads the clone from $CARGO_HOME/advisory-dbs/<name>-<hash of the URL>.
db=${CARGO_HOME:-$HOME/.cargo}/advisory-dbs/advisory-db-3157b0e258782691
tmp=$(mktemp -d)
tar xzf "$snap" -C "$tmp"
rm -rf "$db" && mkdir -p "$(dirname "$db")"
mv "$tmp/advdb" "$db"
rm -rf "$tmp"
# --offline also keeps cargo metadata offline: have every locked crate (all targets) local.
cargo fetch --locked --quiet
echo "advisories: RustSec snapshot $(basename "$snap")"
cargo deny --offline --locked check advisories
