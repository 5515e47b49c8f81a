#!/usr/bin/env bash
# The peer (issue 9): TorchServe vs tensorgate on the tabular MLP
# (plugins/tabular/model.pt, 16 features in, 4 scores out), same machine,
# same run, same concurrencies, rounds interleaved; prints one markdown table
# of medians across rounds with the ratio of req/s.
#
# TorchServe (PyPI, in a cache venv) serves the same TorchScript file through
# bench/torchserve/handler.py (same JSON in, same {label: score} out as the
# tabular plugin), twice: without batching (its default) and with batching
# (TS_BATCH, TS_BATCH_DELAY_MS); the ratio is taken against the better of the
# two at each concurrency. It is loaded by Debian's wrk (HTTP/1.1 keep-alive,
# one connection per concurrent request, bench/torchserve/post.lua).
# tensorgate (its manifest batches up to 64, no added delay) is loaded by
# `tensorgate bench` (QUIC, one stream per concurrent request), and through
# its Open Inference Protocol HTTP front by the same wrk with the same jet as
# a KServe v2 JSON body (the jet JSON as the one BYTES element).
#
# Usage: bash bench/torchserve.sh [ROUNDS] [SECONDS] ["CONCURRENCIES"]
#   defaults: 3 rounds, 10 s per cell, "1 8 32 64"  (about 7 minutes)
# Environment: TENSORGATE_CACHE (default ~/.cache/tensorgate) holds the venvs;
#   TS_WORKERS (default: cores), TS_BATCH (default 64, the tabular manifest's
#   max_batch), TS_BATCH_DELAY_MS (default 1) and TS_TORCH_THREADS (default 1)
#   shape TorchServe; TG_HOST_ARGS (default "--threads 1": one libtorch
#   thread for the forward, as each TorchServe worker) goes to the host.
#   BUDGET_S (default 480): no new round starts that would end past it.
#   HOGS (default 0): with N > 0, every cell is run a second time, in the same
#   round, with N CPU-bound processes (busy loops) beside the servers, and a
#   second table gives each server's throughput loss under that contention.
# First run installs (idempotently): wrk and Java 17 (apt, if missing);
# torch 2.13.0 + numpy in CACHE/torch-venv (the venv of scripts/make_models.py,
# if missing); torchserve + torch-model-archiver 0.12.0 + PyYAML in
# CACHE/torchserve-venv, which sees torch-venv's packages through a .pth file.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
ROUNDS=${1:-3}
DUR=${2:-10}
CONCS=${3:-"1 8 32 64"}
CACHE=${TENSORGATE_CACHE:-$HOME/.cache/tensorgate}
TORCH_VENV=$CACHE/torch-venv
TS_VENV=$CACHE/torchserve-venv
TS_VERSION=0.12.0
TS_WORKERS=${TS_WORKERS:-$(nproc)}
TS_BATCH=${TS_BATCH:-64}
TS_BATCH_DELAY_MS=${TS_BATCH_DELAY_MS:-1}
export TS_TORCH_THREADS=${TS_TORCH_THREADS:-1}
TG_HOST_ARGS=${TG_HOST_ARGS:---threads 1}
BUDGET_S=${BUDGET_S:-480}
HOGS=${HOGS:-0}
HOG_PIDS=()
hogs_on() {
    for _ in $(seq "$HOGS"); do python3 -c 'while True: pass' & HOG_PIDS+=($!); done
    sleep 0.5
}
hogs_off() {
    for p in "${HOG_PIDS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
    HOG_PIDS=()
}
SAMPLE="$ROOT/plugins/tabular/samples/jet-0.json"
HERE="$ROOT/bench/torchserve"

# ---- install (idempotent) ----
apt_install() {
    apt-get install -y --no-install-recommends "$@" >/dev/null 2>&1 \
        || { apt-get update >/dev/null 2>&1 && apt-get install -y --no-install-recommends "$@" >/dev/null; }
}
command -v wrk >/dev/null || { echo "installing wrk (apt)" >&2; apt_install wrk; }
java -version 2>&1 | grep -q 'version "\(1[7-9]\|2[0-9]\)' \
    || { echo "installing Java 17 (apt)" >&2; apt_install openjdk-17-jre-headless; }
if ! "$TORCH_VENV/bin/python" -c 'import torch, numpy' 2>/dev/null; then
    echo "installing torch 2.13.0 into $TORCH_VENV (PyPI, ~2.7 GB)" >&2
    python3 -m venv "$TORCH_VENV"
    WHEEL=$(ls "$CACHE"/dl/torch-2.13.0-cp3*-manylinux*.whl 2>/dev/null | head -1 || true)
    "$TORCH_VENV/bin/pip" install -q "${WHEEL:-torch==2.13.0}" numpy
