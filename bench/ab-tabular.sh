#!/usr/bin/env bash
# A/B run of bench/tabular-latency.sh: the current build (target/release)
# against another build's binaries (BEFORE_DIR holding tensorgate-host,
# tensorgate and bare-forward), alternating A B A B ... so that both see the
# same machine state. Prints each run's table, then the medians per side.
# Usage: bash bench/ab-tabular.sh BEFORE_DIR [PAIRS] [REQUESTS]
# BEFORE_REPO: the before side's model repository, when its plugins target
# another contract (default: the same repository for both sides).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BEFORE=${1:?usage: bench/ab-tabular.sh BEFORE_DIR [PAIRS] [REQUESTS]}
PAIRS=${2:-5}
REQUESTS=${3:-5000}
# shellcheck source=scripts/env.sh
. "$ROOT/scripts/env.sh"
# Another build's binaries may carry an rpath to a libtorch folder that is gone.
export LD_LIBRARY_PATH="$LIBTORCH_DIR/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
OUT=$(mktemp)
trap 'rm -f "$OUT" "$OUT.run"' EXIT
for i in $(seq "$PAIRS"); do
    for side in before after; do
        bin="$ROOT/target/release" repo="${TENSORGATE_REPO:-$ROOT/target/repository}"
        [ "$side" = before ] && bin="$BEFORE" && repo="${BEFORE_REPO:-$repo}"
        echo "== pair $i: $side ($bin, $repo)"
        TENSORGATE_BIN="$bin" TENSORGATE_REPO="$repo" bash "$ROOT/bench/tabular-latency.sh" 1 "$REQUESTS" > "$OUT.run"
        cat "$OUT.run"
        awk -v s="$side" -F'|' '/^\| host over QUIC, concurrency 1 \|/{print s, "c1_p50", $3} /^\| host over QUIC, concurrency 64 \|/{print s, "c64_rps", $6}' "$OUT.run" >> "$OUT"
    done
done
python3 - "$OUT" <<'PY'
import sys, statistics
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
print(f"\nA/B, {len(rows)//4} pairs, medians:")
print("| build | p50 µs at concurrency 1 | req/s at concurrency 64 |")
print("|---|---|---|")
for side in ("before", "after"):
    p50 = statistics.median(float(v) for s, k, v in rows if s == side and k == "c1_p50")
    rps = statistics.median(float(v) for s, k, v in rows if s == side and k == "c64_rps")
    print(f"| {side} | {p50:.1f} | {rps:.0f} |")
PY
