#!/usr/bin/env bash
# Set up a virtualenv with stabletune on a new machine: the CPU torch wheel first (pinned, so pip never pulls a
# multi-GB CUDA build), then the package with its extras. Idempotent. Usage: bash scripts/setup.sh [extras]
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-test,report,ray,bench,hf}"
python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q torch==2.13.0
.venv/bin/python -m pip install -q -e ".[${extras}]"
.venv/bin/python -c "import torch, transformers, stabletune; print('stabletune', stabletune.__version__, '| torch', torch.__version__, '| transformers', transformers.__version__)"
