#!/usr/bin/env bash
# End-to-end container test (`make docker-test`): build the images, start the SuperLink and three
# SuperNodes of docker/compose.yml as containers on the host network, then
#   1. 2 rounds with `flwr run`: every tier trains and is evaluated (metrics.jsonl);
#   2. a 3-round run in which one SuperNode container is killed mid-round: the run still ends,
#      the container restarts and trains again;
#   3. the SuperLink container restarts: the SuperNode containers keep running, unrestarted, and
#      train a further round.
# Needs a running Docker daemon, docker-compose (or `docker compose`), and the project's venv
# (`flwr` for the CLI side). It stops and removes everything it started, even on failure.
#
# Environment:
#   MAESTRO_BASE_IMAGE  base image (default python:3.11-slim-bookworm). Set it to a local image,
#                       e.g. one made by `docker/make-base-image.sh`, where no registry is reachable.
#   MAESTRO_WHEELHOUSE, MAESTRO_TORCH_INDEX_URL  build arguments (see docker/Dockerfile).
#   VENV                the project's virtual environment (default .venv).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VENV=${VENV:-.venv}
case "$VENV" in /*) ;; *) VENV="$ROOT/$VENV" ;; esac
export PATH="$VENV/bin:$PATH"
DOCKER=${DOCKER:-docker}
PROJECT=maestro-e2e
LINK_PORT=9091
START=$(date +%s)

if docker-compose version >/dev/null 2>&1; then COMPOSE=(docker-compose); else COMPOSE=("$DOCKER" compose); fi
command -v flwr >/dev/null || { echo "e2e: flwr not found (make install first)" >&2; exit 1; }
"$DOCKER" info >/dev/null 2>&1 || { echo "e2e: no Docker daemon reachable" >&2; exit 1; }

WORK=$(mktemp -d)
export FLWR_HOME="$WORK/flwr-home" FMNIST_DIR="$WORK/data" MAESTRO_RUNS_DIR="$WORK/runs"
export FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1 OMP_NUM_THREADS=1
# Creating a container copies the whole image on the vfs storage driver: minutes, not seconds.
export COMPOSE_HTTP_TIMEOUT=${COMPOSE_HTTP_TIMEOUT:-900}
mkdir -p "$FLWR_HOME" "$MAESTRO_RUNS_DIR"
chmod 0777 "$MAESTRO_RUNS_DIR"  # the ServerApp writes here as uid 1000
compose() { "${COMPOSE[@]}" -p "$PROJECT" -f docker/compose.yml "$@"; }
log() { echo "[e2e $(($(date +%s) - START))s] $*"; }

cleanup() {
    local rc=$?
    if [ "$rc" -ne 0 ]; then
        compose logs --tail 60 >"$WORK/compose.log" 2>&1 || true
        tail -n 120 "$WORK/compose.log" >&2 || true
    fi
    compose down -v --remove-orphans >/dev/null 2>&1 || true
    rm -rf "$WORK"
    log "exit $rc"
}
trap cleanup EXIT

# --- images ------------------------------------------------------------------------------------
build() {  # target tag
    local args=(--network host -f docker/Dockerfile --target "$1" -t "$2"
        --build-arg "BASE_IMAGE=${MAESTRO_BASE_IMAGE:-python:3.11-slim-bookworm}"
        --build-arg "TORCH_INDEX_URL=${MAESTRO_TORCH_INDEX_URL:-https://download.pytorch.org/whl/cpu}"
        --build-arg "WHEELHOUSE=${MAESTRO_WHEELHOUSE:-}")
    if "$DOCKER" buildx version >/dev/null 2>&1; then
        "$DOCKER" buildx build --load "${args[@]}" .
    else
        DOCKER_BUILDKIT=1 "$DOCKER" build "${args[@]}" .
    fi
}
t0=$(date +%s)
build supernode maestro-fl-supernode:latest
t1=$(date +%s)
build superlink maestro-fl-superlink:latest
t2=$(date +%s)
log "built supernode in $((t1 - t0)) s, superlink in $((t2 - t1)) s"
for image in maestro-fl-supernode maestro-fl-superlink; do
    size=$("$DOCKER" image inspect -f '{{.Size}}' "$image:latest")
    log "image $image: $((size / 1000000)) MB"
done
# The client image must hold CPU torch and no Ray.
"$DOCKER" run --rm --network none --entrypoint python maestro-fl-supernode:latest -c \
    "import importlib.util as u, torch; assert torch.version.cuda is None, 'CUDA torch'; \
assert u.find_spec('ray') is None, 'ray installed'; print('torch', torch.__version__, 'no ray')"

# --- data: a small Fashion-MNIST sample (the real files' first images when installed) ----------
python - "$FMNIST_DIR" <<'EOF'
import sys
from pathlib import Path

import numpy as np

from maestro_common.ml.data.idx import read_idx, write_idx

out, src = Path(sys.argv[1]), Path("/usr/share/datasets/fashion-mnist")
out.mkdir(parents=True)
rng = np.random.default_rng(0)
for split, n in (("train", 480), ("t10k", 300)):
    for kind in ("images-idx3", "labels-idx1"):
        name = f"{split}-{kind}-ubyte.gz"
        if (src / name).exists():
            array = read_idx(src / name)[:n]
        elif kind.startswith("images"):
            array = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        else:
            array = (np.arange(n) % 10).astype(np.uint8)
        write_idx(out / name, array)
EOF
chmod -R a+rX "$FMNIST_DIR"

# --- federation ----------------------------------------------------------------------------------
printf '[superlink]\ndefault = "e2e"\n\n[superlink.e2e]\naddress = "127.0.0.1:%s"\ninsecure = true\n' \
    "$LINK_PORT" >"$FLWR_HOME/config.toml"
compose up -d --no-build
wait_healthy() {  # service... : every container healthy within 240 s
    local deadline=$(($(date +%s) + 240)) service id state
    for service in "$@"; do
        id=$(compose ps -q "$service")
        until [ "$("$DOCKER" inspect -f '{{.State.Health.Status}}' "$id")" = healthy ]; do
            state=$("$DOCKER" inspect -f '{{.State.Status}}' "$id")
            [ "$(date +%s)" -lt "$deadline" ] || { echo "e2e: $service not healthy ($state)" >&2; exit 1; }
            sleep 3
        done
    done
}
wait_healthy superlink supernode-0 supernode-1 supernode-2
log "SuperLink and 3 SuperNodes healthy"

CONFIG="clients-per-round=3 min-nodes=3 output-dir='/runs' data-dir='' max-test-examples=300 \
tier-fractions='0.25,0.5,1.0' batch-size=32 round-timeout=120.0"
run() {  # run-name rounds
    timeout 900 flwr run . e2e --stream --run-config "num-rounds=$2 run-name='$1' $CONFIG" \
        >"$WORK/$1.log" 2>&1 || { tail -n 60 "$WORK/$1.log" >&2; exit 1; }
}
check() {  # run-name rounds min-clients: every round recorded, trained by >= min-clients
    # Where min-clients < 3 a node was lost: its reply may be rejected as "Node Unavailable".
    python - "$MAESTRO_RUNS_DIR/$1/metrics.jsonl" "$2" "$3" <<'EOF'
import json
import sys

path, rounds, min_clients = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rows = [json.loads(line) for line in open(path) if line.strip()]
assert [r["round"] for r in rows] == list(range(1, rounds + 1)), [r["round"] for r in rows]
for r in rows:
    betas = sorted(float(c["rank-fraction"]) for c in r["clients"])
    assert len(betas) >= min_clients, f"round {r['round']}: clients {betas}"
    # A lost node is named by its own id (not the SuperLink's, 1) with Flower's reason.
    lost = [node for node, reason in r["rejected"] if "Node Unavailable" in reason and node != 1]
    assert len(lost) == len(r["rejected"]) <= 3 - min_clients, r["rejected"]
    accs = {k: round(100 * v["accuracy"], 2) for k, v in r["tiers"].items()}
    assert {float(k) for k in accs} == {0.25, 0.5, 1.0}, accs
    print(f"  round {r['round']}: trained by beta {betas}; test accuracy % {accs};"
          f" {r['wall-seconds']:.1f} s" + (f"; lost node(s) {lost}" if lost else ""))
EOF
}

# 1. Two rounds, all three tiers.
t0=$(date +%s)
run two-rounds 2
check two-rounds 2 3
log "2 rounds in $(($(date +%s) - t0)) s"

# 2. Kill one SuperNode's container mid-round (its processes die as on a crash); its restart
#    policy brings it back.
node0=$(compose ps -q supernode-0)
trains() { "$DOCKER" logs "$node0" 2>&1 | grep -c "Receiving: train message" || true; }
seen=$(trains)
timeout 900 flwr run . e2e --stream --run-config "num-rounds=3 run-name='node-killed' \
${CONFIG/round-timeout=120.0/round-timeout=60.0}" >"$WORK/node-killed.log" 2>&1 &
flwr_pid=$!
until [ "$(trains)" -gt "$seen" ]; do  # the first train message of this run reached supernode-0
    kill -0 "$flwr_pid" 2>/dev/null || { echo "e2e: run ended before the kill" >&2; exit 1; }
    sleep 1
done
kill -KILL "$("$DOCKER" inspect -f '{{.State.Pid}}' "$node0")"
log "killed supernode-0 during a train message"
wait "$flwr_pid" || { tail -n 60 "$WORK/node-killed.log" >&2; exit 1; }
check node-killed 3 2
restarts=$("$DOCKER" inspect -f '{{.RestartCount}}' "$node0")
[ "$restarts" -ge 1 ] || { echo "e2e: supernode-0 was not restarted" >&2; exit 1; }
wait_healthy supernode-0
log "run with a killed SuperNode completed; supernode-0 restarted $restarts time(s)"

# 3. Restart the SuperLink: the SuperNodes carry on (same containers, no restart).
before=$(for s in supernode-0 supernode-1 supernode-2; do
    "$DOCKER" inspect -f '{{.RestartCount}} {{.State.StartedAt}}' "$(compose ps -q "$s")"
done)
compose restart superlink
wait_healthy superlink
t0=$(date +%s)
run after-link-restart 1
check after-link-restart 1 3
after=$(for s in supernode-0 supernode-1 supernode-2; do
    "$DOCKER" inspect -f '{{.RestartCount}} {{.State.StartedAt}}' "$(compose ps -q "$s")"
done)
[ "$before" = "$after" ] || { echo "e2e: SuperNodes restarted: $before -> $after" >&2; exit 1; }
log "SuperLink restarted; the same SuperNode containers trained 1 round in $(($(date +%s) - t0)) s"
log "PASSED"
