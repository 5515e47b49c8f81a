#!/usr/bin/env bash
# The gateway binary: size on disk, time from exec to `STATE/listening`
# (median of RUNS starts against a running engine; a gateway waits up to
# 300 ms for the workers' adverts before it serves), and resident memory
# once serving. Compares the slim `tensorgate-gateway` with an earlier
# build's `tensorgate-host --gateway` (BEFORE_DIR) when given.
# Usage: bash bench/gateway-start.sh [RUNS] [BEFORE_DIR]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
RUNS=${1:-5}
BEFORE=${2:-}
. "$ROOT/scripts/env.sh"
export LD_LIBRARY_PATH="$LIBTORCH_DIR/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
WORK=$(mktemp -d)
ENGINE=""
trap '[ -n "$ENGINE" ] && kill "$ENGINE" 2>/dev/null; rm -rf "$WORK"' EXIT
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$NATS_SERVER" -a 127.0.0.1 -p "$PORT" -js -sd "$WORK/engine" >/dev/null 2>&1 &
ENGINE=$!
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/"$PORT") 2>/dev/null && break; sleep 0.1; done
URL="nats://127.0.0.1:$PORT"

measure() {  # NAME BINARY ARGS...: prints one table row
    local name=$1 bin=$2
    shift 2
    local times=() rss=""
    for r in $(seq "$RUNS"); do
        local state="$WORK/$name-$r"
        mkdir -p "$state"
        local t0
        t0=$(date +%s%N)
        "$bin" "$@" --nats "$URL" --listen 127.0.0.1:0 --state-dir "$state" >/dev/null 2>&1 &
        local pid=$!
        while [ ! -s "$state/listening" ]; do sleep 0.002; done
        times+=("$(( ($(date +%s%N) - t0) / 1000000 ))")
        sleep 0.5
        rss=$(awk '/VmRSS/{print $2}' "/proc/$pid/status")
        kill "$pid"
        wait "$pid" 2>/dev/null || true
    done
    local median
    median=$(printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
    printf '| %s | %.1f MB | %s ms (%s) | %.1f MB |\n' "$name" "$(echo "$(stat -c %s "$bin") / 1000000" | bc -l)" "$median" "$(IFS=,; echo "${times[*]}")" "$(echo "$rss / 1024" | bc -l)"
}
echo "machine: $(nproc) cores, load average at start: $(cut -d' ' -f1-3 /proc/loadavg); $RUNS starts each"
echo "| binary | size | start to listening, median (runs) | RSS serving |"
echo "|---|---|---|---|"
measure "tensorgate-gateway" "$ROOT/target/release/tensorgate-gateway"
measure "tensorgate-host gateway" "$ROOT/target/release/tensorgate-host" gateway
[ -n "$BEFORE" ] && measure "before: tensorgate-host --gateway" "$BEFORE/tensorgate-host" --gateway
exit 0
