#!/usr/bin/env bash
# Run every reproduction script and refresh the README's Results section from the result files.
#   QUICK=1 bash scripts/all.sh      # tiny random model, a few steps a run: checks the pipeline in minutes
#   bash scripts/all.sh              # real figures with m3e-small (hours on a 2-core CPU)
# OUT gets one folder per script (default outputs/, QUICK: outputs/quick/); RESULTS the tables (see
# common.sh). Only a full run writing to results/ rewrites the README.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
SCRIPTS=${SCRIPTS:-"classification ner matching semantic distill distill_ner onnx"}
if [ "${QUICK:-0}" = 1 ]; then OUT_ROOT=${OUT:-$ROOT/outputs/quick}; else OUT_ROOT=${OUT:-$ROOT/outputs}; fi
if [ -n "${OUT:-}" ]; then export TINY_MODEL=${TINY_MODEL:-$OUT/tiny-random-bert}; fi  # QUICK: all under OUT
case " $SCRIPTS " in
    *" classification "*)  # distill's teacher and onnx's model: classification's ChnSentiCorp run, trained once
        export TEACHER=${TEACHER:-$OUT_ROOT/classification/ChnSentiCorp}
        export MODEL_DIR=${MODEL_DIR:-$OUT_ROOT/classification/ChnSentiCorp} ;;
esac
if [ "${QUICK:-0}" = 1 ] && [ -z "${RUNNER_SOCKET:-}" ]; then
    source scripts/runner.sh
    start_runner  # one warm Python process for the runs of every script
fi
for s in $SCRIPTS; do
    echo "=== scripts/$s.sh"
    OUT=$OUT_ROOT/$s bash "scripts/$s.sh"
done
if [ "${QUICK:-0}" != 1 ] && { [ -z "${RESULTS:-}" ] || [ "$RESULTS" -ef results ]; }; then
    "${PYTHON:-python3}" scripts/plot_results.py
    "${PYTHON:-python3}" scripts/update_readme.py
fi
