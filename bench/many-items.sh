#!/usr/bin/env bash
# Many-item requests (issue 17): `tabular` at 1,000 items per request, at
# concurrency 4 and at concurrency 1, for this build or alternating with
# another host binary (A/B, same machine state); a fresh host (`--threads 1`)
# per run, 10 untimed requests first. Prints each run (bench/cost_line.py:
# items/s, p50, host and client CPU per item, the host's preprocess and
# postprocess µs per item) and the medians per build and cell.
# Usage: bench/many-items.sh [BEFORE_HOST_BINARY [PAIRS]]   (CM: requests per run, 100)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/bench/common.sh"
export LD_LIBRARY_PATH="$ROOT/.libtorch/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
BEFORE=${1:-}
PAIRS=${2:-3}
F="$ROOT/plugins/tabular/samples/jet-0.json"
run() {  # label, host binary, concurrency
    HOST_BIN=$2 start_host "$REPO" --threads 1 >/dev/null
    "$BIN/tensorgate" bench --model tabular --file "$F" --items 1000 --concurrency "$3" --requests 10 --warmup 0 >/dev/null
    python3 "$ROOT/bench/torchserve/cell.py" --pid "$HOST_PID" -- "$BIN/tensorgate" bench --model tabular --file "$F" --json \
        --items 1000 --concurrency "$3" --requests "${CM:-100}" --warmup 0 | python3 "$ROOT/bench/cost_line.py" "$1 c=$3" | tee -a "$WORK/runs.txt"
    stop_host
}
echo "machine: $(nproc) cores, load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
for c in 4 1; do
    if [ -z "$BEFORE" ]; then
        run "this build" "$BIN/tensorgate-host" "$c"
    else
        for i in $(seq "$PAIRS"); do
            run "before" "$BEFORE" "$c"
            run "after" "$BIN/tensorgate-host" "$c"
        done
    fi
done
python3 - "$WORK/runs.txt" <<'PY'
import re, statistics, sys
cells = {}
for line in open(sys.argv[1]):
    m = re.match(r"(.+ c=\d+): ([\d,]+) items/s.*host ([\d.]+) µs \+ client ([\d.]+)", line)
    if m:
        cells.setdefault(m.group(1), []).append((float(m.group(2).replace(",", "")), float(m.group(3)), float(m.group(4))))
print("-- medians")
for cell, runs in cells.items():
    med = lambda k: statistics.median(r[k] for r in runs)
    print(f"{cell}: {med(0):,.0f} items/s, CPU per item host {med(1):.1f} µs + client {med(2):.1f} µs ({len(runs)} runs)")
PY
