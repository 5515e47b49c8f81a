#!/usr/bin/env bash
# U-Net serving overhead: a full synthetic LArTPC event (3 planes) through
# the host end to end (client -> QUIC -> preprocess -> batched U-Net forward
# -> postprocess -> reply) vs the bare tch forward of the same number of
# 512x512 tiles at the batch size the host formed, same intra-op threads,
# same run.
# Usage: bench/unet-overhead.sh [EVENT_DIR] [EVENTS]   (THREADS=2 by default)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/bench/common.sh"
EVENT=${1:-$WORK/event}
EVENTS=${2:-2}
THREADS=${THREADS:-2}
if [ ! -f "$EVENT/plane-2.npy" ]; then
    "${PYTHON:-$HOME/.cache/tensorgate/torch-venv/bin/python}" "$ROOT/scripts/make_models.py" --event "$EVENT" --seed 1
fi
PLANES=("$EVENT"/plane-0.npy "$EVENT"/plane-1.npy "$EVENT"/plane-2.npy)
start_host "$REPO" --threads "$THREADS"
stats() { "$BIN/tensorgate" status | python3 -c 'import json,sys; m=[m for m in json.load(sys.stdin)["models"] if m["name"]=="lartpc-dense"][0]; print(m["forwards"], m["forward_rows"], m["forward_us"])'; }
"$BIN/tensorgate" submit --model lartpc-dense --quiet --output-dir "$WORK/out" "${PLANES[2]}" >/dev/null   # warm-up
before=$(stats)
ITEMS=()
for _ in $(seq "$EVENTS"); do ITEMS+=("${PLANES[@]}"); done
start=$(date +%s.%N)
"$BIN/tensorgate" submit --model lartpc-dense --quiet --output-dir "$WORK/out" --items-per-request 3 "${ITEMS[@]}" >/dev/null
end=$(date +%s.%N)
after=$(stats)
stop_host
read -r batch rows_per_event < <(python3 -c '
import sys
f0, r0, u0 = map(int, sys.argv[1].split()); f1, r1, u1 = map(int, sys.argv[2].split()); n = int(sys.argv[3])
print(max(1, round((r1 - r0) / (f1 - f0))), (r1 - r0) / n)' "$before" "$after" "$EVENTS")
bare=$("$BIN/bare-forward" --model "$REPO/lartpc-dense/1/model.pt" --shape "$batch,1,512,512" --iters 3 --warmup 1 --threads "$THREADS")
python3 - "$before" "$after" "$EVENTS" "$start" "$end" "$batch" "$rows_per_event" "$bare" <<'PY'
import json, sys
f0, r0, u0 = map(int, sys.argv[1].split()); f1, r1, u1 = map(int, sys.argv[2].split())
n, start, end = int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
batch, rows = int(sys.argv[6]), float(sys.argv[7])
bare = json.loads(sys.argv[8])["us"]["p50"] / 1e6
e2e = (end - start) / n
host_fwd = (u1 - u0) / 1e6 / n
bare_event = bare * rows / batch
print(f"| tiles per event | host batch (mean) | end to end per event | host forward per event | bare forward per event | serving overhead (e2e vs bare) |")
print(f"|---|---|---|---|---|---|")
print(f"| {rows:.0f} | {batch} | {e2e:.2f} s | {host_fwd:.2f} s | {bare_event:.2f} s | {100 * (e2e / bare_event - 1):+.1f} % |")
PY
