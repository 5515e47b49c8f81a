#!/usr/bin/env bash
# LArTPC applications on a full synthetic event (planes of 2400, 2400 and
# 3456 wires x 1008 ticks): (1) plugin pre/post-processing per event in WASM
# vs the same SDK code compiled natively (bench/src/plugin_overhead.rs);
# (2) end-to-end events/s through a host on loopback (client -> QUIC ->
# preprocess -> U-Net forward on the non-empty 512x512 tiles -> postprocess).
# Usage: bench/lartpc-event.sh [EVENT_DIR] [EVENTS]
#   EVENT_DIR holds plane-0/1/2.npy; made with numpy if missing:
#   ~/.cache/tensorgate/torch-venv/bin/python scripts/make_models.py --event EVENT_DIR
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/bench/common.sh"
EVENT=${1:-$WORK/event}
EVENTS=${2:-3}
[ -x "$BIN/plugin-overhead" ] || cargo build --release -q -p tensorgate-bench --bin plugin-overhead
if [ ! -f "$EVENT/plane-2.npy" ]; then
    "${PYTHON:-$HOME/.cache/tensorgate/torch-venv/bin/python}" "$ROOT/scripts/make_models.py" --event "$EVENT" --seed 1
fi
PLANES=("$EVENT"/plane-0.npy "$EVENT"/plane-1.npy "$EVENT"/plane-2.npy)

echo "== plugin pre/post per event: WASM vs native (median of 5)"
for app in lartpc-dense lartpc-sparse; do
    "$BIN/plugin-overhead" "$REPO/$app/1" "${PLANES[@]}" --iters 5
done

echo "== end to end: $EVENTS events (3 planes each) through a host, ${THREADS:-0} intra-op threads (0: libtorch default)"
start_host "$REPO" --threads "${THREADS:-0}"
ITEMS=()
for _ in $(seq "$EVENTS"); do ITEMS+=("${PLANES[@]}"); done
# Warm-up (model load, first forward), then timed.
"$BIN/tensorgate" submit --model lartpc-dense --quiet --output-dir "$WORK/out" "${PLANES[2]}" >/dev/null
start=$(date +%s.%N)
"$BIN/tensorgate" submit --model lartpc-dense --quiet --output-dir "$WORK/out" --items-per-request 3 "${ITEMS[@]}" >/dev/null
end=$(date +%s.%N)
python3 -c "import sys; s=float(sys.argv[2])-float(sys.argv[1]); n=int(sys.argv[3]); print(f'lartpc-dense: {n} events in {s:.2f} s = {n/s:.3f} events/s ({s/n:.2f} s per event)')" "$start" "$end" "$EVENTS"
"$BIN/tensorgate" models | grep -E "NAME|lartpc-dense"
stop_host
