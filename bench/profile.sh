#!/usr/bin/env bash
# Where the host's CPU goes for single-item tabular requests at concurrency 64
# (issue 17): `perf record -g` (Debian linux-perf) on a host for SECONDS while
# `tensorgate bench` loads it; prints req/s during the profile, the split by
# thread and by library, and the top symbols by self time.
# Usage: bench/profile.sh [HOST_BINARY] [SECONDS]   (perf.data kept in $PERF_OUT if set)
# ITEMS=1000 CONCURRENCY=4: many-item requests instead. GROUPED=1: records
# DWARF call graphs (499 Hz) and prints bench/profile_groups.py's table (where
# on the item path the samples fall), with µs per item when HOST_US_PER_ITEM
# (the host's CPU per item, from bench/many-items.sh) is given.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/bench/common.sh"
export LD_LIBRARY_PATH="$ROOT/.libtorch/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
HOSTBIN=${1:-$BIN/tensorgate-host}
SECS=${2:-3}
command -v perf >/dev/null || { echo "profile.sh: needs perf (apt-get install linux-perf)" >&2; exit 1; }
F="$ROOT/plugins/tabular/samples/jet-0.json"
ITEMS=${ITEMS:-1}
CONC=${CONCURRENCY:-64}
LOAD_ARGS=(--model tabular --file "$F" --items "$ITEMS" --concurrency "$CONC")
HOST_BIN=$HOSTBIN start_host "$REPO" --threads 1
"$BIN/tensorgate" bench "${LOAD_ARGS[@]}" --requests $((5000 / ITEMS + 4)) --warmup 0 >/dev/null
"$BIN/tensorgate" bench "${LOAD_ARGS[@]}" --requests 10000000 --duration $((SECS + 3)) --warmup 0 --json > "$WORK/bench.json" &
LOAD=$!
sleep 1
DATA=${PERF_OUT:-$WORK/perf.data}
if [ "${GROUPED:-0}" = 1 ]; then
    perf record -F 499 --call-graph dwarf,16384 -p "$HOST_PID" -o "$DATA" -- sleep "$SECS" >/dev/null 2>&1
else
    perf record -F 1999 -g -p "$HOST_PID" -o "$DATA" -- sleep "$SECS" >/dev/null 2>&1
fi
wait "$LOAD"
stop_host
python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print("%.0f req/s, %.0f items/s during the profile" % (d["requests_per_s"], d["items_per_s"]))' "$WORK/bench.json"
if [ "${GROUPED:-0}" = 1 ]; then
    perf script -i "$DATA" -F comm,ip,sym --no-inline 2>/dev/null | python3 "$ROOT/bench/profile_groups.py" ${HOST_US_PER_ITEM:-}
    exit 0
fi
top() { perf report -i "$DATA" --no-children --sort "$1" -g none 2>/dev/null | grep '%' | grep -v '^#' | head -"$2"; }
echo "-- by thread"; top comm 3
echo "-- by library"; top dso 6
echo "-- top symbols (self)"; top symbol "${TOP:-15}"
