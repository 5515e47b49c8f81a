#!/usr/bin/env bash
# Many-item requests through a Python plugin against its Rust twin (issue
# 34): `py-tabular` and `tabular` at 1,000 items per request, concurrency 4,
# on one fresh host per run (`--threads 1`) serving both, 10 untimed
# requests first; alternating ROUNDS times (default 3). Prints each run
# (bench/cost_line.py: items/s, p50, host and client CPU per item) and the
# medians per app, and the Python / Rust ratio of host CPU per item.
# Usage: bench/py-many-items.sh [ROUNDS]   (CM: requests per run, 30)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/bench/common.sh"
export LD_LIBRARY_PATH="$ROOT/.libtorch/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
ROUNDS=${1:-3}
F="$ROOT/plugins/tabular/samples/jet-0.json"
PY_REPO=${TENSORGATE_PY_REPO:-$ROOT/target/repository-python}
MIXED="$WORK/repo"
mkdir -p "$MIXED"
cp -r "$REPO/tabular" "$PY_REPO/py-tabular" "$MIXED/"
CACHE="$WORK/compiled"
run() {  # app
    start_host "$MIXED" --threads 1 --compile-cache "$CACHE" >/dev/null
    "$BIN/tensorgate" bench --model "$1" --file "$F" --items 1000 --concurrency 4 --requests 10 --warmup 0 >/dev/null
    python3 "$ROOT/bench/torchserve/cell.py" --pid "$HOST_PID" -- "$BIN/tensorgate" bench --model "$1" --file "$F" --json \
        --items 1000 --concurrency 4 --requests "${CM:-30}" --warmup 0 | python3 "$ROOT/bench/cost_line.py" "$1" | tee -a "$WORK/runs.txt"
    stop_host
}
echo "machine: $(nproc) cores, load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
for _ in $(seq "$ROUNDS"); do
    run tabular
    run py-tabular
done
python3 - "$WORK/runs.txt" <<'PY'
import re, statistics, sys
cells = {}
for line in open(sys.argv[1]):
    m = re.match(r"(\S+): ([\d,]+) items/s.*host ([\d.]+) µs \+ client ([\d.]+)", line)
    if m:
        cells.setdefault(m.group(1), []).append((float(m.group(2).replace(",", "")), float(m.group(3)), float(m.group(4))))
print("-- medians")
med = {}
for cell, runs in cells.items():
    m = lambda k: statistics.median(r[k] for r in runs)
    med[cell] = m(1)
    print(f"{cell}: {m(0):,.0f} items/s, CPU per item host {m(1):.1f} µs + client {m(2):.1f} µs ({len(runs)} runs)")
if "tabular" in med and "py-tabular" in med:
    print(f"py-tabular / tabular, host CPU per item: {med['py-tabular'] / med['tabular']:.2f}")
PY
