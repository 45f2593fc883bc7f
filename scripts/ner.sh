#!/usr/bin/env bash
# Dev entity F1 (seqeval) of run_ner.py, BERT+Linear and BERT+CRF, on msra, resume, ontonote4, weibo,
# peoples_daily (BIO) and word segmentation cws/pku1998 (B/M/E/S; word F1 too).
source "$(dirname "$0")/common.sh"
fresh_table
DATASETS=${DATASETS:-"msra resume ontonote4 weibo peoples_daily/bio cws/pku1998"}
for ds in $DATASETS; do
    case $ds in cws/*) dir=$ds ;; *) dir=ner/$ds ;; esac
    have "$dir/train.json" || continue
    for head in Linear CRF; do
        flags=(); [ $head = CRF ] && flags=(--use_crf --crf_learning_rate 1e-3)
        run="$OUT/${ds//\//_}-$head"
        launch run_ner.py $(train_args) --train_data_file "$dir/train.json" --dev_data_file "$dir/dev.json" \
            --label_file "$dir/labels.txt" --saved_dir "$run" --learning_rate 5e-5 --warmup_proportion 0.1 "${flags[@]}"
        metrics=(--metric precision=final_precision --metric recall=final_recall --metric f1=best_f1)
        case $ds in cws/*) metrics+=(--metric word_f1=final_word_f1) ;; esac
        "$PYTHON" scripts/results.py add "$NAME" --run "$run" --set dataset="$ds" --set model="BERT+$head" "${metrics[@]}"
    done
done
"$PYTHON" scripts/results.py render "$NAME"
