#!/usr/bin/env bash
# GPU speed check, < 5 minutes on one GPU: BERT-Large-sized step (bf16 autocast, SDPA vs eager, fused AdamW) and
# vectorised-ensemble speed per seed for K in {1,4,8}. No weights or data needed.
#   bash benchmarks/gpu_check.sh              # needs a CUDA GPU and a CUDA build of torch
#   bash benchmarks/gpu_check.sh --cpu-smoke  # tiny model on CPU, seconds: checks that the script runs
#   bash benchmarks/gpu_check.sh --json
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
exec "$PY" benchmarks/gpu_check.py "$@"
