#!/usr/bin/env bash
# Issue 31 targets: the Open Inference Protocol fronts against the QUIC
# path, same host, same run, rounds interleaved.
# 1. The tabular MLP (plugins/tabular, JSON through its plugin) at each
#    concurrency: QUIC (`tensorgate bench`, one stream per request in flight),
#    HTTP (Debian's wrk, one keep-alive connection per request in flight, a
#    KServe v2 JSON body with the jet as the one BYTES element, the load
#    bench/torchserve.sh gives TorchServe) and gRPC (bench/src/oip_load.rs:
#    ModelInfer on one HTTP/2 channel, raw contents). Requests/s, p50, and the
#    host's CPU per request (utime+stime of the host process over the cell,
#    /proc/PID/stat).
# 2. One 33.3 MB LArTPC-sized plane (1 x 8256 x 1008 f32: the three planes
#    of an event stacked) to `plane-stats` (generic tensors plugin) through
#    gRPC raw contents and through the HTTP binary extension: MB/s of request
#    data, at concurrency 1.
# Prints markdown tables of medians across rounds, and the ratios against QUIC.
# Usage: bash bench/oip.sh [ROUNDS] [SECONDS] ["CONCURRENCIES"]   (defaults 3, 8, "1 8 64")
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
ROUNDS=${1:-3}
DUR=${2:-8}
CONCS=${3:-"1 8 64"}
# shellcheck source=bench/common.sh
. "$ROOT/bench/common.sh"
command -v wrk >/dev/null || { echo "installing wrk (apt)" >&2; apt-get install -y --no-install-recommends wrk >/dev/null 2>&1 || { apt-get update >/dev/null && apt-get install -y --no-install-recommends wrk >/dev/null; }; }
PY=${TENSORGATE_CACHE:-$HOME/.cache/tensorgate}/venv/bin/python
SAMPLE="$ROOT/plugins/tabular/samples/jet-0.json"
"$PY" - "$SAMPLE" "$WORK" <<'PY'
import json, sys, numpy as np
sample, work = sys.argv[1], sys.argv[2]
body = {"inputs": [{"name": "payload", "shape": [1], "datatype": "BYTES", "data": [open(sample).read()]}]}
open(f"{work}/tabular.json", "w").write(json.dumps(body))
rng = np.random.default_rng(7)
plane = np.zeros((1, 8256, 1008), np.float32)
lit = rng.random(plane.shape) < 0.05
plane[lit] = rng.random(int(lit.sum()), dtype=np.float32) * 100
np.save(f"{work}/plane.npy", plane)
head = json.dumps({"inputs": [{"name": "plane", "shape": list(plane.shape), "datatype": "FP32",
                               "parameters": {"binary_data_size": plane.nbytes}}],
                   "parameters": {"binary_data_output": True}}).encode()
open(f"{work}/plane.bin", "wb").write(head + plane.tobytes())
open(f"{work}/plane.headlen", "w").write(str(len(head)))
PY
start_host "$REPO" --threads 1 --http-listen 127.0.0.1:0 --grpc-listen 127.0.0.1:0
HTTP=$(cat "$TG_STATE/http-listening"); GRPC=$(cat "$TG_STATE/grpc-listening")
cpu() { awk '{print $14 + $15}' "/proc/$HOST_PID/stat"; }
TICK=$(getconf CLK_TCK)
cell() {  # cell TAG COMMAND...: runs it, appends "TAG {json + cpu_us_per_request}"
    local tag=$1; shift
    local before after out
    before=$(cpu)
    out=$("$@" | sed -n 's/^RESULT //p; /^{/p' | tail -1)
    after=$(cpu)
    "$PY" -c 'import json,sys; r=json.loads(sys.argv[1]); r["cpu_us_per_request"]=(int(sys.argv[2])-int(sys.argv[3]))/int(sys.argv[4])*1e6/max(r["requests_per_s"]*r.get("seconds",1),1); print(sys.argv[5], json.dumps(r))' \
        "$out" "$after" "$before" "$TICK" "$tag" >> "$WORK/out"
}
for r in $(seq "$ROUNDS"); do
    for c in $CONCS; do
        cell "quic-$c" "$BIN/tensorgate" bench --model tabular --file "$SAMPLE" --concurrency "$c" --duration "$DUR" --warmup 200 --no-compress --json
        cell "http-$c" env BODY="$WORK/tabular.json" wrk -t "$(( c < 2 ? 1 : 2 ))" -c "$c" -d "${DUR}s" -s "$ROOT/bench/torchserve/post.lua" "http://$HTTP/v2/models/tabular/infer"
        cell "grpc-$c" "$BIN/oip-load" --addr "$GRPC" --model tabular --payload "$SAMPLE" --concurrency "$c" --duration "$DUR"
    done
    cell "plane-grpc" "$BIN/oip-load" --addr "$GRPC" --model plane-stats --npy "$WORK/plane.npy" --input plane --duration "$DUR" --warmup 3
    cell "plane-http" env BODY="$WORK/plane.bin" HEADER_LEN="$(cat "$WORK/plane.headlen")" wrk -t 1 -c 1 -d "${DUR}s" -s "$ROOT/bench/torchserve/post.lua" "http://$HTTP/v2/models/plane-stats/infer"
done
PLANE_MB=$(stat -c %s "$WORK/plane.npy")
PYTHONPATH="$ROOT/bench" "$PY" - "$WORK/out" "$CONCS" "$PLANE_MB" <<'PY'
import sys
from tagged import load, med
rows, concs, plane_bytes = load(sys.argv[1]), sys.argv[2].split(), int(sys.argv[3])
print(f"rounds: {len(rows['quic-' + concs[0]])} (medians across rounds)")
print("| concurrency | protocol | requests/s | p50 µs | host CPU µs/request | req/s vs QUIC | CPU vs QUIC |")
print("|---|---|---|---|---|---|---|")
for c in concs:
    q = rows[f"quic-{c}"]
    q_rps, q_cpu = med([x["requests_per_s"] for x in q]), med([x["cpu_us_per_request"] for x in q])
    for proto in ("quic", "http", "grpc"):
        rs = rows[f"{proto}-{c}"]
        rps, cpu = med([x["requests_per_s"] for x in rs]), med([x["cpu_us_per_request"] for x in rs])
        p50 = med([x["latency_us"]["p50"] for x in rs])
        errors = sum(x.get("errors", 0) for x in rs)
        print(f"| {c} | {proto} | {rps:.0f} | {p50:.0f} | {cpu:.1f} | {rps / q_rps:.2f} | {cpu / q_cpu:.2f} |" + (f" errors: {errors}" if errors else ""))
print()
print(f"| one {plane_bytes / 1e6:.1f} MB plane | requests/s | MB/s | p50 ms |")
print("|---|---|---|---|")
for tag, name in (("plane-grpc", "gRPC raw contents"), ("plane-http", "HTTP binary extension")):
    rs = rows[tag]
    rps = med([x["requests_per_s"] for x in rs])
    print(f"| {name} | {rps:.1f} | {rps * plane_bytes / 1e6:.0f} | {med([x['latency_us']['p50'] for x in rs]) / 1e3:.1f} |")
PY
