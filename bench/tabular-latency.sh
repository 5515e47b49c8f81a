#!/usr/bin/env bash
# Tabular MLP over QUIC on loopback vs the bare tch forward of the same model.
# Runs ROUNDS rounds of each measurement in one go and prints the medians.
# Usage: bash bench/tabular-latency.sh [ROUNDS] [REQUESTS]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
ROUNDS=${1:-5}
REQUESTS=${2:-5000}
# shellcheck source=bench/common.sh
. "$ROOT/bench/common.sh"
OUT="$WORK/out"
start_host
SAMPLE="$ROOT/plugins/tabular/samples/jet-0.json"
for r in $(seq "$ROUNDS"); do
    "$BIN/bare-forward" --model "$REPO/tabular/1/model.pt" --shape 1,16 --threads 1 | sed 's/^/bare1 /' >> "$OUT"
    "$BIN/tensorgate" bench --model tabular --file "$SAMPLE" --requests "$REQUESTS" --concurrency 1 --json | sed 's/^/c1 /' >> "$OUT"
    "$BIN/tensorgate" bench --model tabular --file "$SAMPLE" --requests $((REQUESTS * 4)) --concurrency 64 --json | sed 's/^/c64 /' >> "$OUT"
done
PYTHONPATH="$ROOT/bench" python3 - "$OUT" <<'PY'
import sys
from tagged import load, med
rows = load(sys.argv[1])
b = rows["bare1"]; c1 = rows["c1"]; c64 = rows["c64"]
print(f"rounds: {len(c1)} (medians across rounds)")
print("| measurement | p50 µs | p90 µs | p99 µs | req/s |")
print("|---|---|---|---|---|")
print(f"| bare tch forward, batch 1, 1 thread | {med([x['us']['p50'] for x in b]):.1f} | {med([x['us']['p90'] for x in b]):.1f} | {med([x['us']['p99'] for x in b]):.1f} | {med([x['calls_per_s'] for x in b]):.0f} |")
for name, rs in (("host over QUIC, concurrency 1", c1), ("host over QUIC, concurrency 64", c64)):
    print(f"| {name} | {med([x['latency_us']['p50'] for x in rs]):.1f} | {med([x['latency_us']['p90'] for x in rs]):.1f} | {med([x['latency_us']['p99'] for x in rs]):.1f} | {med([x['requests_per_s'] for x in rs]):.0f} |")
s = {k: med([x['server_us_per_item'][k] for x in c1]) for k in ("queue", "preprocess", "forward", "postprocess")}
print(f"\nserver-side per item at concurrency 1 (µs): " + ", ".join(f"{k} {v:.1f}" for k, v in s.items()))
print(f"errors: {sum(x['errors'] for x in c1 + c64)}")
PY
