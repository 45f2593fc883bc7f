#!/usr/bin/env bash
# PyTorch eager vs ONNX fp32 vs ONNX int8 on ChnSentiCorp dev: throughput, latency and accuracy, one run.
# MODEL_DIR: a fine-tuned classifier to export (default: fine-tune one here with the common budget).
source "$(dirname "$0")/common.sh"
fresh_table
MODEL_DIR=${MODEL_DIR:-$OUT/classifier}
if [ ! -f "$MODEL_DIR/config.json" ]; then
    launch run_classifier.py $(train_args) --train_data_file chnsenticorp/train.tsv \
        --dev_data_file chnsenticorp/dev.tsv --label_file chnsenticorp/labels.txt --saved_dir "$MODEL_DIR"
fi
LIMIT=${LIMIT:-$([ "$QUICK" = 1 ] && echo 32 || echo 1161)}
py -m bench.inference --model_dir "$MODEL_DIR" --dev_file "$DATA_DIR/chnsenticorp/dev.tsv" \
    --limit "$LIMIT" --output "$OUT/inference.json"
for i in 0 1 2 3 4 5; do
    "$PYTHON" scripts/results.py add "$NAME" --file "$OUT/inference.json" --index $i \
        --metric backend=backend --metric batch=batch_size --metric "examples/s=examples_per_s" \
        --metric "x torch=speedup_vs_torch" --metric "p50 ms=p50_ms" --metric "p95 ms=p95_ms" \
        --metric accuracy=accuracy --set _row=$i
done
"$PYTHON" scripts/results.py render "$NAME"
# Why fp32 gains little on this CPU: time in the weight GEMMs (the Linear layers) inside both backends, model
# calls only, and the speed-up onnxruntime would reach if all its other work were free (bench/gemm_share.py).
GEMM=${NAME}_gemm
fresh_table "$GEMM"
py -m bench.gemm_share --model_dir "$MODEL_DIR" --dev_file "$DATA_DIR/chnsenticorp/dev.tsv" --limit "$LIMIT" \
    --batch_sizes 1 32 --output "$OUT/gemm_share.json"
for i in 0 1; do
    "$PYTHON" scripts/results.py add "$GEMM" --file "$OUT/gemm_share.json" --index $i --metric batch=batch_size \
        --metric "torch ms/call=torch_ms" --metric "torch GEMM share=torch_gemm_share" --metric "onnx ms/call=onnx_ms" \
        --metric "onnx GEMM share=onnx_gemm_share" --metric "onnx x torch=onnx_speedup" \
        --metric "GEMMs: onnx x torch=gemm_speed_ratio" --metric "ceiling=ceiling" --set _row=$i
done
"$PYTHON" scripts/results.py render "$GEMM"
