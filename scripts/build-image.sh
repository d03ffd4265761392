#!/usr/bin/env bash
# Builds the container image of Containerfile offline: assembles target/image-rootfs (the
# release binary, every shared library `ldd` lists for it and for the ONNX Runtime library,
# the CA bundle, schemas, models, a non-root user), checks it by running the binary inside
# it with chroot (`check` with models loaded: the ONNX Runtime library and its dependencies
# resolve inside the image), then builds the image with buildah (Debian's, as root).
#   scripts/build-image.sh            rootfs, check, image localhost/ingest-guard:<version>
#   scripts/build-image.sh --rootfs   rootfs and check only
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
scripts/setup.sh >/dev/null
source scripts/env.sh
cargo build --release --locked
BIN="$CARGO_TARGET_DIR/release/ingest-guard"
RFS="$ROOT/target/image-rootfs"
rm -rf "$RFS"
mkdir -p "$RFS"/{usr/local/bin,usr/local/lib,etc/ssl/certs,etc/ingest-guard,var/lib/ingest-guard,tmp}
# Without the debug line tables (they are for the build machine's backtraces): 1/10 the size.
objcopy --strip-debug "$BIN" "$RFS/usr/local/bin/ingest-guard"
chmod 0755 "$RFS/usr/local/bin/ingest-guard"
install -m 0644 "$ORT_DYLIB_PATH" "$RFS/usr/local/lib/"
copy_libs() { # every library ldd resolves for $1, at the same path
  ldd "$1" | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}' | while read -r lib; do
    [ -e "$RFS$lib" ] && continue
    mkdir -p "$RFS$(dirname "$lib")"
    cp -L "$lib" "$RFS$lib"
  done
}
copy_libs "$BIN"
copy_libs "$ORT_DYLIB_PATH"
cp -L /etc/ssl/certs/ca-certificates.crt "$RFS/etc/ssl/certs/"
cp -r schemas models "$RFS/etc/ingest-guard/"
printf 'root:x:0:0:root:/:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/var/lib/ingest-guard:/sbin/nologin\n' > "$RFS/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' > "$RFS/etc/group"
chmod 1777 "$RFS/tmp"
chown -R 65532:65532 "$RFS/var/lib/ingest-guard" 2>/dev/null || true
cat > "$RFS/etc/ingest-guard/guard.toml" <<'TOML'
# Placeholder: mount your configuration here (deploy/kubernetes/ shows how).
[kafka]
brokers = "kafka:9092"
output_topic = "training.clean"
[[routes]]
topic = "training.shuttle"
schema = "/etc/ingest-guard/schemas/shuttle.schema.json"
anomaly_model = "/etc/ingest-guard/models/shuttle/anomaly.onnx"
[quarantine]
dir = "/var/lib/ingest-guard/quarantine"
TOML
echo "build-image: rootfs $(du -sh "$RFS" | cut -f1) in $RFS"

# The check: the binary runs inside the rootfs alone, loads the ONNX Runtime library from it
# and validates the configuration, as the non-root user.
if [ "$(id -u)" = 0 ] && command -v chroot >/dev/null; then
  out=$(chroot --userspec=65532:65532 "$RFS" /usr/local/bin/ingest-guard --version)
  echo "build-image: in the rootfs: $out"
  chroot --userspec=65532:65532 "$RFS" /usr/bin/env 2>/dev/null && { echo "build-image: the rootfs has a userland it should not" >&2; exit 1; }
  ORT_DYLIB_PATH=/usr/local/lib/libonnxruntime.so.1.31.1 chroot --userspec=65532:65532 "$RFS" \
    /usr/local/bin/ingest-guard check --config /etc/ingest-guard/guard.toml
else
  echo "build-image: not root: the rootfs check needs chroot (skipped)" >&2
fi
[ "${1:-}" = "--rootfs" ] && exit 0

if ! command -v buildah >/dev/null; then
  echo "build-image: installing buildah with apt-get (Debian's, offline-capable)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq buildah >/dev/null
fi
VERSION=$(grep -m1 '^version' Cargo.toml | cut -d'"' -f2)
buildah build --quiet --isolation chroot --layers=false -f Containerfile -t "localhost/ingest-guard:$VERSION" "$ROOT" >/dev/null
buildah images "localhost/ingest-guard:$VERSION"
# The image itself: its user, and its binary checking the placeholder config with a model
# loaded, run from the image by buildah (chroot isolation; podman is not used here).
c=$(buildah from "localhost/ingest-guard:$VERSION")
trap 'buildah rm "$c" >/dev/null 2>&1 || true' EXIT
user=$(buildah inspect --format '{{.OCIv1.Config.User}}' "$c")
[ "$user" = "65532:65532" ] || { echo "build-image: image user is $user, not 65532:65532" >&2; exit 1; }
buildah run --isolation chroot "$c" -- /usr/local/bin/ingest-guard check --config /etc/ingest-guard/guard.toml 2>/dev/null \
  | grep -q 'scoring provider: cpu' || { echo "build-image: the image's binary did not load its model" >&2; exit 1; }
echo "build-image: localhost/ingest-guard:$VERSION runs as $user and loads its model"
