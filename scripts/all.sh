#!/usr/bin/env bash
# Run every reproduction script and refresh the README's Results section from the result files.
#   QUICK=1 bash scripts/all.sh      # tiny random model, a few steps a run: checks the pipeline in minutes
#   bash scripts/all.sh              # real figures with m3e-small (hours on a 2-core CPU)
set -euo pipefail
cd "$(dirname "$0")/.."
SCRIPTS=${SCRIPTS:-"classification ner matching semantic distill onnx"}
for s in $SCRIPTS; do
    echo "=== scripts/$s.sh"
    bash "scripts/$s.sh"
done
if [ "${QUICK:-0}" != 1 ]; then
    "${PYTHON:-python3}" scripts/update_readme.py
fi