fi
if ! "$TS_VENV/bin/python" -c 'import ts, model_archiver, yaml, torch' 2>/dev/null; then
    echo "installing TorchServe $TS_VERSION into $TS_VENV (PyPI)" >&2
    # Same interpreter as torch-venv, so its site-packages can be shared.
    "$(
        "$TORCH_VENV/bin/python" -c 'import sys; print(sys._base_executable)'
    )" -m venv "$TS_VENV"
    "$TS_VENV/bin/pip" install -q "torchserve==$TS_VERSION" "torch-model-archiver==$TS_VERSION" pyyaml
    purelib() { "$1" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'; }
    purelib "$TORCH_VENV/bin/python" > "$(purelib "$TS_VENV/bin/python")/tensorgate-torch-venv.pth"
    "$TS_VENV/bin/python" -c 'import ts, model_archiver, yaml, torch'
fi

# ---- servers ----
# shellcheck source=bench/common.sh
. "$ROOT/bench/common.sh"
TS_DIR="$WORK/torchserve"
TS_PID=""
stop_torchserve() {
    [ -n "$TS_PID" ] || return 0
    TEMP="$TS_DIR/tmp" "$TS_VENV/bin/torchserve" --stop >/dev/null 2>&1 || true
    for _ in $(seq 50); do kill -0 "$TS_PID" 2>/dev/null || break; sleep 0.1; done
    kill -- -"$TS_PID" 2>/dev/null || true   # its own session: java and the Python workers
    TS_PID=""
}
trap 'hogs_off; stop_torchserve; [ -n "$HOST_PID" ] && kill $HOST_PID 2>/dev/null; rm -rf "$WORK"' EXIT

mkdir -p "$TS_DIR/store" "$TS_DIR/tmp" "$TS_DIR/logs"
for name in tabular tabular_batched; do
    "$TS_VENV/bin/torch-model-archiver" --model-name "$name" --version 1.0 \
        --serialized-file "$ROOT/plugins/tabular/model.pt" --handler "$HERE/handler.py" \
        --extra-files "$ROOT/plugins/tabular/manifest.toml" --export-path "$TS_DIR/store"
done
read -r P1 P2 P3 < <(python3 -c '
import socket
ss = [socket.socket() for _ in range(3)]
for s in ss: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in ss])')
sed -e "s/@INFERENCE_PORT@/$P1/; s/@MANAGEMENT_PORT@/$P2/; s/@METRICS_PORT@/$P3/" \
    -e "s#@MODEL_STORE@#$TS_DIR/store#; s/@WORKERS@/$TS_WORKERS/g" \
    -e "s/@BATCH@/$TS_BATCH/g; s/@BATCH_DELAY_MS@/$TS_BATCH_DELAY_MS/g" \
    "$HERE/config.properties" > "$TS_DIR/config.properties"
(
    cd "$TS_DIR"
    export TEMP="$TS_DIR/tmp" LOG_LOCATION="$TS_DIR/logs" METRICS_LOCATION="$TS_DIR/logs" PATH="$TS_VENV/bin:$PATH"
    exec setsid "$TS_VENV/bin/torchserve" --start --foreground --ncs --disable-token-auth \
        --ts-config "$TS_DIR/config.properties" --model-store "$TS_DIR/store" \
        --log-config "$HERE/log4j2.xml" >"$TS_DIR/stdout" 2>&1
) &
TS_PID=$!
TS_URL="http://127.0.0.1:$P1/predictions"
ready() {
    for name in tabular tabular_batched; do
        curl -s -m 2 "http://127.0.0.1:$P2/models/$name" 2>/dev/null \
            | python3 -c 'import json,sys; w=json.load(sys.stdin)[0]["workers"]; sys.exit(not (w and all(x["status"]=="READY" for x in w)))' 2>/dev/null \
            || return 1
    done
}
for _ in $(seq 240); do ready && break; sleep 0.5; done
ready || { echo "TorchServe did not start:" >&2; tail -n 20 "$TS_DIR/stdout" "$TS_DIR/logs/ts_log.log" >&2; exit 1; }
curl -sf -m 5 -H 'Content-Type: application/json' --data-binary @"$SAMPLE" "$TS_URL/tabular" >"$TS_DIR/reply.json"
curl -sf -m 5 -H 'Content-Type: application/json' --data-binary @"$SAMPLE" "$TS_URL/tabular_batched" >"$TS_DIR/reply-batched.json"

