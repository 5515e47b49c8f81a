#!/usr/bin/env bash
# Cluster mode on this machine, one run: an engine (nats-server, JetStream),
# one gateway and up to three CPU workers serving the tabular MLP, against a
# host serving it directly.
#  1. gateway overhead: p50 of a single-item request, host vs gateway with one
#     worker, ROUNDS alternating rounds of REQUESTS requests at concurrency 1;
#  2. items/s of 1,000-item requests (concurrency 4) with 1, 2 and 3 workers,
#     and the direct host under the same load;
#  3. worker join to its first item (the worker logs it, from its connection to the engine);
#  4. fleet upload of a new version to the default flip (compile cache warm).
# Usage: bash bench/cluster.sh [ROUNDS] [REQUESTS]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
ROUNDS=${1:-5}
REQUESTS=${2:-3000}
# shellcheck source=bench/common.sh
. "$ROOT/bench/common.sh"
. "$ROOT/scripts/env.sh"
OUT="$WORK/out"
PIDS=()
stop_all() {  # workers and gateways first, the engine last
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do kill "${PIDS[i]}" 2>/dev/null; wait "${PIDS[i]}" 2>/dev/null; done
    [ -n "$HOST_PID" ] && kill "$HOST_PID" 2>/dev/null
    rm -rf "$WORK"
}
trap stop_all EXIT
SAMPLE="$ROOT/plugins/tabular/samples/jet-0.json"
mkdir -p "$WORK/repo" && cp -r "$REPO/tabular" "$WORK/repo/"
for w in 1 2 3; do mkdir -p "$WORK/repo$w" && cp -r "$REPO/tabular" "$WORK/repo$w/"; done

start_host "$WORK/repo" --threads 1
HOST_ADDR=$TENSORGATE_HOST HOST_FP=$TENSORGATE_FINGERPRINT

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$NATS_SERVER" -a 127.0.0.1 -p "$PORT" -js -sd "$WORK/engine" >/dev/null 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/"$PORT") 2>/dev/null && break; sleep 0.1; done
export TENSORGATE_NATS="nats://127.0.0.1:$PORT"
start_worker() {  # N
    mkdir -p "$WORK/w$1"
    "$BIN/tensorgate-host" --repository "$WORK/repo$1" --state-dir "$WORK/w$1" --threads 1 >/dev/null 2> "$WORK/w$1.log" &
    PIDS+=($!)
    for _ in $(seq 600); do [ -s "$WORK/w$1/worker" ] && break; sleep 0.02; done
}
start_worker 1
mkdir -p "$WORK/gw"
"$BIN/tensorgate-host" --gateway --listen 127.0.0.1:0 --state-dir "$WORK/gw" >/dev/null 2>&1 &
PIDS+=($!)
for _ in $(seq 300); do [ -s "$WORK/gw/listening" ] && break; sleep 0.1; done
GW_ADDR=$(cat "$WORK/gw/listening") GW_FP=$(cat "$WORK/gw/fingerprint")
host() { TENSORGATE_HOST=$HOST_ADDR TENSORGATE_FINGERPRINT=$HOST_FP "$BIN/tensorgate" "$@"; }
gw() { TENSORGATE_HOST=$GW_ADDR TENSORGATE_FINGERPRINT=$GW_FP "$BIN/tensorgate" "$@"; }

for r in $(seq "$ROUNDS"); do
    host bench --model tabular --file "$SAMPLE" --requests "$REQUESTS" --concurrency 1 --json | sed 's/^/host1 /' >> "$OUT"
    gw bench --model tabular --file "$SAMPLE" --requests "$REQUESTS" --concurrency 1 --json | sed 's/^/gw1 /' >> "$OUT"
done
many() { "$@" bench --model tabular --file "$SAMPLE" --items 1000 --requests "${MANY_REQUESTS:-20}" --warmup 2 --concurrency 4 --json; }
many host | sed 's/^/hostmany /' >> "$OUT"
many gw | sed 's/^/w1many /' >> "$OUT"
start_worker 2
many gw | sed 's/^/w2many /' >> "$OUT"

# Worker 3 joins while 1,000-item requests flow; time to its first item.
# (long enough that the join happens while it runs: 200 requests of 1,000 items)
( MANY_REQUESTS=200 many gw | sed 's/^/w3join /' >> "$OUT" ) &
LOAD=$!
sleep 0.5
start_worker 3
wait $LOAD
# The worker logs when its first item arrived, measured from its connection to the engine.
echo "join $(sed 's/\x1b\[[0-9;]*m//g' "$WORK/w3.log" | grep -o 'after_ms=[0-9.]*' | head -1 | cut -d= -f2)" >> "$WORK/times"
many gw | sed 's/^/w3many /' >> "$OUT"

# A new version through the gateway: the reply comes once every worker has it ready and routing uses it.
cp -r "$REPO/tabular/1" "$WORK/v2" && sed -i '0,/^version = 1/s//version = 2/' "$WORK/v2/manifest.toml"
T0=$(date +%s.%N)
gw upload "$WORK/v2" > "$WORK/upload.txt"
T1=$(date +%s.%N)
echo "flip $(python3 -c "print($T1 - $T0)")" >> "$WORK/times"
VERSION=$(gw models --json | python3 -c "import json,sys; print('default tabular version', [m['version'] for m in json.load(sys.stdin) if m['name']=='tabular' and m['default']])")

PYTHONPATH="$ROOT/bench" python3 - "$OUT" "$WORK/times" "$(cat "$WORK/upload.txt")" "$VERSION" <<'PY'
import sys
from tagged import load, med
rows = load(sys.argv[1])
times = dict(l.split() for l in open(sys.argv[2]))
h, g = rows["host1"], rows["gw1"]
print(f"machine: 2 cores; rounds: {len(h)} of single-item requests at concurrency 1 (medians across rounds)")
print("| path | p50 µs | p90 µs | p99 µs | req/s |")
print("|---|---|---|---|---|")
for name, rs in (("host, direct", h), ("gateway → engine → 1 worker", g)):
    print(f"| {name} | {med([x['latency_us']['p50'] for x in rs]):.1f} | {med([x['latency_us']['p90'] for x in rs]):.1f} | {med([x['latency_us']['p99'] for x in rs]):.1f} | {med([x['requests_per_s'] for x in rs]):.0f} |")
added = med([x['latency_us']['p50'] for x in g]) - med([x['latency_us']['p50'] for x in h])
print(f"\ngateway overhead on p50: {added:.1f} µs (per round: " + ", ".join(f"{b['latency_us']['p50'] - a['latency_us']['p50']:.0f}" for a, b in zip(h, g)) + ")")
print("\n| 1,000-item requests, concurrency 4 | items/s | errors |")
print("|---|---|---|")
for name, key in (("host, direct", "hostmany"), ("gateway, 1 worker", "w1many"), ("gateway, 2 workers", "w2many"), ("gateway, 3 workers (after the join)", "w3many")):
    r = rows[key][-1]
    print(f"| {name} | {r['items_per_s']:.0f} | {r['errors']} |")
print(f"\nworker join (connected to the engine) to its first item, as the worker logs it: {float(times['join']):.0f} ms")
print(f"fleet upload to default flip: {float(times['flip'])*1e3:.0f} ms wall for `tensorgate upload` ({sys.argv[3]}); then: {sys.argv[4]}")
PY
