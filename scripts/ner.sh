#!/usr/bin/env bash
# Dev entity F1 (seqeval) of run_ner.py, BERT+Linear and BERT+CRF, on msra, resume, ontonote4, weibo,
# peoples_daily (BIO) and word segmentation cws/pku1998 (B/M/E/S: its row holds word P/R/F1).
#   DATASETS  which rows to (re)run (default: all), HEADS (default: "Linear CRF"; also GlobalPointer and
#             EfficientGlobalPointer, the span heads: exact-span F1, seqeval's on these flat sets); CRF_LR the CRF's own rate
#   SWEEP=name  a sweep row: kept beside the others of its dataset and head (NAME=sweeps KEEP_ROWS=1 ...)
#   RESCORE=1   no training: a Linear row's best model (outputs/ner/DATASET-Linear/best, chosen on its argmax dev
#             curve) is scored again with --decoding constrained; the row keeps its run's recipe and curve
source "$(dirname "$0")/common.sh"
[ "${RESCORE:-0}" = 1 ] && KEEP_ROWS=1  # rescoring replaces rows, it never starts a table
fresh_table
if [ "$QUICK" = 1 ]; then  # one BIOS NER set with both heads, and the B/M/E/S word metrics
    DATASETS=${DATASETS:-"resume cws/pku1998"}
fi
DATASETS=${DATASETS:-"msra resume ontonote4 weibo peoples_daily/bio cws/pku1998"}
HEADS=${HEADS:-"Linear CRF"}
CRF_LR=${CRF_LR:-1e-2}

recipe() {  # recipe DATASET -> "EPOCHS LR EVAL_STEPS": m3e-small (4 layers) at 1e-4; epochs by the set's size,
    # so small sets get more passes; the dev curve every EVAL_STEPS (about an epoch, or half of a long one)
    case $1 in
        msra) echo "2 1e-4 712" ;;            # 45k sentences, 1,424 steps an epoch
        resume) echo "10 1e-4 120" ;;         # 3.8k sentences
        ontonote4) echo "4 1e-4 246" ;;       # 15.7k sentences
        weibo) echo "15 1e-4 40" ;;           # 1.3k posts
        peoples_daily/bio) echo "3 1e-4 237" ;;
        cws/pku1998) echo "3 1e-4 237" ;;     # 15k sentences, word segmentation
        *) echo "[$NAME] unknown dataset '$1' in DATASETS (msra resume ontonote4 weibo peoples_daily/bio" \
            "cws/pku1998)" >&2; exit 2 ;;
    esac
}
for ds in $DATASETS; do recipe "$ds" > /dev/null; done  # a misspelt name stops the script before any run

for ds in $DATASETS; do
    case $ds in cws/*) dir=$ds; kind=word_ ;; *) dir=ner/$ds; kind= ;; esac
    # a row's columns and its dev curve (F1's, what the figure draws), from the run's best evaluation
    metrics=(--metric precision=best_${kind}precision --metric recall=best_${kind}recall
             --metric f1=best_${kind}f1 --curve best_${kind}f1)
    have "$dir/train.json" || continue
    read -r epochs lr eval_steps <<< "$(recipe "$ds")"
    [ "$QUICK" = 1 ] && eval_steps=0
    for head in $HEADS; do
        # QUICK: the CRF runs on the first dataset only; on the others it would repeat the same code path
        [ "$QUICK" = 1 ] && [ $head = CRF ] && [ "$ds" != "${DATASETS%% *}" ] && continue
        flags=(); [ $head = CRF ] && flags=(--use_crf --crf_learning_rate "$CRF_LR")
        [ $head = GlobalPointer ] && flags=(--head global_pointer)
        [ $head = EfficientGlobalPointer ] && flags=(--head efficient_global_pointer)
        run="$OUT/${ds//\//_}-$head"
        case $head in Linear) decoding=constrained ;; CRF) decoding=crf ;; *) decoding=spans ;; esac
        if [ "${RESCORE:-0}" = 1 ]; then
            [ $head = Linear ] || { echo "[$NAME] RESCORE=1 rescores Linear rows; skipping $ds $head" >&2; continue; }
            [ -d "$run/best" ] || { echo "[$NAME] RESCORE=1: no $run/best to rescore; skipping" >&2; continue; }
            launch run_ner.py --no-do_train --pretrained_model_name_or_path "$run/best" --data_dir "$DATA_DIR" \
                --dev_data_file "$dir/dev.json" --label_file "$dir/labels.txt" --saved_dir "$run-rescored" \
                --max_seq_length "$MAX_SEQ_LENGTH" --overwrite_output_dir "${SAMPLES[@]}" ${EXTRA_ARGS:-}
            "$PYTHON" scripts/results.py add "$NAME" --run "$run" --file "$run-rescored/all_results.json" \
                --set dataset="$ds" --set model="BERT+$head" ${SWEEP:+--set sweep="$SWEEP"} \
                --value decoding="constrained (rescored)" "${metrics[@]}"
            continue
        fi
        launch run_ner.py $(train_args "$epochs" "$lr") --train_data_file "$dir/train.json" \
            --dev_data_file "$dir/dev.json" --label_file "$dir/labels.txt" --saved_dir "$run" \
            --warmup_proportion 0.1 --weight_decay 0.01 --eval_steps "$eval_steps" --save_best_model "${flags[@]}"
        # The row is the best dev evaluation (the curve is in $run/metrics.jsonl)
        "$PYTHON" scripts/results.py add "$NAME" --run "$run" --set dataset="$ds" --set model="BERT+$head" \
            ${SWEEP:+--set sweep="$SWEEP"} --value decoding=$decoding "${metrics[@]}"
    done
done
"$PYTHON" scripts/results.py render "$NAME"
