#!/usr/bin/env bash
# A Python plugin (plugins/py-tabular, componentize-py, 18 MB) from
# `tensorgate plugin build --repository` to its first reply on a host that
# has never seen it: `tensorgate-host serve` started on a fresh state
# directory (so an empty compile cache) until `tensorgate submit` of one
# item returns. With the precompiled artefact the build leaves in the
# bundle (plugin.cwasm), and without it (the host compiles, as before the
# artefact). Median of RUNS starts each. Then the bundle archive
# (`.tar.zst`, as `upload` sends it) with and without the artefact, and,
# with --cluster, `tensorgate upload` through a gateway to two workers
# (fresh state directories): the upload's time and what each worker logged.
# Usage: bash bench/precompiled-start.sh [RUNS] [--cluster]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
RUNS=${1:-3}
CLUSTER=${2:-}
. "$ROOT/scripts/env.sh"
BIN="$ROOT/target/release"
WORK=$(mktemp -d)
PIDS=()
trap 'for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"' EXIT
echo "machine: $(nproc) cores, load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"

t0=$(date +%s%N)
"$BIN/tensorgate" plugin build "$ROOT/plugins/py-tabular" --repository "$WORK/with" --target-dir "$WORK/target" >"$WORK/build.log" 2>&1 \
    || { cat "$WORK/build.log"; exit 1; }
echo "plugin build --repository: $(( ($(date +%s%N) - t0) / 1000000 )) ms (componentize-py, the check, the artefact)"
BUNDLE="$WORK/with/py-tabular/1"
mkdir -p "$WORK/without/py-tabular"
cp -r "$BUNDLE" "$WORK/without/py-tabular/1"
rm "$WORK/without/py-tabular/1/plugin.cwasm"
echo "plugin.wasm $(stat -c %s "$BUNDLE/plugin.wasm") bytes, plugin.cwasm $(stat -c %s "$BUNDLE/plugin.cwasm") bytes"

median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

first_reply() {  # REPO: ms from host exec (fresh state) to the first reply
    local state
    state=$(mktemp -d "$WORK/state.XXXX")
    local t0
    t0=$(date +%s%N)
    RUST_LOG=info "$BIN/tensorgate-host" serve --repository "$1" --listen 127.0.0.1:0 --state-dir "$state" --threads 1 \
        >/dev/null 2>"$state/log" &
    local pid=$!
    while [ ! -s "$state/listening" ]; do sleep 0.005; done
    TENSORGATE_HOST=$(cat "$state/listening") TENSORGATE_FINGERPRINT=$(cat "$state/fingerprint") \
        "$BIN/tensorgate" submit --model py-tabular "$ROOT/plugins/py-tabular/samples/jet-0.json" >/dev/null 2>&1
    echo $(( ($(date +%s%N) - t0) / 1000000 ))
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    grep -q "precompiled artefact" "$state/log" && echo "  (from the bundle's artefact)" >&2 || echo "  (compiled)" >&2
}

for variant in with without; do
    times=()
    for _ in $(seq "$RUNS"); do times+=("$(first_reply "$WORK/$variant")"); done
    echo "fresh host to first reply, bundle $variant its artefact: median $(median "${times[@]}") ms of ${times[*]} ms"
done

pack() { tar -C "$1" -cf - . | zstd -3 -q -c | wc -c; }  # as `upload` packs a bundle (zstd level 3)
t0=$(date +%s%N)
with=$(pack "$BUNDLE")
pack_ms=$(( ($(date +%s%N) - t0) / 1000000 ))
echo "bundle archive (.tar.zst, level 3): $with bytes with the artefact (packed in $pack_ms ms), $(pack "$WORK/without/py-tabular/1") bytes without"

[ "$CLUSTER" = "--cluster" ] || exit 0
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$NATS_SERVER" -a 127.0.0.1 -p "$PORT" -js -sd "$WORK/engine" >/dev/null 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/"$PORT") 2>/dev/null && break; sleep 0.1; done
URL="nats://127.0.0.1:$PORT"
for w in 1 2; do
    mkdir -p "$WORK/worker-$w/repo"
    RUST_LOG=info "$BIN/tensorgate-host" worker --nats "$URL" --repository "$WORK/worker-$w/repo" --state-dir "$WORK/worker-$w/state" --threads 1 \
        >/dev/null 2>"$WORK/worker-$w/log" &
    PIDS+=($!)
done
mkdir -p "$WORK/gateway"
"$BIN/tensorgate-gateway" --nats "$URL" --listen 127.0.0.1:0 --state-dir "$WORK/gateway" >/dev/null 2>"$WORK/gateway/log" &
PIDS+=($!)
while [ ! -s "$WORK/gateway/listening" ]; do sleep 0.01; done
sleep 1  # the workers' adverts
export TENSORGATE_HOST=$(cat "$WORK/gateway/listening") TENSORGATE_FINGERPRINT=$(cat "$WORK/gateway/fingerprint")
for variant in with without; do
    dir="$WORK/$variant/py-tabular/1"
    [ "$variant" = without ] && sed -i 's/^version = 1$/version = 2/' "$dir/manifest.toml" && mv "$dir" "$WORK/without/py-tabular/2" && dir="$WORK/without/py-tabular/2"
    t0=$(date +%s%N)
    "$BIN/tensorgate" upload "$dir" >/dev/null
    up_ms=$(( ($(date +%s%N) - t0) / 1000000 ))
    t1=$(date +%s%N)
    "$BIN/tensorgate" submit --model py-tabular "$ROOT/plugins/py-tabular/samples/jet-0.json" >/dev/null 2>&1
    echo "through a gateway to 2 workers, bundle $variant its artefact: upload returned after $up_ms ms, first reply $(( ($(date +%s%N) - t1) / 1000000 )) ms later"
done
for w in 1 2; do
    echo "worker $w: $(grep -c "plugin loaded from the bundle's precompiled artefact" "$WORK/worker-$w/log") bundle(s) loaded from the artefact; load_ms: $(grep -o 'load_ms[^ ]*' "$WORK/worker-$w/log" | sed 's/\x1b\[[0-9;]*m//g' | tr '\n' ' ')"
done
