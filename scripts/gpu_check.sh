#!/usr/bin/env bash
# The CUDA paths checked end to end (scripts/gpu_check.py): fp16/bf16 training, CRF under fp16, SimCSE,
# Sentence-BERT, distillation, eval-only, ONNX on the CUDA provider, inference bench, torchrun with 2+ GPUs.
#   bash scripts/gpu_check.sh            MODEL=DIR DATA_DIR=... OUT=outputs/gpu_check RESULT=results/gpu_check.json
# Refuses (exit 2) on a machine without a CUDA device.
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-python3}" scripts/gpu_check.py "$@"
