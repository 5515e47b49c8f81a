#!/usr/bin/env bash
# Where the host's CPU goes for single-item tabular requests at concurrency 64
# (issue 17): `perf record -g` (Debian linux-perf) on a host for SECONDS while
# `tensorgate bench` loads it; prints req/s during the profile, the split by
# thread and by library, and the top symbols by self time.
# Usage: bench/profile.sh [HOST_BINARY] [SECONDS]   (perf.data kept in $PERF_OUT if set)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/bench/common.sh"
export LD_LIBRARY_PATH="$ROOT/.libtorch/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
HOSTBIN=${1:-$BIN/tensorgate-host}
SECS=${2:-3}
command -v perf >/dev/null || { echo "profile.sh: needs perf (apt-get install linux-perf)" >&2; exit 1; }
F="$ROOT/plugins/tabular/samples/jet-0.json"
HOST_BIN=$HOSTBIN start_host "$REPO" --threads 1
"$BIN/tensorgate" bench --model tabular --file "$F" --concurrency 64 --requests 5000 --warmup 500 >/dev/null
"$BIN/tensorgate" bench --model tabular --file "$F" --concurrency 64 --requests 10000000 --duration $((SECS + 3)) --warmup 0 --json > "$WORK/bench.json" &
LOAD=$!
sleep 1
DATA=${PERF_OUT:-$WORK/perf.data}
perf record -F 1999 -g -p "$HOST_PID" -o "$DATA" -- sleep "$SECS" >/dev/null 2>&1
wait "$LOAD"
stop_host
python3 -c 'import json,sys; print("%.0f req/s during the profile" % json.load(open(sys.argv[1]))["requests_per_s"])' "$WORK/bench.json"
top() { perf report -i "$DATA" --no-children --sort "$1" -g none 2>/dev/null | grep '%' | grep -v '^#' | head -"$2"; }
echo "-- by thread"; top comm 3
echo "-- by library"; top dso 6
echo "-- top symbols (self)"; top symbol "${TOP:-15}"
