#!/usr/bin/env bash
# STS-B dev Spearman/Pearson: the model's raw mean pooling, after unsupervised SimCSE on unsup sentences,
# and after in-batch negatives on AFQMC's label-1 pairs (continuing from SimCSE, as bertorch's README does).
source "$(dirname "$0")/common.sh"
fresh_table
DEV=stsb/sts-b-dev.txt
have $DEV || exit 0
add() { "$PYTHON" scripts/results.py add "$NAME" --run "$1" --set method="$2" \
    --metric spearman=final_spearman --metric pearson=final_pearson; }
launch run_simcse.py $(train_args) --no-do_train --dev_data_file $DEV --saved_dir "$OUT/raw" --pooling_mode mean
add "$OUT/raw" "mean pooling, no training"
launch run_simcse.py $(train_args) --train_data_file unsup/sentences.txt --dev_data_file $DEV \
    --saved_dir "$OUT/simcse" --pooling_mode mean --learning_rate 1e-5 --dropout 0.1 --margin 0.2 --scale 20 \
    ${SIMCSE_SAMPLES:+--max_train_samples $SIMCSE_SAMPLES}
add "$OUT/simcse" "SimCSE (unsup/sentences.txt)"
launch run_batchneg.py $(train_args) --train_data_file afqmc/train.txt --dev_data_file $DEV \
    --saved_dir "$OUT/batchneg" --pooling_mode mean --learning_rate 1e-5 --mean_loss --init_from_ckpt "$OUT/simcse"
add "$OUT/batchneg" "SimCSE + batchneg (AFQMC label-1 pairs)"
"$PYTHON" scripts/results.py render "$NAME"
