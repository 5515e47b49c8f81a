#!/usr/bin/env bash
# A/B run of bench/cluster.sh: the current build (target/release) against
# another build's binaries (BEFORE_DIR holding tensorgate-host and
# tensorgate), alternating before/after PAIRS times so that both see the
# same machine state; prints the medians per side of the gateway's p50
# overhead on single-item requests and the items/s of 1,000-item requests
# through the gateway with 1, 2 and 3 workers. (cluster.sh starts every
# role with the flag forms both builds accept.)
# Usage: bash bench/ab-cluster.sh BEFORE_DIR [PAIRS] [REQUESTS]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BEFORE=${1:?usage: bench/ab-cluster.sh BEFORE_DIR [PAIRS] [REQUESTS]}
PAIRS=${2:-3}
REQUESTS=${3:-2000}
. "$ROOT/scripts/env.sh"
export LD_LIBRARY_PATH="$LIBTORCH_DIR/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
OUT=$(mktemp)
trap 'rm -f "$OUT" "$OUT.run"' EXIT
[ -x "$BEFORE/bare-forward" ] || ln -sf "$ROOT/target/release/bare-forward" "$BEFORE/bare-forward"
for i in $(seq "$PAIRS"); do
    for side in before after; do
        bin="$ROOT/target/release"
        [ "$side" = before ] && bin="$BEFORE"
        echo "== pair $i: $side ($bin)"
        TENSORGATE_BIN="$bin" bash "$ROOT/bench/cluster.sh" 1 "$REQUESTS" > "$OUT.run"
        grep -E '^gateway overhead|^\| gateway' "$OUT.run"
        awk -v s="$side" -F'|' '
            /^gateway overhead on p50/ {print s, "overhead", $0}
            /^\| gateway, 1 worker \|/ {print s, "w1", $3}
            /^\| gateway, 2 workers \|/ {print s, "w2", $3}
            /^\| gateway, 3 workers/ {print s, "w3", $3}' "$OUT.run" >> "$OUT"
    done
done
python3 - "$OUT" <<'PY'
import re, statistics, sys
rows = [l.split(None, 2) for l in open(sys.argv[1]) if l.strip()]
def med(side, key):
    vals = []
    for s, k, v in rows:
        if s == side and k == key:
            vals.append(float(re.search(r"([0-9.]+) µs", v).group(1)) if key == "overhead" else float(v))
    return statistics.median(vals), vals
print(f"\nA/B, {len(rows) // 8} pairs, medians (per pair in brackets):")
print("| build | gateway p50 overhead µs | items/s, 1 worker | 2 workers | 3 workers |")
print("|---|---|---|---|---|")
for side in ("before", "after"):
    cells = []
    for key in ("overhead", "w1", "w2", "w3"):
        m, vals = med(side, key)
        cells.append(f"{m:,.0f} ({' / '.join(f'{v:,.0f}' for v in vals)})")
    print(f"| {side} | " + " | ".join(cells) + " |")
PY
