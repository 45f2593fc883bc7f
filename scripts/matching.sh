#!/usr/bin/env bash
# Sentence-BERT on AFQMC (dev accuracy and macro-F1, and zero-shot on LCQMC dev); NLI where a train split is given.
source "$(dirname "$0")/common.sh"
fresh_table
have afqmc/train.txt || exit 0
# Recipe (m3e-small, as run_classifier's AFQMC row): 3 epochs at 1e-4, 10% warm-up, the dev curve every half
# epoch (34k pairs, 1,073 steps an epoch). AFQMC is 69% label 0, so best/ is the best dev macro-F1, not accuracy
# (the best-accuracy model is a near-majority vote).
eval_steps=536; [ "$QUICK" = 1 ] && eval_steps=0
launch run_sentencebert.py $(train_args 3 1e-4) --train_data_file afqmc/train.txt --dev_data_file afqmc/dev.txt \
    --saved_dir "$OUT/afqmc" --pooling_mode mean --concat_multiply --warmup_proportion 0.1 --weight_decay 0.01 \
    --eval_steps $eval_steps --save_best_model --metric_for_best macro_f1
"$PYTHON" scripts/results.py add "$NAME" --run "$OUT/afqmc" --set dataset=AFQMC --set trained_on=AFQMC \
    --metric accuracy=best_accuracy --metric macro_f1=best_macro_f1
best=$OUT/afqmc/best; [ -d "$best" ] || best=$OUT/afqmc  # best/ is written by a dev evaluation
if have lcqmc/dev.txt; then   # LCQMC has no train split here: zero-shot with the AFQMC model
    launch run_sentencebert.py $(train_args) --no-do_train --dev_data_file lcqmc/dev.txt \
        --saved_dir "$OUT/lcqmc" --init_from_ckpt "$best" --pooling_mode mean --concat_multiply
    "$PYTHON" scripts/results.py add "$NAME" --run "$OUT/lcqmc" --set dataset=LCQMC --set trained_on="AFQMC (zero-shot)" \
        --metric accuracy=final_accuracy --metric macro_f1=final_macro_f1
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
