#!/usr/bin/env bash
# Safe rollouts under load, one run. A host with a canary share (SHARE,
# default 0.1) and otherwise the host's default trial terms (--canary-items
# 200, --canary-max-failure-increase 0.02) serves the tabular MLP while 4
# single-item clients (`tensorgate bench`, concurrency 4) submit throughout.
# Each round uploads a good version and times it from the upload's return
# (the trial starts) to its promotion; then a bad one (a valid manifest whose
# plugin reads a feature the items lack: every real item fails, the load
# checks pass) and times it to its automatic rollback, counting the items
# that failed on it. Medians over ROUNDS.
# Usage: bash bench/rollout.sh [ROUNDS] [SHARE]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
ROUNDS=${1:-5}
SHARE=${2:-0.1}
# shellcheck source=bench/common.sh
. "$ROOT/bench/common.sh"
. "$ROOT/scripts/env.sh"
PY="${TENSORGATE_VENV:-$TENSORGATE_CACHE/venv}/bin/python"
mkdir -p "$WORK/repo" && cp -r "$REPO/tabular" "$WORK/repo/"
start_host "$WORK/repo" --canary-share "$SHARE"
LOAD=$((ROUNDS * 30 + 30))
"$BIN/tensorgate" bench --model tabular --file "$ROOT/plugins/tabular/samples/jet-0.json" --concurrency 4 \
    --duration "$LOAD" --warmup 0 --json > "$WORK/load.json" &
LOAD_PID=$!
"$PY" - "$ROUNDS" "$SHARE" "$REPO/tabular/1" "$WORK" <<'PY'
import os, shutil, statistics, sys, time
from pathlib import Path
import tensorgate

rounds, share, v1, work = int(sys.argv[1]), float(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4])
c = tensorgate.Client(os.environ["TENSORGATE_HOST"], fingerprint=os.environ["TENSORGATE_FINGERPRINT"])

def bundle(version, bad):
    d = work / f"tabular-{version}"
    shutil.copytree(v1, d)
    m = (d / "manifest.toml").read_text().replace("version = 1", f"version = {version}", 1)
    if bad:
        m = m.replace('"jet_pt",', '"jet_pt_typo",', 1)
    (d / "manifest.toml").write_text(m)
    return d

def until(pred, what, limit=60.0):
    start = time.monotonic()
    while True:
        models = [m for m in c.models() if m["name"] == "tabular"]
        if pred(models):
            return time.monotonic() - start, models
        if time.monotonic() - start > limit:
            raise SystemExit(f"{what}: not after {limit} s: {models}")
        time.sleep(0.002)

time.sleep(2)  # the load is running
promote, rollback, failed, upload = [], [], [], []
version = 1
for _ in range(rounds):
    version += 1
    good = version
    t = time.monotonic()
    c.upload(bundle(good, bad=False))
    upload.append(time.monotonic() - t)
    dt, _ = until(lambda ms: any(m["version"] == good and m["default"] and not m.get("canary") for m in ms), "promotion")
    promote.append(dt)
    version += 1
    bad = version
    c.upload(bundle(bad, bad=True))
    dt, ms = until(lambda ms: any(m["version"] == bad and m.get("rolled_back") for m in ms), "rollback")
    rollback.append(dt)
    time.sleep(0.2)  # items already on their way to it are answered
    failed.append(next(m["items_failed"] for m in c.models() if m["name"] == "tabular" and m["version"] == bad))
    others = sum(m["items_failed"] for m in c.models() if m["name"] == "tabular" and (m["version"] % 2 == 0 or m["version"] == 1))
    if others:
        raise SystemExit(f"{others} items failed on good versions")
med = statistics.median
print(f"canary share {share}, 200 items, +2 points (host defaults), {rounds} rounds, 4 clients at concurrency 4")
print(f"  upload of a good version (load, checks):         median {med(upload) * 1e3:.0f} ms")
print(f"  its trial start to promotion:                    median {med(promote) * 1e3:.0f} ms  (all: {', '.join(f'{x * 1e3:.0f}' for x in promote)})")
print(f"  bad version, trial start to automatic rollback:  median {med(rollback) * 1e3:.1f} ms  (all: {', '.join(f'{x * 1e3:.1f}' for x in rollback)})")
print(f"  items failed on the bad version:                 median {med(failed):.0f}  (all: {', '.join(str(x) for x in failed)}); 0 on any good version")
PY
kill "$LOAD_PID" 2>/dev/null || true
wait "$LOAD_PID" 2>/dev/null || true
