#!/usr/bin/env bash
# Carry OCI content across an air gap with hybridstore, end to end, on one machine:
#
#   site A (connected):  pull into a layout -> export one archive
#   ...carry the archive...
#   site B (offline):    import into a fresh cache + layout -> push into the local
#                        registry (docker-registry) -> pull back -> hybridstore layout verify
#
# No internet: site A's "upstream registry" is `hybridstore serve` over the demo content
# (examples/make_demo_content.py). Needs the venv (make venv) and the Debian package
# docker-registry; everything runs on loopback in a temporary directory, removed at the
# end (KEEP=1 keeps it). Usage: examples/offline_transfer.sh
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-$ROOT/.venv/bin/python}
WORK=$(mktemp -d -t hybridstore-offline-XXXXXX)
PIDS=()

hs() { "$PY" -m hybridstore.cli "$@"; }
step() { printf '\n== %s\n' "$*"; }

cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [ "${KEEP:-0}" = 1 ]; then echo "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

command -v docker-registry >/dev/null || {
  echo "offline_transfer.sh: needs docker-registry (apt-get install docker-registry)" >&2
  exit 1
}

wait_for() {  # wait_for SECONDS COMMAND...: poll until COMMAND succeeds
  local deadline=$((SECONDS + $1)); shift
  until "$@" >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$deadline" ] || { echo "timed out waiting for: $*" >&2; return 1; }
    sleep 0.1
  done
}

step "Site A: an upstream registry (hybridstore serve over the demo content)"
"$PY" "$ROOT/examples/make_demo_content.py" "$WORK/upstream-content"
"$PY" -m hybridstore.cli serve "$WORK/upstream-content" --listen 127.0.0.1:0 >"$WORK/serve.log" 2>&1 &
PIDS+=($!)
wait_for 10 grep -q '^listening on ' "$WORK/serve.log"
UPSTREAM=$(sed -n 's|^listening on http://||p' "$WORK/serve.log")
echo "upstream at $UPSTREAM"

step "Site A: pull into a project layout, export it"
hs --cache "$WORK/site-a/cache" pull --plain-http --layout "$WORK/site-a/layout" \
  "$UPSTREAM/hello:1.0" "oci://$UPSTREAM/charts/hello-chart:0.1.0"
hs export --layout "$WORK/site-a/layout" -o "$WORK/transfer.tar.zst"
(cd "$WORK" && sha256sum transfer.tar.zst | tee transfer.tar.zst.sha256)

step "...carry transfer.tar.zst (and its checksum) across the gap..."

step "Site B: import into a fresh cache and layout"
(cd "$WORK" && sha256sum -c transfer.tar.zst.sha256)
hs --cache "$WORK/site-b/cache" import "$WORK/transfer.tar.zst" --layout "$WORK/site-b/layout"
hs layout verify "$WORK/site-b/layout"

step "Site B: start the local registry (docker-registry, temporary config)"
PORT=$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
REGISTRY=127.0.0.1:$PORT
mkdir -p "$WORK/registry/data"
cat >"$WORK/registry/config.yml" <<EOF
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $WORK/registry/data
http:
  addr: $REGISTRY
EOF
# distribution reads REGISTRY_* variables as config overrides (podman's REGISTRY_AUTH_FILE too).
env -u REGISTRY_AUTH_FILE docker-registry serve "$WORK/registry/config.yml" >"$WORK/registry/log" 2>&1 &
PIDS+=($!)
wait_for 15 curl -fsS "http://$REGISTRY/v2/"
echo "local registry at $REGISTRY"

step "Site B: push every ref into the local registry (repository paths kept)"
if hs push --help >/dev/null 2>&1; then
  hs --cache "$WORK/site-b/cache" push --layout "$WORK/site-b/layout" --all \
    --registry "$REGISTRY" --plain-http
else  # hybridstore before `push`: skopeo copies each ref, digests kept
  for name in $(hs refs --layout "$WORK/site-b/layout" --json | "$PY" -c \
      'import json, sys; print("\n".join(r["name"] for r in json.load(sys.stdin)))'); do
    skopeo --insecure-policy copy --all --preserve-digests --dest-tls-verify=false \
      "oci:$WORK/site-b/layout:$name" "docker://$REGISTRY/${name#*/}"
  done
fi

step "Site B: pull back from the local registry into a fresh cache and layout, verify"
hs --cache "$WORK/site-c/cache" pull --plain-http --layout "$WORK/site-c/layout" \
  "$REGISTRY/hello:1.0" "oci://$REGISTRY/charts/hello-chart:0.1.0"
hs layout verify "$WORK/site-c/layout"

digests() { hs refs --layout "$1" --json | "$PY" -c \
  'import json, sys; print(" ".join(sorted(r["digest"] for r in json.load(sys.stdin))))'; }
if [ "$(digests "$WORK/site-a/layout")" != "$(digests "$WORK/site-c/layout")" ]; then
  echo "offline_transfer.sh: digests differ between site A and the pulled-back copy" >&2
  exit 1
fi
step "Done: the same digests at site A and, via the archive and the local registry, at site B"
