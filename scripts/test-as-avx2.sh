#!/usr/bin/env bash
# Run the README's test command as a CPU without AVX-512 would (issue 23): every kernel library held to AVX2.
# ATEN_CPU_CAPABILITY alone is not enough: oneDNN (matmul blocking) and numpy's own SIMD dispatch choose by CPU too,
# and those are what made 7 tests fail on an AMD EPYC without AVX-512. Usage: bash scripts/test-as-avx2.sh [THREADS]
set -euo pipefail
cd "$(dirname "$0")/.."
threads="${1:-2}"
export ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2 ONEDNN_MAX_CPU_ISA=AVX2 OPENBLAS_CORETYPE=Haswell
export NPY_DISABLE_CPU_FEATURES="AVX512F AVX512CD AVX512_SKX AVX512_CLX AVX512_CNL AVX512_ICL AVX512_SPR"
export OMP_NUM_THREADS="$threads" MKL_NUM_THREADS="$threads"
exec .venv/bin/python -m pytest -q "${@:2}"
