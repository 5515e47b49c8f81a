#!/usr/bin/env bash
# The GPU check (issue 17), one script for a machine with a GPU:
#   1. device detection: the CUDA build's `--devices` report (libtorch_cuda
#      linked and loaded, CUDA devices seen); stops here if $DEVICE is absent;
#   2. the lartpc-dense U-Net on $DEVICE through the host, end to end (client
#      -> QUIC -> preprocess -> staged, non-blocking copy in -> forward -> one
#      copy back -> postprocess -> reply), with 1, 2 and 4 instances of the
#      model on that one device ($INSTANCES), $CONCURRENCY requests in flight;
#   3. the bare tch loop on $DEVICE at the batch the host formed (bytes in,
#      copy to the device, forward, copy back), same run;
# and prints one table. Build first: scripts/setup --cuda && scripts/build-cuda
# (host and bare-forward with the `cuda` feature, in target/cuda/release).
# Usage: bench/gpu.sh [EVENTS]       (default 8 events of 3 planes)
#   DEVICE=cuda:0 INSTANCES="1 2 4" CONCURRENCY=4 THREADS=4
#   DEVICE=cpu tries the script on a machine without a GPU (CPU build).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DEVICE=${DEVICE:-cuda:0}
EVENTS=${1:-8}
INSTANCES=${INSTANCES:-1 2 4}
CONCURRENCY=${CONCURRENCY:-4}
THREADS=${THREADS:-4}
CLI="$ROOT/target/release/tensorgate"
if [ "$DEVICE" = cpu ]; then
    export TENSORGATE_BIN=${TENSORGATE_BIN:-$ROOT/target/release}
else
    export TENSORGATE_BIN=${TENSORGATE_BIN:-$ROOT/target/cuda/release}
fi
[ -x "$CLI" ] || { echo "gpu.sh: no client at $CLI: run scripts/setup first" >&2; exit 1; }
. "$ROOT/bench/common.sh"

echo "== devices ($BIN/tensorgate-host devices)"
report=$("$BIN/tensorgate-host" devices)
echo "$report"
if [ "$DEVICE" != cpu ]; then
    n=${DEVICE#cuda:}
    python3 - "$report" "$n" <<'PY' || exit 1
import json, sys
r, n = json.loads(sys.argv[1]), int(sys.argv[2])
if not (r["cuda_feature"] and r["libtorch_cuda_loaded"]):
    sys.exit(f"gpu.sh: this host binary has no CUDA libtorch ({r}); run scripts/build-cuda")
if r["cuda_devices"] <= n:
    sys.exit(f"gpu.sh: cuda:{n} asked for, libtorch sees {r['cuda_devices']} CUDA device(s)")
PY
    command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
fi

EVENT="$WORK/event"
PYTHON=${PYTHON:-$HOME/.cache/tensorgate/torch-venv/bin/python}
[ -x "$PYTHON" ] || PYTHON=python3
"$PYTHON" "$ROOT/scripts/make_models.py" --event "$EVENT" --seed 1 >/dev/null
PLANES=("$EVENT"/plane-0.npy "$EVENT"/plane-1.npy "$EVENT"/plane-2.npy)
ITEMS=()
for _ in $(seq "$EVENTS"); do ITEMS+=("${PLANES[@]}"); done

# A repository holding lartpc-dense alone, on $DEVICE with $1 instances.
repo_with() {
    local repo="$WORK/repo-$1"
    mkdir -p "$repo"
    cp -r "$REPO/lartpc-dense" "$repo/"
    python3 - "$repo/lartpc-dense/1/manifest.toml" "$DEVICE" "$1" <<'PY'
import re, sys
path, device, n = sys.argv[1:]
text = open(path).read()
text = re.sub(r'(?m)^device = .*$', f'device = "{device}"\ninstances = {n}', text, count=1)
open(path, "w").write(text)
PY
    echo "$repo"
}
stats() { "$CLI" status | python3 -c 'import json,sys; m=[m for m in json.load(sys.stdin)["models"] if m["name"]=="lartpc-dense"][0]; print(m["forwards"], m["forward_rows"], m["forward_us"], m.get("device", "?"))'; }

ROWS=()
for n in $INSTANCES; do
    start_host "$(repo_with "$n")" --threads "$THREADS" >/dev/null
    "$CLI" submit --model lartpc-dense --quiet --output-dir "$WORK/out" "${PLANES[@]}" >/dev/null   # warm-up
    before=$(stats)
    t0=$(date +%s.%N)
    "$CLI" submit --model lartpc-dense --quiet --output-dir "$WORK/out" --items-per-request 3 \
        --concurrency "$CONCURRENCY" "${ITEMS[@]}" >/dev/null
    t1=$(date +%s.%N)
    after=$(stats)
    stop_host
    ROWS+=("$n|$before|$after|$t0|$t1")
done
# The batch the host formed with one instance, for the bare loop.
batch=$(python3 -c '
import sys
f0, r0 = map(int, sys.argv[1].split("|")[1].split()[:2]); f1, r1 = map(int, sys.argv[1].split("|")[2].split()[:2])
print(max(1, round((r1 - r0) / max(1, f1 - f0))))' "${ROWS[0]}")
bare=$("$BIN/bare-forward" --model "$REPO/lartpc-dense/1/model.pt" --device "$DEVICE" --shape "$batch,1,512,512" \
    --iters 10 --warmup 3 --threads "$THREADS")
python3 - "$DEVICE" "$EVENTS" "$batch" "$bare" "${ROWS[@]}" <<'PY'
import json, sys
device, events, batch, bare = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), json.loads(sys.argv[4])
bare_s = bare["us"]["p50"] / 1e6
print(f"\n{device}: {events} events of 3 planes, bare tch loop at batch {batch}: {bare_s * 1e3:.1f} ms per forward (p50 of {bare['iters']})\n")
print("| instances | device | events/s | end to end per event | forward time per event (all instances) | tiles per event | mean batch | bare forward per event | e2e vs bare |")
print("|---|---|---|---|---|---|---|---|---|")
for row in sys.argv[5:]:
    n, before, after, t0, t1 = row.split("|")
    f0, r0, u0, _ = before.split(); f1, r1, u1, dev = after.split()
    f, r, u = int(f1) - int(f0), int(r1) - int(r0), int(u1) - int(u0)
    wall = float(t1) - float(t0)
    tiles = r / events
    bare_event = bare_s * tiles / batch
    print(f"| {n} | {dev} | {events / wall:.2f} | {wall / events * 1e3:.1f} ms | {u / 1e3 / events:.1f} ms | {tiles:.0f} | {r / max(1, f):.1f} | {bare_event * 1e3:.1f} ms | {wall / events / bare_event:.2f}x |")
PY
