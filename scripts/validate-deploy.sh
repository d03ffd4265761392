#!/usr/bin/env bash
# Offline checks of the deployment files: the Kubernetes manifests against the API schemas
# that the PyPI package kubernetes-validate bundles (strict: unknown fields are errors), for
# the oldest Kubernetes with native sidecars (1.29) and a current one. The guard configs
# inside them, the Grafana dashboard and the alert rules are checked by the test suite
# (tests/deploy.rs, tests/alerts.rs).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${KUBE_VALIDATE_VENV:-$HOME/.cache/ingest-guard/kubernetes-validate-1.37.0}
if [ ! -x "$VENV/bin/kubernetes-validate" ]; then
  echo "validate-deploy: installing kubernetes-validate 1.37.0 from PyPI (one time)"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q kubernetes-validate==1.37.0
fi
for k in 1.29.0 1.34.0; do
  "$VENV/bin/kubernetes-validate" --strict --quiet -k "$k" deploy/kubernetes/*.yaml
  echo "validate-deploy: deploy/kubernetes/*.yaml valid for Kubernetes $k (strict)"
done