# shellcheck disable=SC2086
start_host "$REPO" $TG_HOST_ARGS --http-listen 127.0.0.1:0
OIP_URL="http://$(cat "$TG_STATE/http-listening")/v2/models/tabular/infer"
python3 -c 'import json, sys; print(json.dumps({"inputs": [{"name": "payload", "shape": [1], "datatype": "BYTES", "data": [open(sys.argv[1]).read()]}]}))' \
    "$SAMPLE" > "$WORK/kserve.json"
curl -sf -m 5 --data-binary @"$WORK/kserve.json" "$OIP_URL" >/dev/null
"$BIN/tensorgate" submit --model tabular "$SAMPLE" >"$WORK/tg-reply.json"
python3 - "$ROOT/plugins/tabular/reference.json" "$WORK/tg-reply.json" "$TS_DIR/reply.json" "$TS_DIR/reply-batched.json" <<'PY'
import json, sys
ref = json.load(open(sys.argv[1]))["cases"][0]["scores"]
line = open(sys.argv[2]).read()
assert all(f'"{k}"' in line for k in ref), line
for f in sys.argv[3:]:
    ts = json.load(open(f))
    assert all(abs(ts[k] - v) < 1e-5 for k, v in ref.items()), (ts, ref)
print("both servers answer the sample; TorchServe's scores match reference.json")
PY

# One JSON line per cell, with the CPU time of the server's processes and of
# the load generator added (bench/torchserve/cell.py).
wrk_run() {  # model concurrency seconds
    BODY="$SAMPLE" python3 "$HERE/cell.py" --session "$TS_PID" -- \
        wrk -t 1 -c "$2" -d "${3}s" --timeout 10s -s "$HERE/post.lua" "$TS_URL/$1"
}
og_run() {  # concurrency seconds: the host's HTTP front, KServe v2 JSON
    BODY="$WORK/kserve.json" python3 "$HERE/cell.py" --pid "$HOST_PID" -- \
        wrk -t 1 -c "$1" -d "${2}s" --timeout 10s -s "$HERE/post.lua" "$OIP_URL"
}
tg_run() {  # concurrency requests [warm-up requests]
    python3 "$HERE/cell.py" --pid "$HOST_PID" -- "$BIN/tensorgate" bench --model tabular --file "$SAMPLE" \
        --concurrency "$1" --requests "$2" --warmup "${3:-0}" --json
}

# ---- versions ----
TORCH_V=$("$TS_VENV/bin/python" -c 'import torch; print(torch.__version__)')
JAVA_V=$(java -version 2>&1 | head -1)
WRK_V=$( (wrk -v 2>&1 || true) | head -1 | cut -d' ' -f1-2)
echo "TorchServe $("$TS_VENV/bin/python" -c 'import ts.version as v; print(v.__version__)') ($TS_WORKERS workers per model, $TS_TORCH_THREADS torch thread each; batched: up to $TS_BATCH, ≤ $TS_BATCH_DELAY_MS ms), torch $TORCH_V, $JAVA_V, $WRK_V"

echo "tensorgate $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?'), host args: ${TG_HOST_ARGS:-none}; load generators: wrk -t 1 (TorchServe), tensorgate bench (one QUIC connection)"

# ---- warm-up and pacing ----
# `tensorgate bench` takes a request count, not a duration: a short pilot per
# concurrency (also a warm-up) sets the count for about SECONDS.
OUT="$WORK/out"
declare -A TG_N
wrk_run tabular 8 2 >/dev/null
wrk_run tabular_batched 8 2 >/dev/null
og_run 8 2 >/dev/null
for c in $CONCS; do
    rate=$(tg_run "$c" 2000 200 | python3 -c 'import json,sys; print(json.load(sys.stdin)["requests_per_s"])')
    TG_N[$c]=$(python3 -c "print(max(1000, int($rate * $DUR)))")
done

