#!/usr/bin/env bash
# A project's content as a file, end to end: hybridstore.yaml + hybridstore.lock + `sync`.
#
# examples/sync_project/ is the project: three charts and two images under `refs:`, and its
# own Helm chart deploy/app whose oci:// dependencies `sync` writes to deploy/app/charts/
# exactly as `helm dependency build` would. This script starts `docker-registry` (CNCF
# distribution) on a free loopback port, publishes the content there
# (examples/make_project_content.py, pushed with `hybridstore push`), and then:
#
#   hybridstore sync                      resolve, lock, pull into ./oci and ./images
#   hybridstore sync                      again: everything locked and cached, no request
#   hybridstore sync --locked --offline   a second checkout, registry stopped: lock + cache only
#   hybridstore sync --dry-run            after an edit: the plan, nothing written
#
# Needs: docker-registry, python3, sha256sum. Set HYBRIDSTORE to the command to run
# (default: hybridstore on PATH, else this clone's .venv/bin/hybridstore; see
# local_registry.sh).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)

WORK=$(mktemp -d "${TMPDIR:-/tmp}/sync-project.XXXXXX")
# shellcheck source=local_registry.sh
source "$(dirname "$0")/local_registry.sh"
cleanup() { stop_registry; rm -rf "$WORK"; }
trap cleanup EXIT

start_registry "$WORK"

# -- publish three charts and two images ------------------------------------------------------
python3 "$HERE/make_project_content.py" "$WORK/publish" | while read -r name; do
    hs -q push --plain-http --layout "$WORK/publish" "$name" "$REGISTRY/$name"
done
echo "published charts/hello-chart, charts/redis-lite, charts/web, images/hello:1.0 and :2.0"

# -- the project ------------------------------------------------------------------------------
export HYBRIDSTORE_CACHE_DIR=$WORK/cache   # shared by every project on the machine
checkout() {  # checkout DIR: a copy of the example project, pointed at this registry
    cp -r "$HERE/sync_project" "$1"
    sed -i "s/127\.0\.0\.1:5000/$REGISTRY/g" "$1/hybridstore.yaml" "$1/deploy/app/Chart.yaml"
}
checkout "$WORK/project"
cd "$WORK/project"

echo "== sync: resolve, lock, pull"
hs sync --plain-http
sed -n 1,14p hybridstore.lock
hs refs --layout images

echo "== the chart dependencies are the pushed archives, byte for byte"
for f in deploy/app/charts/*.tgz; do
    digest=$(sha256sum "$f" | cut -d' ' -f1)
    test -f "$WORK/publish/blobs/sha256/$digest"   # the very archive that was pushed
    echo "  $f  sha256:${digest:0:12}"
done

echo "== sync again: locked and cached"
BYTES=$(hs sync --plain-http --json | python3 -c 'import json, sys; print(json.load(sys.stdin)["bytes_transferred"])')
echo "second sync transferred $BYTES bytes"
test "$BYTES" = 0

echo "== a second checkout, registry stopped: sync --locked --offline"
stop_registry
checkout "$WORK/ci"
cp hybridstore.lock "$WORK/ci/"
(cd "$WORK/ci" && hs sync --locked --offline)
cmp deploy/app/charts/web-2.1.0+build.7.tgz "$WORK/ci/deploy/app/charts/web-2.1.0+build.7.tgz"
echo "offline checkout matches"

echo "== after an edit: the plan"
sed -i '/redis-lite:1.0.0$/d' hybridstore.yaml
set +e
hs sync --locked --offline > /dev/null 2> "$WORK/locked.err"
echo "sync --locked exits $? when the lock no longer matches: $(cat "$WORK/locked.err")"
set -e
hs sync --dry-run
