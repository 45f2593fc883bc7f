#!/usr/bin/env bash
# Every benchmark in one run (bench/__main__.py): training throughput and peak memory, then inference.
#   bash bench/run.sh [--quick] [--output DIR] [--model_dir DIR --dev_file FILE] ...   (--help lists them)
# Against the original bertorch program itself (needs ../shared/peers): python -m bench.vs_original --help
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-python3}" -m bench "$@"
