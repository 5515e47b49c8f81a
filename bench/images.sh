#!/usr/bin/env bash
# Image sizes and time from `podman run` to serving (docs/cluster.md,
# Deployment): builds the images (scripts/build-images), starts an engine,
# then RUNS times (default 5) a worker container (until it writes
# STATE/worker: repository loaded, joined) and a gateway container (until it
# writes STATE/fingerprint: listening), each from `podman run -d`; prints
# every run and the medians. Loopback only; removes what it starts.
#   bash bench/images.sh            RUNS=9 bash bench/images.sh
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=scripts/env.sh
. "$ROOT/scripts/env.sh"
RUNS="${RUNS:-5}"
"$ROOT/scripts/build-images" >/dev/null
podman images --format '{{.Repository}}:{{.Tag}} {{.Size}}' --filter 'reference=localhost/tensorgate*:latest'
RUN=(podman --runtime runc run -d --network=host --ulimit nofile=1024:1024 --ulimit nproc=1024:1024)
WORK=$(mktemp -d)
NAMES=()
cleanup() {
    for ((i = ${#NAMES[@]} - 1; i >= 0; i--)); do podman rm -f -t 5 "${NAMES[i]}" >/dev/null 2>&1 || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir -m 777 "$WORK/engine"
NAMES+=("tg-bench-engine-$$")
"${RUN[@]}" --name "${NAMES[-1]}" -v "$NATS_SERVER:/usr/local/bin/nats-server:ro" -v "$WORK/engine:/engine" \
    --entrypoint /usr/local/bin/nats-server localhost/tensorgate-gateway:latest -a 127.0.0.1 -p "$PORT" -js -sd /engine >/dev/null
for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/"$PORT") 2>/dev/null && break; sleep 0.1; done
URL="nats://127.0.0.1:$PORT"

# One start: prints the seconds from `podman run` to FILE appearing.
start() {  # ROLE N FILE IMAGE ARGS...
    local role=$1 n=$2 file=$3 image=$4; shift 4
    local dir="$WORK/$role-$n" name="tg-bench-$role-$n-$$"
    mkdir -m 777 "$dir"
    local t0; t0=$(date +%s.%N)
    NAMES+=("$name")
    "${RUN[@]}" --name "$name" -v "$dir:/state" "$image" "$@" >/dev/null
    until [ -s "$dir/$file" ]; do
        [ "$(podman inspect -f '{{.State.Running}}' "$name")" = true ] || { podman logs "$name"; exit 1; }
        sleep 0.02
    done
    python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.2f}')" "$t0" "$(date +%s.%N)"
    podman rm -f -t 10 "$name" >/dev/null
}
median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2 ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2)}'; }
W=(); G=()
for n in $(seq 1 "$RUNS"); do
    W+=("$(start worker "$n" worker localhost/tensorgate:latest worker --nats "$URL" --repository /opt/tensorgate/examples \
        --state-dir /state --threads 1)")
    G+=("$(start gateway "$n" fingerprint localhost/tensorgate-gateway:latest --nats "$URL" --listen 127.0.0.1:0 --state-dir /state)")
    echo "run $n: worker ${W[-1]} s, gateway ${G[-1]} s"
done
echo "median of $RUNS: worker $(printf '%s\n' "${W[@]}" | median) s (14 example applications loaded), gateway $(printf '%s\n' "${G[@]}" | median) s"

# Items/s of one worker container through one gateway container (the
# figure the autoscaling rule of thumb divides by): the tabular tagger in
# 1,000-item requests, and the lartpc-dense U-Net (one sample wire plane, dense, per item).
mkdir -m 777 "$WORK/w" "$WORK/g"
NAMES+=("tg-bench-worker-$$")
"${RUN[@]}" --name "${NAMES[-1]}" -v "$WORK/w:/state" localhost/tensorgate:latest worker --nats "$URL" \
    --repository /opt/tensorgate/examples --state-dir /state >/dev/null
NAMES+=("tg-bench-gateway-$$")
"${RUN[@]}" --name "${NAMES[-1]}" -v "$WORK/g:/state" localhost/tensorgate-gateway:latest --nats "$URL" \
    --listen 127.0.0.1:0 --state-dir /state >/dev/null
until [ -s "$WORK/w/worker" ] && [ -s "$WORK/g/fingerprint" ]; do sleep 0.1; done
sleep 2   # the gateway hears the worker's advert
export TENSORGATE_HOST; TENSORGATE_HOST=$(cat "$WORK/g/listening")
export TENSORGATE_FINGERPRINT; TENSORGATE_FINGERPRINT=$(cat "$WORK/g/fingerprint")
# The sample plane, dense (the U-Net plugin takes one .npy plane).
"${TENSORGATE_CACHE}/venv/bin/python" - "$ROOT/plugins/lartpc-dense/samples/plane-crop.npz" "$WORK/plane.npy" <<'PY'
import sys, numpy as np
z = np.load(sys.argv[1]); plane = np.zeros(tuple(z["shape"]), np.float32)
plane[z["pixels"][:, 0], z["pixels"][:, 1]] = z["values"]; np.save(sys.argv[2], plane)
PY
rate() { python3 -c 'import json,sys; d=json.load(sys.stdin); r=d["items_per_s"]; print(round(r) if r >= 100 else round(r, 2))'; }
for spec in "tabular $ROOT/plugins/tabular/samples/jet-0.json 1000 4 30 20" "lartpc-dense $WORK/plane.npy 1 2 20 2"; do
    read -r model file items conc requests warmup <<< "$spec"
    R=()
    for _ in 1 2 3; do
        R+=("$("$ROOT/target/release/tensorgate" bench --model "$model" --file "$file" --items "$items" \
            --concurrency "$conc" --requests "$requests" --warmup "$warmup" --json | rate)")
    done
    echo "$model through the gateway, one worker container: ${R[*]} items/s, median $(printf '%s\n' "${R[@]}" | median)"
done