T0=$SECONDS
for r in $(seq "$ROUNDS"); do
    if [ "$r" -gt 1 ] && [ $((SECONDS - T0 + ROUND_S)) -gt "$BUDGET_S" ]; then
        echo "stopping after $((r - 1)) rounds: the next would end past BUDGET_S=$BUDGET_S s"
        break
    fi
    TR=$SECONDS
    echo "round $r: load average at start $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "load {\"one\": $(cut -d' ' -f1 /proc/loadavg)}" >> "$OUT"
    for c in $CONCS; do
        wrk_run tabular "$c" "$DUR" | sed "s/^/ts$c /" >> "$OUT"
        wrk_run tabular_batched "$c" "$DUR" | sed "s/^/tb$c /" >> "$OUT"
        line=$(tg_run "$c" "${TG_N[$c]}")
        echo "tg$c $line" >> "$OUT"
        og_run "$c" "$DUR" | sed "s/^/og$c /" >> "$OUT"
        # next round: about SECONDS at the rate just measured
        TG_N[$c]=$(echo "$line" | python3 -c "import json,sys; print(max(1000, int(json.load(sys.stdin)['requests_per_s'] * $DUR)))")
        if [ "$HOGS" -gt 0 ]; then
            hogs_on
            wrk_run tabular "$c" "$DUR" | sed "s/^/hts$c /" >> "$OUT"
            wrk_run tabular_batched "$c" "$DUR" | sed "s/^/htb$c /" >> "$OUT"
            echo "htg$c $(tg_run "$c" $((TG_N[$c] / 2)))" >> "$OUT"
            hogs_off
        fi
    done
    ROUND_S=$((SECONDS - TR))
done
stop_torchserve

PYTHONPATH="$ROOT/bench" python3 - "$OUT" "$CONCS" <<'PY'
import sys
from tagged import load, med
rows = load(sys.argv[1])
n = len(rows["load"])
print(f"\nrounds: {n} (medians across rounds); load average at round starts: "
      + ", ".join(f"{x['one']:.2f}" for x in rows["load"]))
print("| concurrency | TorchServe req/s | p50 ms | p99 ms | TorchServe batched req/s | p50 ms | p99 ms "
      "| tensorgate req/s | p50 ms | p99 ms | ratio vs better TorchServe "
      "| tensorgate HTTP (KServe v2) req/s | p50 ms | ratio vs better TorchServe |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
cpu_rows = []
errors = {"ts": 0, "tg": 0}
per_round = []
for c in sys.argv[2].split():
    ts, tb, tg, og = rows[f"ts{c}"], rows[f"tb{c}"], rows[f"tg{c}"], rows[f"og{c}"]
    errors["ts"] += sum(x["errors"] for x in ts + tb)
    errors["tg"] += sum(x["errors"] for x in tg)
    rps = lambda rs: med([x["requests_per_s"] for x in rs])
    ms = lambda rs, q: med([x["latency_us"][q] for x in rs]) / 1e3
    best = max(rps(ts), rps(tb))
    print(f"| {c} | {rps(ts):,.0f} | {ms(ts, 'p50'):.2f} | {ms(ts, 'p99'):.2f} "
          f"| {rps(tb):,.0f} | {ms(tb, 'p50'):.2f} | {ms(tb, 'p99'):.2f} "
          f"| {rps(tg):,.0f} | {ms(tg, 'p50'):.3f} | {ms(tg, 'p99'):.2f} | **{rps(tg) / best:.1f}×** "
          f"| {rps(og):,.0f} | {ms(og, 'p50'):.3f} | **{rps(og) / best:.1f}×** |")
    errors["tg"] += sum(x["errors"] for x in og)
    cpu = lambda rs, k: med([x[f"{k}_cpu_us_per_req"] for x in rs])
    cpu_rows.append(f"| {c} | " + " | ".join(f"{cpu(rs, 'server'):.0f} + {cpu(rs, 'client'):.0f}" for rs in (ts, tb, tg, og)) + " |")
    per_round.append(f"c={c}: " + ", ".join(
        f"{g['requests_per_s'] / max(t['requests_per_s'], b['requests_per_s']):.1f}" for t, b, g in zip(ts, tb, tg)))
print("\nCPU time per request, server + load generator (µs; the 2 cores give 2,000,000 µs per second):")
print("| concurrency | TorchServe | TorchServe batched | tensorgate | tensorgate HTTP |")
print("|---|---|---|---|---|")
print("\n".join(cpu_rows))
print("\nper-round ratios (vs the better TorchServe of that round): " + "; ".join(per_round))
print(f"errors: TorchServe {errors['ts']}, tensorgate {errors['tg']}")
if "htg" + sys.argv[2].split()[0] in rows:
    print("\nWith CPU hogs beside the servers (same rounds): req/s alone -> with hogs, and the loss")
    print("| concurrency | TorchServe | loss | TorchServe batched | loss | tensorgate | loss |")
    print("|---|---|---|---|---|---|---|")
    for c in sys.argv[2].split():
        cells = []
        for k in ("ts", "tb", "tg"):
            alone, hog = med([x["requests_per_s"] for x in rows[f"{k}{c}"]]), med([x["requests_per_s"] for x in rows[f"h{k}{c}"]])
            cells.append(f"{alone:,.0f} -> {hog:,.0f} | {100 * (1 - hog / alone):.0f} %")
        print(f"| {c} | " + " | ".join(cells) + " |")
    print(f"errors with hogs: TorchServe {sum(x['errors'] for c in sys.argv[2].split() for k in ('hts', 'htb') for x in rows[k + c])}, "
          f"tensorgate {sum(x['errors'] for c in sys.argv[2].split() for x in rows['htg' + c])}")
PY
