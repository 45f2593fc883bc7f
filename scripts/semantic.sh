#!/usr/bin/env bash
# STS-B dev Spearman/Pearson: the model's raw mean pooling, after unsupervised SimCSE on unsup sentences,
# after in-batch negatives on AFQMC's label-1 pairs (continuing from SimCSE, as bertorch's README does), and
# after CoSENT on STS-B train's graded pairs (supervised), alone and with Matryoshka prefixes.
#   METHODS   which rows to (re)run (default: "raw simcse batchneg cosent cosent_matryoshka"), with KEEP_ROWS=1
source "$(dirname "$0")/common.sh"
fresh_table
DEV=stsb/sts-b-dev.txt
have $DEV || exit 0
# QUICK: CoSENT's code path once; its Matryoshka row would add prefix columns the other rows lack
# (tests/test_matryoshka.py covers that path)
[ "$QUICK" = 1 ] && METHODS=${METHODS:-"raw simcse batchneg cosent"}
METHODS=${METHODS:-"raw simcse batchneg cosent cosent_matryoshka"}
for m in $METHODS; do
    case $m in raw|simcse|batchneg|cosent|cosent_matryoshka) ;; *) echo "[$NAME] unknown method '$m' in METHODS" \
        "(raw simcse batchneg cosent cosent_matryoshka)" >&2; exit 2 ;; esac
done
want() { [[ " $METHODS " == *" $1 "* ]]; }
add() {  # add RUN METHOD WHICH [--metric ...]: WHICH is final (one evaluation) or best (the best dev model)
    local run=$1 method=$2 which=$3; shift 3
    "$PYTHON" scripts/results.py add "$NAME" --run "$run" --set method="$method" \
        --metric spearman=${which}_spearman --metric pearson=${which}_pearson "$@"
}
if want raw; then
    launch run_simcse.py $(train_args) --no-do_train --dev_data_file $DEV --saved_dir "$OUT/raw" --pooling_mode mean
    add "$OUT/raw" "mean pooling, no training" final
fi
if want simcse; then
    launch run_simcse.py $(train_args 3 1e-5) --train_data_file unsup/sentences.txt --dev_data_file $DEV \
        --saved_dir "$OUT/simcse" --pooling_mode mean --dropout 0.1 --margin 0.2 --scale 20 \
        ${SIMCSE_SAMPLES:+--max_train_samples $SIMCSE_SAMPLES}
    add "$OUT/simcse" "SimCSE (unsup/sentences.txt)" final
fi
if want batchneg; then
    launch run_batchneg.py $(train_args 3 1e-5) --train_data_file afqmc/train.txt --dev_data_file $DEV \
        --saved_dir "$OUT/batchneg" --pooling_mode mean --mean_loss --init_from_ckpt "$OUT/simcse"
    add "$OUT/batchneg" "SimCSE + batchneg (AFQMC label-1 pairs)" final
fi
# CoSENT: 2 epochs of STS-B train (163 steps each) at 3e-5, the dev curve every half epoch, the best dev model
cosent() {  # cosent RUN METHOD [flags...]
    local run=$1 method=$2; shift 2
    [ "$QUICK" = 1 ] && eval_steps=0 || eval_steps=82
    launch run_sentencebert.py $(train_args 2 3e-5) --loss cosent --train_data_file stsb/sts-b-train.txt \
        --dev_data_file $DEV --saved_dir "$run" --pooling_mode mean --warmup_proportion 0.1 \
        --eval_steps $eval_steps --save_best_model "$@"
}
if want cosent; then
    cosent "$OUT/cosent" "CoSENT (STS-B train, supervised)"
    add "$OUT/cosent" "CoSENT (STS-B train, supervised)" best
fi
if want cosent_matryoshka; then
    dims=(512 256 128 64); [ "$QUICK" = 1 ] && dims=(32 16)  # the tiny QUICK model is narrower
    cosent "$OUT/cosent_matryoshka" "CoSENT + Matryoshka" --matryoshka_dims "${dims[@]}"
    add "$OUT/cosent_matryoshka" "CoSENT + Matryoshka ${dims[*]}" best \
        $(for d in "${dims[@]:1}"; do echo --metric "spearman@$d=best_spearman@$d"; done)
fi
"$PYTHON" scripts/results.py render "$NAME"
