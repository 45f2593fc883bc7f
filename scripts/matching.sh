#!/usr/bin/env bash
# Sentence-BERT on AFQMC (dev accuracy, and zero-shot on LCQMC dev); NLI where a train split is given.
source "$(dirname "$0")/common.sh"
fresh_table
have afqmc/train.txt || exit 0
launch run_sentencebert.py $(train_args) --train_data_file afqmc/train.txt --dev_data_file afqmc/dev.txt \
    --saved_dir "$OUT/afqmc" --pooling_mode mean --learning_rate 5e-5 --concat_multiply
"$PYTHON" scripts/results.py add "$NAME" --run "$OUT/afqmc" --set dataset=AFQMC --set trained_on=AFQMC \
    --metric accuracy=best_accuracy
if have lcqmc/dev.txt; then   # LCQMC has no train split here: zero-shot with the AFQMC model
    launch run_sentencebert.py $(train_args) --no-do_train --dev_data_file lcqmc/dev.txt \
        --saved_dir "$OUT/lcqmc" --init_from_ckpt "$OUT/afqmc" --pooling_mode mean --concat_multiply
    "$PYTHON" scripts/results.py add "$NAME" --run "$OUT/lcqmc" --set dataset=LCQMC --set trained_on="AFQMC (zero-shot)" \
        --metric accuracy=best_accuracy
fi
if [ -n "${NLI_TRAIN:-}" ]; then   # CMNLI/CSNLI train splits are not shipped: NLI_TRAIN=path/to/train.txt
    launch run_sentencebert.py $(train_args) --train_data_file "$NLI_TRAIN" --dev_data_file cmnli/dev.txt \
        --label_file cmnli/labels.txt --is_nli --saved_dir "$OUT/nli" --pooling_mode mean --concat_multiply
    "$PYTHON" scripts/results.py add "$NAME" --run "$OUT/nli" --set dataset=CMNLI --set trained_on="$NLI_TRAIN" \
        --metric accuracy=best_accuracy
else
    echo "[$NAME] no NLI train split here (CMNLI/CSNLI train are not shipped); set NLI_TRAIN=path to add it" >&2
fi
"$PYTHON" scripts/results.py render "$NAME"
