#!/usr/bin/env bash
# Issue 32: the tabular MLP and the LArTPC U-Net in each model format side by
# side, through one host over QUIC on loopback, each served by the generic
# tensors plugin (.npy in, .npz out) so that only the model format differs:
# TorchScript (the shipped model.pt), ONNX (plugins/tensors/bundles/*-onnx)
# and AOTInductor (*-aoti, model.pt2), all with the same weights. Requests/s and p50 at concurrency 1, 8 and 64, and each
# version's load time (the host's `loaded ... load_ms` log line: manifest,
# plugin, model, checks); and the U-Net's bare forward in each format on the
# same tile and threads (`bare-backend`: the host's own backend, no plugin,
# batcher or network) against the host at concurrency 1. ROUNDS rounds,
# medians across them.
# Usage: bash bench/formats.sh [ROUNDS] [SECONDS_TABULAR] [SECONDS_UNET]
# TENSORGATE_BIN: the build to run (default target/release); TENSORGATE_REPO:
# the repository holding the built bundles (default target/repository).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
ROUNDS=${1:-3}
SECS_TAB=${2:-5}
SECS_UNET=${3:-10}
BARE_ITERS=${BARE_ITERS:-40}
# The U-Net's intra-op threads (host and bare loop alike); the MLP runs on 1.
UNET_THREADS=${UNET_THREADS:-2}
# shellcheck source=scripts/env.sh
. "$ROOT/scripts/env.sh"
BIN="${TENSORGATE_BIN:-$ROOT/target/release}"
REPO="${TENSORGATE_REPO:-$ROOT/target/repository}"
PY="$TENSORGATE_CACHE/venv/bin/python"
[ -x "$BIN/tensorgate-host" ] && [ -x "$BIN/tensorgate" ] && [ -x "$BIN/bare-backend" ] || { echo "build the host, the CLI and bench's bare-backend first" >&2; exit 1; }
[ -f "$REPO/tabular-onnx/1/model.onnx" ] || { echo "$REPO has no tabular-onnx bundle: run scripts/build-plugins" >&2; exit 1; }
WORK=$(mktemp -d)
HOST_PID=""
trap '[ -n "$HOST_PID" ] && kill $HOST_PID 2>/dev/null; rm -rf "$WORK"' EXIT

# The six applications: NAME-ts and NAME-aoti from the ONNX bundle's manifest
# with the TorchScript and AOTInductor files, the U-Net on UNET_THREADS
# intra-op threads, the MLP on 1.
R="$WORK/repo"
for m in tabular unet; do
    src="$REPO/$m-onnx/1"
    mkdir -p "$R/$m-onnx/1" "$R/$m-ts/1" "$R/$m-aoti/1"
    cp "$src/model.onnx" "$src/plugin.wasm" "$R/$m-onnx/1/"
    sed -e 's/^threads = .*//' -e '/^\[model\]/a threads = THREADS' "$src/manifest.toml" > "$R/$m-onnx/1/manifest.toml"
    sed -e "s/^name = \"$m-onnx\"/name = \"$m-ts\"/" -e 's/^file = "model.onnx"/file = "model.pt"/' \
        -e '/^format = /d' -e '/^optimization = /d' "$R/$m-onnx/1/manifest.toml" > "$R/$m-ts/1/manifest.toml"
    sed -e "s/^name = \"$m-onnx\"/name = \"$m-aoti\"/" -e 's/^file = "model.onnx"/file = "model.pt2"/' \
        -e '/^format = /d' -e '/^optimization = /d' "$R/$m-onnx/1/manifest.toml" > "$R/$m-aoti/1/manifest.toml"
    cp "$src/plugin.wasm" "$R/$m-ts/1/"
    cp "$src/plugin.wasm" "$REPO/$m-aoti/1/model.pt2" "$R/$m-aoti/1/"
done
cp "$ROOT/plugins/tabular/model.pt" "$R/tabular-ts/1/model.pt"
cp "$ROOT/plugins/lartpc-dense/model.pt" "$R/unet-ts/1/model.pt"
sed -i 's/^threads = THREADS/threads = 1/' "$R"/tabular-*/1/manifest.toml
sed -i "s/^threads = THREADS/threads = $UNET_THREADS/" "$R"/unet-*/1/manifest.toml

# Inputs: one jet's 16 features [1, 16]; one 512x512 tile of the sample plane [1, 1, 512, 512].
"$PY" - "$ROOT" "$WORK" <<'PY'
import sys, numpy as np
root, work = sys.argv[1], sys.argv[2]
x = np.load(f"{root}/plugins/tensors/bundles/tabular-onnx/sample.npy")[:1]
np.save(f"{work}/jet.npy", np.ascontiguousarray(x))
s = np.load(f"{root}/plugins/lartpc-dense/samples/plane-crop.npz")
plane = np.zeros(tuple(s["shape"]), np.float32)
plane[s["pixels"][:, 0], s["pixels"][:, 1]] = s["values"]
plane = np.where(plane > 10.0, plane, 0).astype(np.float32)
np.save(f"{work}/tile.npy", np.ascontiguousarray(plane[:512, :512][None, None]))
PY

state=$(mktemp -d "$WORK/state.XXXX")
RUST_LOG=info NO_COLOR=1 "$BIN/tensorgate-host" --repository "$R" --listen 127.0.0.1:0 --state-dir "$state" >/dev/null 2>"$WORK/host.log" &
HOST_PID=$!
for _ in $(seq 600); do [ -f "$state/listening" ] && break; sleep 0.1; done
[ -f "$state/listening" ] || { cat "$WORK/host.log" >&2; echo "host did not start" >&2; exit 1; }
export TENSORGATE_HOST=$(cat "$state/listening") TENSORGATE_FINGERPRINT=$(cat "$state/fingerprint")
echo "machine: $(nproc) cores, load average at start: $(cut -d' ' -f1-3 /proc/loadavg); onnxruntime: ${ORT_DYLIB_PATH}; U-Net threads: $UNET_THREADS"

