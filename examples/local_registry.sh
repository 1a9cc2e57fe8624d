# Sourced by the example scripts: the hybridstore command, and a throwaway CNCF
# distribution registry on loopback.
#
#   source local_registry.sh  # hs ARGS... runs $HYBRIDSTORE: default hybridstore on PATH,
#                             # else this clone's .venv/bin/hybridstore (make demo / make venv)
#   start_registry "$WORK"    # sets REGISTRY=127.0.0.1:PORT and REGISTRY_PID; data in $WORK
#   stop_registry             # idempotent; call it from the script's EXIT trap too

_EXAMPLES_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
HYBRIDSTORE=${HYBRIDSTORE:-$(command -v hybridstore || echo "$_EXAMPLES_ROOT/.venv/bin/hybridstore")}
if ! command -v "${HYBRIDSTORE%% *}" >/dev/null; then
    echo "no hybridstore: run 'make venv' in $_EXAMPLES_ROOT, or 'pipx install $_EXAMPLES_ROOT'" >&2
    exit 1
fi
hs() { $HYBRIDSTORE "$@"; }  # unquoted: HYBRIDSTORE may be a command with arguments

REGISTRY_PID=""

start_registry() {
    local work=$1 port
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    REGISTRY=127.0.0.1:$port
    cat > "$work/registry.yml" <<YML
version: 0.1
log: {level: error}
storage: {filesystem: {rootdirectory: $work/registry-data}}
http: {addr: $REGISTRY}
YML
    # distribution reads REGISTRY_* variables as config overrides (podman's REGISTRY_AUTH_FILE too).
    env -u REGISTRY_AUTH_FILE docker-registry serve "$work/registry.yml" > "$work/registry.log" 2>&1 &
    REGISTRY_PID=$!
    for _ in $(seq 100); do
        python3 -c "import urllib.request; urllib.request.urlopen('http://$REGISTRY/v2/')" 2>/dev/null && break
        sleep 0.1
    done
    echo "registry: http://$REGISTRY"
}

stop_registry() {
    if [ -n "$REGISTRY_PID" ]; then
        kill "$REGISTRY_PID" 2>/dev/null || true
        wait "$REGISTRY_PID" 2>/dev/null || true
    fi
    REGISTRY_PID=""
}
