#!/usr/bin/env bash
# The benchmarks on a machine with an NVIDIA GPU: model throughput per backbone and precision,
# then the running service end to end with the worker on the GPU (one and several worker
# processes sharing it). On a lent machine with no package registry, the project's Python
# dependencies travel as wheels in .whl/ and a few photographs in .gpu/shared (both ignored by
# git); DCMTK is absent there, so pynetdicom plays the PACS and the camera (bench/common.py).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
if [ -d .whl ] && [ ! -x .venv/bin/python ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:$PWD PYTHON=python3
  export EYESCREEN_SHARED=${EYESCREEN_SHARED:-$PWD/.gpu/shared} EYESCREEN_WEB_PORT=0
fi
OUT=${OUT:-runs}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$OUT/gpu.txt"
if [ -z "${E2E_ONLY:-}" ]; then
  $PYTHON bench/inference.py --device cuda --backbones efficientnet_lite2,inception_v3 \
    --batches 1,32,128 --seconds 2 --precisions fp32,bf16 2>&1 | tee "$OUT/inference.txt"
  $PYTHON bench/precision_agreement.py --device cuda 2>&1 | tee "$OUT/precision.txt"
fi
for workers in ${E2E_WORKERS:-1 4}; do
  EYESCREEN_DEVICE=cuda EYESCREEN_WORKER_CONCURRENCY=$workers EYESCREEN_INFERENCE_BATCH_SIZE=32 \
    $PYTHON bench/e2e.py --burst 256 --paced 30 2>&1 | tee "$OUT/e2e-workers$workers.txt"
done
