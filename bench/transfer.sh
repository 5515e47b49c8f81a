#!/usr/bin/env bash
# Event transfer through the host: a full synthetic 3-plane LArTPC event
# (2400 + 2400 + 3456 wires x 1008 ticks, f32, ~95 % zeros) per request, and
# 100 items of 1 MiB (512x512 f32 planes) per request, each with and without
# zstd, served by the `plane-stats` application (generic tensors plugin, a
# cheap per-plane summary model). Prints medians over ROUNDS rounds.
# Usage: bash bench/transfer.sh [ROUNDS]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
ROUNDS=${1:-3}
# shellcheck source=bench/common.sh
. "$ROOT/bench/common.sh"
"$BIN/zstd-levels" --write-event "$WORK/event" >/dev/null
"$BIN/zstd-levels" --write-plane "$WORK/plane-1mib.npy" 512 512
start_host
EVENT=(--file "$WORK/event/plane-u.npy" --file "$WORK/event/plane-v.npy" --file "$WORK/event/plane-y.npy")
for r in $(seq "$ROUNDS"); do
    for z in "" --no-compress; do
        tag=${z:+raw}; tag=${tag:-zstd}
        "$BIN/tensorgate" bench --model plane-stats "${EVENT[@]}" --requests 20 --warmup 2 $z --json | sed "s/^/event-$tag /" >> "$WORK/out"
        "$BIN/tensorgate" bench --model plane-stats --file "$WORK/plane-1mib.npy" --items 100 --requests 5 --warmup 1 $z --json | sed "s/^/mib100-$tag /" >> "$WORK/out"
    done
done
PYTHONPATH="$ROOT/bench" python3 - "$WORK/out" <<'PY'
import sys
from tagged import load, med
rows = load(sys.argv[1])
print(f"rounds: {len(rows['event-zstd'])} (medians across rounds)")
print("| request | zstd | raw MB/s | requests/s | p50 ms |")
print("|---|---|---|---|---|")
for tag, name in (("event", "3-plane event (33.3 MB raw)"), ("mib100", "100 items x 1 MiB")):
    for z in ("zstd", "raw"):
        rs = rows[f"{tag}-{z}"]
        print(f"| {name} | {'on' if z == 'zstd' else 'off'} | {med([x['raw_mb_per_s'] for x in rs]):.0f} | "
              f"{med([x['requests_per_s'] for x in rs]):.2f} | {med([x['latency_us']['p50'] for x in rs]) / 1e3:.1f} |")
PY
