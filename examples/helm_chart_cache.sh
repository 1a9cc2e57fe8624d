#!/usr/bin/env bash
# Helm-style chart caching with hybridstore, end to end, against a throwaway local registry.
#
# The workflow: a project keeps ./charts as an OCI layout (commit index.json if you like);
# every machine shares one blob cache. `pull` brings a chart version in, `extract` writes
# the .tgz that `helm install` takes, and re-pulling a tag whose digest did not change
# transfers nothing (one manifest request, then links out of the cache).
#
#   hybridstore pull --layout ./charts oci://registry.example.com/charts/app:1.2.3
#   hybridstore extract --layout ./charts registry.example.com/charts/app:1.2.3 -o ./vendor
#   helm install app ./vendor/app-1.2.3.tgz
#
# This script runs all of it locally: it starts `docker-registry` (CNCF distribution) on a
# free loopback port, publishes a small chart there with `hybridstore push` (standing in for
# `helm push`), then plays the project side. Needs: docker-registry, python3, sha256sum.
# Set HYBRIDSTORE to the command to run (default: hybridstore on PATH, else this clone's
# .venv/bin/hybridstore, which `make demo` or `make venv` creates; see local_registry.sh).
set -euo pipefail

WORK=$(mktemp -d "${TMPDIR:-/tmp}/helm-chart-cache.XXXXXX")
# shellcheck source=local_registry.sh
source "$(dirname "$0")/local_registry.sh"
cleanup() { stop_registry; rm -rf "$WORK"; }
trap cleanup EXIT

start_registry "$WORK"

# -- publish a chart (what `helm package` + `helm push` would do) -----------------------------
SRC=$WORK/src
mkdir -p "$SRC/app/templates"
printf 'apiVersion: v2\nname: app\nversion: 1.2.3\nappVersion: "4.5"\n' > "$SRC/app/Chart.yaml"
printf 'replicas: 1\n' > "$SRC/app/values.yaml"
printf 'kind: ConfigMap\napiVersion: v1\nmetadata: {name: app}\n' > "$SRC/app/templates/cm.yaml"
tar -C "$SRC" --mtime=@0 --owner=0 --group=0 --numeric-owner -cf - app | gzip -n > "$SRC/app-1.2.3.tgz"

PUBLISH=$WORK/publish
mkdir -p "$PUBLISH/blobs/sha256"
add_blob() {  # add_blob FILE -> prints "digest size", stores the blob in the layout
    local d; d=$(sha256sum "$1" | cut -d' ' -f1)
    cp "$1" "$PUBLISH/blobs/sha256/$d"
    echo "sha256:$d $(stat -c %s "$1")"
}
printf '{"name":"app","version":"1.2.3","appVersion":"4.5","apiVersion":"v2"}' > "$SRC/config.json"
read -r CFG_DIGEST CFG_SIZE < <(add_blob "$SRC/config.json")
read -r CHART_DIGEST CHART_SIZE < <(add_blob "$SRC/app-1.2.3.tgz")
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.cncf.helm.config.v1+json","digest":"%s","size":%s},"layers":[{"mediaType":"application/vnd.cncf.helm.chart.content.v1.tar+gzip","digest":"%s","size":%s}]}' \
    "$CFG_DIGEST" "$CFG_SIZE" "$CHART_DIGEST" "$CHART_SIZE" > "$SRC/manifest.json"
read -r MAN_DIGEST MAN_SIZE < <(add_blob "$SRC/manifest.json")
printf '{"imageLayoutVersion":"1.0.0"}' > "$PUBLISH/oci-layout"
printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"%s","size":%s,"annotations":{"org.opencontainers.image.ref.name":"app:1.2.3"}}]}' \
    "$MAN_DIGEST" "$MAN_SIZE" > "$PUBLISH/index.json"
hs -q push --plain-http --layout "$PUBLISH" app:1.2.3 "$REGISTRY/charts/app:1.2.3"
echo "published oci://$REGISTRY/charts/app:1.2.3 ($MAN_DIGEST)"

# -- the project side ------------------------------------------------------------------------
export HYBRIDSTORE_CACHE_DIR=$WORK/cache   # shared by every project on the machine
PROJECT=$WORK/project
mkdir -p "$PROJECT"
cd "$PROJECT"

hs pull --plain-http --layout ./charts "oci://$REGISTRY/charts/app:1.2.3"
hs inspect --layout ./charts "$REGISTRY/charts/app:1.2.3" | sed -n 1,6p
hs extract --layout ./charts "$REGISTRY/charts/app:1.2.3" -o ./vendor
tar -tzf vendor/app-1.2.3.tgz | sed 's/^/  /'

# Re-pulling an unchanged tag: one manifest request, no blob transferred.
BYTES=$(hs pull --plain-http --json --layout ./charts "oci://$REGISTRY/charts/app:1.2.3" \
    | python3 -c 'import json, sys; print(json.load(sys.stdin)[0]["bytes_transferred"])')
echo "re-pull transferred $BYTES bytes"
test "$BYTES" = 0

# A second project on the same machine links the chart out of the cache.
hs pull --plain-http --json --layout "$WORK/other-project/charts" "oci://$REGISTRY/charts/app:1.2.3" \
    | python3 -c 'import json, sys; r = json.load(sys.stdin)[0]; print("second project: fetched", r["blobs_fetched"], "reused", r["blobs_reused"])'
