#!/usr/bin/env bash
# Dev accuracy and macro-F1 of run_classifier.py on ChnSentiCorp, AFQMC (text pairs) and TNEWS.
#   DATASETS  which rows to (re)run, e.g. DATASETS="AFQMC TNEWS" KEEP_ROWS=1 (default: all three)
source "$(dirname "$0")/common.sh"
fresh_table
DATASETS=${DATASETS:-"ChnSentiCorp AFQMC TNEWS"}
for ds in $DATASETS; do
    case $ds in ChnSentiCorp|AFQMC|TNEWS) ;; *) echo "[$NAME] unknown dataset '$ds' in DATASETS" \
        "(ChnSentiCorp AFQMC TNEWS)" >&2; exit 2 ;; esac
done
run() {  # run DATASET TRAIN DEV LABELS [flags...]
    local name=$1 train=$2 dev=$3 labels=$4; shift 4
    [[ " $DATASETS " == *" $name "* ]] || return 0
    have "$train" || return 0
    launch run_classifier.py $(train_args) --train_data_file "$train" --dev_data_file "$dev" \
        --label_file "$labels" --saved_dir "$OUT/$name" --learning_rate 5e-5 --warmup_proportion 0.1 "$@"
    "$PYTHON" scripts/results.py add "$NAME" --run "$OUT/$name" --set dataset="$name" \
        --metric accuracy=best_accuracy --metric macro_f1=final_macro_f1
}
run ChnSentiCorp chnsenticorp/train.tsv chnsenticorp/dev.tsv chnsenticorp/labels.txt
run AFQMC afqmc/train.txt afqmc/dev.txt afqmc/labels.txt --is_text_pair
[ "$QUICK" = 1 ] || run TNEWS tnews/train.tsv tnews/dev.tsv tnews/labels.txt  # QUICK: ChnSentiCorp's code path again
"$PYTHON" scripts/results.py render "$NAME"
