# Shared by the bench scripts; sourced, not run. Needs ROOT set.
# TENSORGATE_BIN points at another build (e.g. an A/B comparison, bench/ab-tabular.sh).
BIN="${TENSORGATE_BIN:-$ROOT/target/release}"
REPO="${TENSORGATE_REPO:-$ROOT/target/repository}"
[ -x "$BIN/tensorgate-host" ] && [ -x "$BIN/bare-forward" ] || { echo "run scripts/setup first" >&2; exit 1; }
WORK=$(mktemp -d)
HOST_PID=""
trap '[ -n "$HOST_PID" ] && kill $HOST_PID 2>/dev/null; rm -rf "$WORK"' EXIT

# Starts a host over $1 (default $REPO) on an ephemeral loopback port and
# points the CLI at it; extra arguments go to the host. HOST_BIN: another
# host binary (default $BIN/tensorgate-host).
start_host() {
    local repo=${1:-$REPO}
    [ $# -gt 0 ] && shift
    local state
    state=$(mktemp -d "$WORK/state.XXXX")
    "${HOST_BIN:-$BIN/tensorgate-host}" --repository "$repo" --listen 127.0.0.1:0 --state-dir "$state" "$@" >/dev/null 2>&1 &
    HOST_PID=$!
    for _ in $(seq 300); do [ -f "$state/listening" ] && break; sleep 0.1; done
    [ -f "$state/listening" ] || { echo "host did not start" >&2; exit 1; }
    export TENSORGATE_HOST=$(cat "$state/listening") TENSORGATE_FINGERPRINT=$(cat "$state/fingerprint") TG_STATE=$state
    echo "machine: $(nproc) cores, load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
}

stop_host() {
    kill "$HOST_PID" 2>/dev/null && wait "$HOST_PID" 2>/dev/null
    HOST_PID=""
}
