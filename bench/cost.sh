#!/usr/bin/env bash
# Per-request and per-item cost of the tabular MLP (issue 17): for one host
# binary, or alternating between two (A/B, same machine state), a fresh host
# (`--threads 1`) per run, 500 warm-up requests, then `tensorgate bench` at
# concurrency 1, at concurrency 64, and with 1,000-item requests at
# concurrency 4 (each after its own untimed warm-up); prints req/s or items/s, p50, and CPU per request or item of
# the host process (/proc) and of the client (its rusage), plus the mean
# batch the host formed at 64.
# Usage: bench/cost.sh [BEFORE_HOST_BINARY [PAIRS]]
#   C1, C64, CM: requests per cell (5000, 40000, 150)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/bench/common.sh"
# Another build's binary may carry an rpath to a libtorch folder that is gone.
export LD_LIBRARY_PATH="$ROOT/.libtorch/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
BEFORE=${1:-}
PAIRS=${2:-3}
F="$ROOT/plugins/tabular/samples/jet-0.json"
cell() {  # label, bench args...
    local label=$1; shift
    python3 "$ROOT/bench/torchserve/cell.py" --pid "$HOST_PID" -- "$BIN/tensorgate" bench --model tabular --file "$F" --json "$@" \
        --warmup 0 | python3 "$ROOT/bench/cost_line.py" "$label"
}
run() {  # label, host binary
    HOST_BIN=$2 start_host "$REPO" --threads 1 >/dev/null
    "$BIN/tensorgate" bench --model tabular --file "$F" --concurrency 64 --requests 5000 --warmup 500 >/dev/null
    cell "$1 c=1" --concurrency 1 --requests "${C1:-5000}"
    "$BIN/tensorgate" bench --model tabular --file "$F" --concurrency 64 --requests 500 --warmup 0 >/dev/null
    cell "$1 c=64" --concurrency 64 --requests "${C64:-40000}"
    "$BIN/tensorgate" status | python3 -c 'import json,sys; m=[m for m in json.load(sys.stdin)["models"] if m["name"]=="tabular"][0]; print(sys.argv[1], "mean batch so far: %.2f rows" % (m["forward_rows"] / m["forwards"]))' "$1"
    "$BIN/tensorgate" bench --model tabular --file "$F" --items 1000 --concurrency 4 --requests 5 --warmup 0 >/dev/null
    cell "$1 1000 items c=4" --items 1000 --concurrency 4 --requests "${CM:-150}"
    stop_host
}
echo "machine: $(nproc) cores, load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
if [ -z "$BEFORE" ]; then
    run "this build" "$BIN/tensorgate-host"
else
    for i in $(seq "$PAIRS"); do
        run "pair $i before" "$BEFORE"
        run "pair $i after" "$BIN/tensorgate-host"
    done
fi
