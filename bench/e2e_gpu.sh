#!/usr/bin/env bash
# The benchmarks on a machine with an NVIDIA GPU: model throughput per backbone and precision,
# then the running service end to end with the worker on the GPU (one worker process per GPU).
set -euo pipefail
cd "$(dirname "$0")/.."
nvidia-smi --query-gpu=name,memory.total --format=csv
.venv/bin/python bench/inference.py --device cuda --batches 1,8,32,64
EYESCREEN_DEVICE=cuda EYESCREEN_WORKER_CONCURRENCY=1 EYESCREEN_INFERENCE_BATCH_SIZE=32 \
  .venv/bin/python bench/e2e.py --burst 128 --paced 30
