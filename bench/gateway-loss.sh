#!/usr/bin/env bash
# A gateway SIGKILLed under load, one engine, two gateways (A, B) and two
# CPU workers serving the tabular MLP, default heartbeat (1 s):
#  - LOAD on A: 1,000-item requests at concurrency 4 (`tensorgate bench`);
#  - a failover client `tensorgate --host A,B submit` of ITEMS items,
#    started 1 s into the load;
#  - A killed 0.3 s later; then 3-item submits through B, one after another,
#    until one is answered: the time from the kill to that answer.
# Prints the kill-to-first-answer time, the failover client's total time
# and exit code, and the same client's time in a run without the kill.
# BUILD_DIR: the binaries to measure (default target/release; an earlier
# build's directory for a before/after run: the flag forms below work on both).
# Usage: bash bench/gateway-loss.sh [ITEMS]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
ITEMS=${1:-20000}
. "$ROOT/scripts/env.sh"
BUILD=${BUILD_DIR:-$ROOT/target/release}
CLI="$ROOT/target/release/tensorgate"
export LD_LIBRARY_PATH="$LIBTORCH_DIR/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
WORK=$(mktemp -d)
PIDS=()
stop_all() {
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do kill -9 "${PIDS[i]}" 2>/dev/null; wait "${PIDS[i]}" 2>/dev/null || true; done
    PIDS=()
}
trap 'stop_all; rm -rf "$WORK"' EXIT
mkdir -p "$WORK/items"
for i in $(seq "$ITEMS"); do cp "$ROOT/plugins/tabular/samples/jet-$((i % 3)).json" "$WORK/items/$(printf %06d "$i").json"; done
now() { date +%s.%N; }

run() {  # KILL(0|1): one cluster, measured
    local kill=$1 dir="$WORK/run$1"
    mkdir -p "$dir"
    local port
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    "$NATS_SERVER" -a 127.0.0.1 -p "$port" -js -sd "$dir/engine" >/dev/null 2>&1 &
    PIDS+=($!)
    for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/"$port") 2>/dev/null && break; sleep 0.1; done
    export TENSORGATE_NATS="nats://127.0.0.1:$port"
    for w in 1 2; do
        mkdir -p "$dir/repo$w" "$dir/w$w" && cp -r "$TENSORGATE_REPO/tabular" "$dir/repo$w/"
        "$BUILD/tensorgate-host" --repository "$dir/repo$w" --state-dir "$dir/w$w" --threads 1 >/dev/null 2> "$dir/w$w.log" &
        PIDS+=($!)
        for _ in $(seq 600); do [ -s "$dir/w$w/worker" ] && break; sleep 0.05; done
    done
    for g in a b; do
        mkdir -p "$dir/$g"
        "$BUILD/tensorgate-host" --nats "$TENSORGATE_NATS" --gateway --listen 127.0.0.1:0 --state-dir "$dir/$g" >/dev/null 2> "$dir/$g.log" &
        PIDS+=($!)
        eval "PID_$g=$!"
        for _ in $(seq 300); do [ -s "$dir/$g/listening" ] && break; sleep 0.05; done
    done
    local a b fa fb
    a=$(cat "$dir/a/listening") b=$(cat "$dir/b/listening") fa=$(cat "$dir/a/fingerprint") fb=$(cat "$dir/b/fingerprint")
    sleep 2  # every worker advertised to both gateways
    "$CLI" --host "$a" --fingerprint "$fa" bench --model tabular --file "$ROOT/plugins/tabular/samples/jet-0.json" \
        --items 1000 --requests 100 --concurrency 4 --json > "$dir/load.json" 2>/dev/null &
    local load=$!
    sleep 1
    local t0 rc=0
    t0=$(now)
    (
        code=0
        "$CLI" --host "$a,$b" --fingerprint "$fa,$fb" submit --model tabular --quiet "$WORK/items" > "$dir/failover.out" 2> "$dir/failover.err" || code=$?
        echo "$code" > "$dir/failover.rc"
        now > "$dir/failover.end"
    ) &
    local failover=$!
    sleep 0.3
    if [ "$kill" = 1 ]; then
        # shellcheck disable=SC2154
        kill -9 "$PID_a"
        local killed first=""
        killed=$(now)
        while [ -z "$first" ]; do
            if timeout 300 "$CLI" --host "$b" --fingerprint "$fb" submit --model tabular --quiet "$ROOT"/plugins/tabular/samples/jet-*.json >/dev/null 2>&1; then
                first=$(python3 -c "print(f'{$(now) - $killed:.2f}')")
            fi
        done
        echo "kill to the first answer through B: ${first} s"
    fi
    wait "$failover" || true
    rc=$(cat "$dir/failover.rc")
    local ok
    ok=$(grep -c '"ok":true' "$dir/failover.out" || true)
    echo "failover client ($([ "$kill" = 1 ] && echo "A killed" || echo "no kill")): $(python3 -c "print(f'{$(cat "$dir/failover.end") - $t0:.2f}')") s, exit $rc, $ok of $ITEMS items answered"
    [ "$rc" = 0 ] || { tail -3 "$dir/failover.err"; head -2 "$dir/failover.out"; }
    kill "$load" 2>/dev/null || true
    wait "$load" 2>/dev/null || true
    stop_all
}
echo "build: $BUILD; machine: $(nproc) cores, load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
[ "${SKIP_NO_KILL:-0}" = 1 ] || run 0
run 1
