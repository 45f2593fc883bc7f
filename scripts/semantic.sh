#!/usr/bin/env bash
# STS-B dev Spearman/Pearson: the model's raw mean pooling, after unsupervised SimCSE on unsup sentences,
# and after in-batch negatives on AFQMC's label-1 pairs (continuing from SimCSE, as bertorch's README does).
source "$(dirname "$0")/common.sh"
fresh_table
DEV=stsb/sts-b-dev.txt
have $DEV || exit 0
add() { "$PYTHON" scripts/results.py add "$NAME" "$@" --metric spearman=spearman --metric pearson=pearson; }
"$PYTHON" scripts/eval_sts.py "$MODEL" "$DATA_DIR/$DEV" "$OUT/raw.json"
add --file "$OUT/raw.json" --set method="mean pooling, no training"
launch run_simcse.py $(train_args) --train_data_file unsup/sentences.txt --dev_data_file $DEV \
    --saved_dir "$OUT/simcse" --pooling_mode mean --learning_rate 1e-5 --dropout 0.1 --margin 0.2 --scale 20 \
    ${SIMCSE_SAMPLES:+--max_train_samples $SIMCSE_SAMPLES}
"$PYTHON" -c "import json,sys; r=json.load(open(sys.argv[1])); json.dump({'spearman': r['best_spearman'], 'pearson': r['final_pearson']}, open(sys.argv[2], 'w'))" \
    "$OUT/simcse/all_results.json" "$OUT/simcse.json"
add --file "$OUT/simcse.json" --set method="SimCSE (unsup/sentences.txt)"
launch run_batchneg.py $(train_args) --train_data_file afqmc/train.txt --dev_data_file $DEV \
    --saved_dir "$OUT/batchneg" --pooling_mode mean --learning_rate 1e-5 --mean_loss --init_from_ckpt "$OUT/simcse"
"$PYTHON" -c "import json,sys; r=json.load(open(sys.argv[1])); json.dump({'spearman': r['best_spearman'], 'pearson': r['final_pearson']}, open(sys.argv[2], 'w'))" \
    "$OUT/batchneg/all_results.json" "$OUT/batchneg.json"
add --file "$OUT/batchneg.json" --set method="SimCSE + batchneg (AFQMC label-1 pairs)"
"$PYTHON" scripts/results.py render "$NAME"
