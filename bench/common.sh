# Shared by the bench scripts; sourced, not run. Needs ROOT set.
BIN="$ROOT/target/release"
REPO="${TENSORGATE_REPO:-$ROOT/target/repository}"
[ -x "$BIN/tensorgate-host" ] && [ -x "$BIN/bare-forward" ] || { echo "run scripts/setup first" >&2; exit 1; }
WORK=$(mktemp -d)
HOST_PID=""
trap '[ -n "$HOST_PID" ] && kill $HOST_PID 2>/dev/null; rm -rf "$WORK"' EXIT

# Starts a host over $REPO on an ephemeral loopback port and points the CLI at it.
start_host() {
    "$BIN/tensorgate-host" --repository "$REPO" --listen 127.0.0.1:0 --state-dir "$WORK/state" "$@" >/dev/null 2>&1 &
    HOST_PID=$!
    for _ in $(seq 300); do [ -f "$WORK/state/listening" ] && break; sleep 0.1; done
    [ -f "$WORK/state/listening" ] || { echo "host did not start" >&2; exit 1; }
    export TENSORGATE_HOST=$(cat "$WORK/state/listening") TENSORGATE_FINGERPRINT=$(cat "$WORK/state/fingerprint")
    echo "machine: $(nproc) cores, load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
}