OUT="$WORK/out"
for r in $(seq "$ROUNDS"); do
    for m in tabular-ts tabular-onnx tabular-aoti unet-ts unet-onnx unet-aoti; do
        case $m in
            tabular-*) file="$WORK/jet.npy" secs=$SECS_TAB warm=200 ;;
            *) file="$WORK/tile.npy" secs=$SECS_UNET warm=4 ;;
        esac
        for c in 1 8 64; do
            # The host's CPU time over the cell (utime + stime, clock ticks), warm-up included.
            before=$(awk '{print $14 + $15}' "/proc/$HOST_PID/stat")
            line=$("$BIN/tensorgate" bench --model "$m" --file "$file" --duration "$secs" --warmup "$warm" --concurrency "$c" --json)
            after=$(awk '{print $14 + $15}' "/proc/$HOST_PID/stat")
            echo "$m:c$c {\"host_cpu_s\":$(( after - before ))e-2,${line#\{}" >> "$OUT"
        done
    done
    for m in unet-ts unet-onnx unet-aoti; do
        "$BIN/bare-backend" --bundle "$R/$m/1" --npy "$WORK/tile.npy" --threads "$UNET_THREADS" --iters "$BARE_ITERS" 2>/dev/null | sed "s/^/$m:bare /" >> "$OUT"
    done
done
sed 's/\x1b\[[0-9;]*m//g' "$WORK/host.log" | grep ' loaded' > "$WORK/loaded" || true
PYTHONPATH="$ROOT/bench" python3 - "$OUT" "$WORK/loaded" <<'PY'
import re, sys
from tagged import load, med
rows = load(sys.argv[1])
loads = {}
for line in open(sys.argv[2]):
    app = re.search(r'app="?([^"\s]+)', line)
    ms = re.search(r"load_ms=([0-9.]+)", line)
    if app and ms:
        loads[app.group(1)] = float(ms.group(1))
print(f"rounds: {len(rows['tabular-ts:c1'])} (medians across rounds)")
print("| model | format | load ms | c1 req/s | c1 p50 µs | c8 req/s | c8 p50 µs | c64 req/s | c64 p50 µs | errors |")
print("|---|---|---|---|---|---|---|---|---|---|")
for m in ("tabular-ts", "tabular-onnx", "tabular-aoti", "unet-ts", "unet-onnx", "unet-aoti"):
    model, fmt = m.split("-")
    cells = []
    errors = 0
    for c in (1, 8, 64):
        rs = rows[f"{m}:c{c}"]
        cells += [f"{med([x['requests_per_s'] for x in rs]):.1f}", f"{med([x['latency_us']['p50'] for x in rs]):.0f}"]
        errors += sum(x["errors"] for x in rs)
    name = {"tabular": "tabular MLP", "unet": "U-Net 512x512 tile"}[model]
    print(f"| {name} | {dict(ts='TorchScript', onnx='ONNX', aoti='AOTInductor')[fmt]} | {loads.get(m, float('nan')):.0f} | " + " | ".join(cells) + f" | {errors} |")
print()
print("Host CPU per request (user + system over each cell, warm-up requests included), µs:")
print()
print("| model | format | c1 | c8 | c64 |")
print("|---|---|---|---|---|")
for m in ("tabular-ts", "tabular-onnx", "tabular-aoti", "unet-ts", "unet-onnx", "unet-aoti"):
    model, fmt = m.split("-")
    cells = []
    for c in (1, 8, 64):
        rs = rows[f"{m}:c{c}"]
        cells.append(f"{med([x['host_cpu_s'] * 1e6 / max(1, x['requests']) for x in rs]):.0f}")
    name = {"tabular": "tabular MLP", "unet": "U-Net 512x512 tile"}[model]
    print(f"| {name} | {dict(ts='TorchScript', onnx='ONNX', aoti='AOTInductor')[fmt]} | " + " | ".join(cells) + " |")
print()
print("| U-Net, one 512x512 tile | bare forward p50 ms | bare CPU ms/call | RSS MiB per instance | host c1 p50 ms | host overhead (end to end) | host forward ms (mean) | host stages outside the forward ms | their share of the forward |")
print("|---|---|---|---|---|---|---|---|---|")
for m in ("unet-ts", "unet-onnx", "unet-aoti"):
    bares = rows[f"{m}:bare"]
    bare = med([x["us"]["p50"] for x in bares]) / 1e3
    cpu = med([x.get("cpu_us_per_call") or float("nan") for x in bares]) / 1e3
    rss = med([x.get("rss_instance_mib") or float("nan") for x in bares])
    host = med([x["latency_us"]["p50"] for x in rows[f"{m}:c1"]]) / 1e3
    stages = [x["server_us_per_item"] for x in rows[f"{m}:c1"]]
    forward = med([s["forward"] for s in stages]) / 1e3
    outside = med([s["queue"] + s["preprocess"] + s["postprocess"] for s in stages]) / 1e3
    fmt = dict(ts='TorchScript', onnx='ONNX', aoti='AOTInductor')[m.split("-")[1]]
    print(f"| {fmt} | {bare:.1f} | {cpu:.1f} | {rss:.0f} | {host:.1f} | {100 * (host / bare - 1):+.1f} % | {forward:.1f} | {outside:.2f} | {100 * outside / forward:.1f} % |")
PY
