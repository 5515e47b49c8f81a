#!/usr/bin/env bash
# Dynamic batching on the conv model (patch-cnn: 64x64 patches, 3 conv
# layers): host throughput with batching off vs on at concurrency 1, 8, 32
# (single-patch requests, loopback), next to a bare tch forward loop at batch
# sizes 1, 8, 32 (libtorch default threads, like the host). Medians over ROUNDS.
# Usage: bash bench/conv-batching.sh [ROUNDS] [REQUESTS]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
ROUNDS=${1:-3}
REQUESTS=${2:-1500}
# shellcheck source=bench/common.sh
. "$ROOT/bench/common.sh"
THREADS=$(nproc)
# One patch with a track, as .npy [1, 1, 64, 64] f32.
python3 - "$WORK/patch.npy" <<'PY'
import struct, sys
vals = [0.0] * 4096
for c in range(64):
    vals[(20 + c // 3) * 64 + c] = 50.0
header = "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 1, 64, 64), }"
header += " " * ((64 - (10 + len(header) + 1) % 64) % 64) + "\n"
with open(sys.argv[1], "wb") as f:
    f.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode())
    f.write(struct.pack("<4096f", *vals))
PY
# A copy of the repository with batching off for patch-cnn.
cp -r "$REPO" "$WORK/repo-off"
sed -i 's/^max_batch = 64$/batching = false/' "$WORK/repo-off/patch-cnn/1/manifest.toml"
grep -q '^batching = false' "$WORK/repo-off/patch-cnn/1/manifest.toml"
for r in $(seq "$ROUNDS"); do
    for b in 1 8 32; do
        "$BIN/bare-forward" --model "$REPO/patch-cnn/1/model.pt" --shape "$b,1,64,64" --iters $((3000 / b)) --threads "$THREADS" \
            | sed "s/^/bare-$b /" >> "$WORK/out"
    done
    for mode in on off; do
        repo=$REPO; [ $mode = off ] && repo="$WORK/repo-off"
        start_host "$repo" >/dev/null
        for c in 1 8 32; do
            "$BIN/tensorgate" bench --model patch-cnn --file "$WORK/patch.npy" --requests "$REQUESTS" --warmup 50 \
                --concurrency "$c" --json | sed "s/^/$mode-$c /" >> "$WORK/out"
        done
        stop_host
    done
done
echo "machine: $(nproc) cores, load average at end: $(cut -d' ' -f1-3 /proc/loadavg); libtorch threads: $THREADS"
PYTHONPATH="$ROOT/bench" python3 - "$WORK/out" <<'PY'
import sys
from tagged import load, med
rows = load(sys.argv[1])
print(f"rounds: {len(rows['on-1'])} (medians across rounds); items/s, single-patch requests")
print("| concurrency / batch | batching off | batching on | on/off | bare tch loop at batch = c | on / bare |")
print("|---|---|---|---|---|---|")
for c in (1, 8, 32):
    off = med([x["items_per_s"] for x in rows[f"off-{c}"]])
    on = med([x["items_per_s"] for x in rows[f"on-{c}"]])
    bare = med([x["calls_per_s"] * c for x in rows[f"bare-{c}"]])
    print(f"| {c} | {off:.0f} | {on:.0f} | {on / off:.2f} | {bare:.0f} | {on / bare:.2f} |")
for c in (1, 8, 32):
    p50 = med([x["latency_us"]["p50"] for x in rows[f"on-{c}"]])
    print(f"batching on, concurrency {c}: p50 {p50 / 1e3:.2f} ms")
PY
