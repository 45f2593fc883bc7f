#!/usr/bin/env bash
# Dev entity F1 (seqeval) of run_ner.py, BERT+Linear and BERT+CRF, on msra, resume, ontonote4, weibo,
# peoples_daily (BIO) and word segmentation cws/pku1998 (B/M/E/S: its row holds word P/R/F1).
source "$(dirname "$0")/common.sh"
fresh_table
if [ "$QUICK" = 1 ]; then  # one BIOS NER set with both heads, and the B/M/E/S word metrics
    DATASETS=${DATASETS:-"resume cws/pku1998"}
fi
DATASETS=${DATASETS:-"msra resume ontonote4 weibo peoples_daily/bio cws/pku1998"}
for ds in $DATASETS; do
    case $ds in cws/*) dir=$ds; kind=word_ ;; *) dir=ner/$ds; kind= ;; esac
    have "$dir/train.json" || continue
    for head in Linear CRF; do
        # QUICK: the CRF runs on the first dataset only; on the others it would repeat the same code path
        [ "$QUICK" = 1 ] && [ $head = CRF ] && [ "$ds" != "${DATASETS%% *}" ] && continue
        flags=(); [ $head = CRF ] && flags=(--use_crf --crf_learning_rate 1e-3)
        run="$OUT/${ds//\//_}-$head"
        launch run_ner.py $(train_args) --train_data_file "$dir/train.json" --dev_data_file "$dir/dev.json" \
            --label_file "$dir/labels.txt" --saved_dir "$run" --learning_rate 5e-5 --warmup_proportion 0.1 "${flags[@]}"
        # The scripts evaluate once, at the end, so best_f1 = final_f1: all three columns come from one evaluation.
        "$PYTHON" scripts/results.py add "$NAME" --run "$run" --set dataset="$ds" --set model="BERT+$head" \
            --metric precision=final_${kind}precision --metric recall=final_${kind}recall --metric f1=final_${kind}f1
    done
done
"$PYTHON" scripts/results.py render "$NAME"
