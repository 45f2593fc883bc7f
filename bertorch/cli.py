"""Command-line flags shared by every entry script, defined once, and `run(Task, argv)`.

Flag names are the original bertorch ones; HuggingFace spellings are accepted as aliases. Rank and
world size come from the launcher's environment; `--local_rank`/`--local-rank` (passed by the legacy
`torch.distributed.launch`) are accepted and checked against it.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
from typing import Any, Callable, Sequence

import numpy as np
import torch
from loguru import logger

from bertorch import distributed as D
from bertorch import errors
from bertorch.adversarial import ADVERSARIAL_METHODS
from bertorch.argtypes import add_data_dir_flag, non_negative_float, open_unit_float, positive_int
from bertorch.data.batching import AUTOCAST_PAD_MULTIPLE
from bertorch.logging import setup_logging
from bertorch.model_dir import remove_leftovers
from bertorch.losses.classification import LOSS_ALIASES, LOSS_TYPES
from bertorch.optim import SCHEDULERS


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    pass


def add_model_args(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("model")
    g.add_argument("--pretrained_model_name_or_path", "--model_name_or_path", default="bert-base-chinese",
                   help="local directory or hub name of a BERT-family model (class chosen from config.model_type)")
    g.add_argument("--init_from_ckpt", default=None,
                   help="warm-start weights from a saved model directory or weights file")
    g.add_argument("--max_seq_length", type=int, default=128, help="maximum tokens per input (<= 512)")


def add_data_args(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("data")
    g.add_argument("--train_data_file", default=None, help="training data file (required unless --no-do_train)")
    g.add_argument("--dev_data_file", default=None, help="dev data file, evaluated every --eval_steps")
    add_data_dir_flag(g)
    g.add_argument("--group_by_length", action=argparse.BooleanOptionalAction, default=True,
                   help="batch examples of similar length together (fewer pad tokens; epochs stay shuffled)")
    g.add_argument("--pad_to_max_length", action="store_true",
                   help="pad every batch to --max_seq_length (slower; for comparisons only)")
    g.add_argument("--pad_to_multiple_of", type=positive_int, default=None,
                   help="round each batch's padded length up to a multiple of N (at most --max_seq_length); "
                        "default 8 under --bf16/--fp16, where fewer distinct shapes pay (oneDNN's per-shape "
                        "cache on CPU, tensor cores on CUDA), else 1")
    g.add_argument("--num_workers", type=int, default=0, help="data-loader worker processes")
    g.add_argument("--max_train_samples", type=int, default=None, help="use only the first N training examples")
    g.add_argument("--max_eval_samples", type=int, default=None, help="use only the first N dev examples")


def add_training_args(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("training")
    g.add_argument("--do_train", action=argparse.BooleanOptionalAction, default=True,
                   help="train; --no-do_train only evaluates --dev_data_file (on every rank, gathered) with the "
                        "model of --pretrained_model_name_or_path (a saved model directory) or --init_from_ckpt, "
                        "and writes all_results.json and metrics.jsonl as a training run does; no training data")
    g.add_argument("--eval_only", dest="do_train", action="store_false", default=argparse.SUPPRESS,
                   help="the same as --no-do_train")
    g.add_argument("--batch_size", "--per_device_train_batch_size", type=int, default=32,
                   help="examples per device per micro-batch")
    g.add_argument("--eval_batch_size", type=int, default=None, help="dev batch size (default: --batch_size)")
    g.add_argument("--epochs", "--num_train_epochs", type=int, default=3, help="training epochs")
    g.add_argument("--max_steps", "--max_train_steps", type=int, default=-1,
                   help="optimisation steps; overrides --epochs when > 0")
    g.add_argument("--gradient_accumulation_steps", type=int, default=1, help="micro-batches per optimiser step")
    g.add_argument("--learning_rate", type=float, default=5e-5, help="peak learning rate")
    g.add_argument("--scheduler", "--lr_scheduler_type", choices=SCHEDULERS, default="linear",
                   help="learning-rate schedule (transformers' get_scheduler)")
    g.add_argument("--warmup_proportion", type=float, default=0.0, help="fraction of steps for linear warm-up")
    g.add_argument("--weight_decay", type=float, default=0.0, help="AdamW weight decay (not on biases/LayerNorm)")
    g.add_argument("--layerwise_lr_decay", type=float, default=1.0,
                   help="multiply the LR by this per layer going down from the head (1 = off)")
    g.add_argument("--max_grad_norm", type=float, default=1.0, help="gradient clipping norm (0 = off)")
    g.add_argument("--seed", type=int, default=1000, help="random seed")
    g.add_argument("--fp16", action="store_true", help="float16 autocast + loss scaling (CUDA only)")
    g.add_argument("--bf16", action="store_true", help="bfloat16 autocast (CUDA, or CPUs with bf16 support)")
    g.add_argument("--low_memory_training", action=argparse.BooleanOptionalAction, default=True,
                   help="on CPU (fp32 or --bf16): attention/FFN recompute and bool dropout masks keep less for "
                        "backward (same maths; dropout draws differ from stock PyTorch). See "
                        "bertorch/models/low_memory.py")
    g.add_argument("--checkpoint_above_tokens", type=int, default=4096,
                   help="with --low_memory_training: batches of more than N tokens (batch x padded length) also "
                        "recompute each layer in backward, keeping only its input (0 = never)")
    g.add_argument("--gradient_checkpointing", action="store_true",
                   help="recompute each layer in backward for every batch, on any device: least memory, "
                        "about a third more compute")
    g.add_argument("--adversarial", choices=ADVERSARIAL_METHODS, default=None,
                   help="adversarial training on the word embeddings")
    g.add_argument("--adv_epsilon", type=float, default=1.0, help="perturbation norm (FGM) / radius (PGD)")
    g.add_argument("--adv_alpha", type=float, default=0.3, help="PGD step size")
    g.add_argument("--adv_steps", type=int, default=3, help="PGD steps")
    g.add_argument("--find_unused_parameters", action="store_true", help="DDP find_unused_parameters")
    g.add_argument("--ema_decay", type=open_unit_float, default=None,
                   help="evaluate and save an exponential moving average of the weights, updated every optimisation "
                        "step with this decay (e.g. 0.999: averages over about the last 1,000 steps); checkpoints "
                        "keep the raw weights too, so resuming is exact")
    g.add_argument("--ddp_timeout", type=float, default=1800,
                   help="seconds a rank waits in a collective (and at start-up) for the others before the run stops "
                        "with an error instead of hanging (a stuck or dead rank)")


def add_label_args(parser: argparse.ArgumentParser) -> None:
    """Flags of tasks with a classifier over labels (Task.label_head): the labels, the head's dropout, the loss."""
    g = parser.add_argument_group("labels and hard-label loss")
    g.add_argument("--label_file", default=None,
                   help="labels.txt: one label a line, in id order (required by classification, NER and NLI)")
    g.add_argument("--dropout_rate", type=float, default=None,
                   help="dropout before the task head (default: the model config's)")
    g.add_argument("--loss_type", choices=LOSS_TYPES + tuple(LOSS_ALIASES), default="cross_entropy",
                   help="hard-label loss")
    g.add_argument("--label_smoothing", type=float, default=0.1, help="smoothing for --loss_type label_smoothing")
    g.add_argument("--focal_gamma", type=float, default=2.0, help="gamma of --loss_type focal")
    g.add_argument("--focal_alpha", type=float, nargs="+", default=None,
                   help="per-label weights of --loss_type focal, one per label in labels.txt order")


def add_rdrop_args(parser: argparse.ArgumentParser) -> None:
    """Flags of tasks whose predictions are distributions R-Drop can compare (Task.supports_rdrop)."""
    g = parser.add_argument_group("R-Drop")
    g.add_argument("--rdrop_alpha", type=non_negative_float, default=0.0,
                   help="R-Drop: run each batch twice (two dropout masks) and add alpha x the symmetric KL between "
                        "the two predicted distributions to the loss (0 = off; the paper uses 0.1-5). About twice "
                        "the compute per step; with a CRF, on the emissions")


def add_output_args(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("output and logging")
    g.add_argument("--saved_dir", "--output_dir", default="./checkpoint", help="where models and logs go")
    g.add_argument("--overwrite_output_dir", action="store_true", help="allow writing into a non-empty --saved_dir")
    g.add_argument("--logging_steps", type=int, default=20, help="log every N optimisation steps (0 = never)")
    g.add_argument("--eval_steps", type=int, default=None,
                   help="evaluate every N steps (default: --save_steps; 0 = only at the end)")
    g.add_argument("--save_steps", type=int, default=100, help="write checkpoint-<step>/ every N steps (0 = never)")
    g.add_argument("--save_total_limit", type=int, default=2, help="checkpoints kept (0 = all)")
    g.add_argument("--save_best_model", action="store_true", help="keep the best dev model in <saved_dir>/best")
    g.add_argument("--resume_from_checkpoint", default=None,
                   help="a checkpoint-<step> directory, or 'latest' for the newest in --saved_dir")
    g.add_argument("--no_cuda", action="store_true", help="train on CPU even if a GPU is present")
    # Passed by the legacy `python -m torch.distributed.launch`; the environment is authoritative.
    g.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)


def build_parser(task_cls, description: str | None) -> argparse.ArgumentParser:
    # allow_abbrev=False: `--output` must not silently mean `--output_dir`.
    parser = argparse.ArgumentParser(description=description, formatter_class=_Formatter, allow_abbrev=False)
    add_model_args(parser)
    add_data_args(parser)
    add_training_args(parser)
    if task_cls.label_head:  # shared flags only for the tasks that read them
        add_label_args(parser)
    if task_cls.supports_rdrop:
        add_rdrop_args(parser)
    add_output_args(parser)
    task_cls.add_args(parser)
    return parser


# Counts and sizes, with the smallest value that means something. Below it a value would silently act as "off"
# (a negative --save_steps, --logging_steps or --max_grad_norm) or crash mid-run, so it is refused at parse time;
# where 0 means off, the flag's help says so. --max_steps -1 is its default: --epochs decide.
MINIMUMS = {"batch_size": 1, "gradient_accumulation_steps": 1, "eval_batch_size": 1, "max_train_samples": 1,
            "max_eval_samples": 1, "adv_steps": 1, "max_steps": -1, "epochs": 0, "logging_steps": 0, "eval_steps": 0,
            "save_steps": 0, "save_total_limit": 0, "num_workers": 0, "checkpoint_above_tokens": 0,
            "max_grad_norm": 0, "weight_decay": 0, "adv_epsilon": 0, "adv_alpha": 0, "label_smoothing": 0,
            "focal_gamma": 0,
            # flags of some tasks only (checked where a script has them): taggers, distillation
            "crf_learning_rate": 0, "doc_stride": 0, "max_aux_examples": 1, "student_layers": 1,
            "student_hidden_size": 1, "kd_loss_weight": 0, "hard_label_weight": 0}


def check_minimums(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """MINIMUMS of the flags this script has (None: not given, a default that depends on other flags)."""
    for name, minimum in MINIMUMS.items():
        value = getattr(args, name, None)
        if value is None or value >= minimum:
            continue
        if minimum == 0:
            parser.error(f"--{name} cannot be negative, got {value}")
        if minimum == -1:
            parser.error(f"--{name} must be -1 (off) or more, got {value}")
        parser.error(f"--{name} must be at least {minimum}, got {value}")
    if not args.learning_rate > 0:  # nan too
        parser.error(f"--learning_rate must be positive, got {args.learning_rate}")
    if getattr(args, "label_smoothing", 0) >= 1:
        parser.error(f"--label_smoothing must be below 1, got {args.label_smoothing}")


def validate_args(args: argparse.Namespace, parser: argparse.ArgumentParser, task_cls=None) -> None:
    """Flag combinations that cannot work are refused before any data or model is loaded."""
    if args.fp16 and args.bf16:
        parser.error("--fp16 and --bf16 are exclusive")
    if args.fp16 and (args.no_cuda or not torch.cuda.is_available()):
        parser.error("--fp16 needs a CUDA GPU; on CPU use --bf16 or fp32 (the default)")
    check_minimums(args, parser)
    if args.max_steps <= 0 and args.epochs < 1:
        parser.error("give --epochs >= 1 or --max_steps > 0")
    if not 1 <= args.max_seq_length <= 4096:
        parser.error(f"--max_seq_length must be in [1, 4096], got {args.max_seq_length}")
    if not 0.0 <= args.warmup_proportion < 1.0:
        parser.error(f"--warmup_proportion must be in [0, 1), got {args.warmup_proportion}")
    if not 0.0 < args.layerwise_lr_decay <= 1.0:
        parser.error(f"--layerwise_lr_decay must be in (0, 1], got {args.layerwise_lr_decay}")
    if args.ddp_timeout <= 0:
        parser.error(f"--ddp_timeout must be a positive number of seconds, got {args.ddp_timeout}")
    if args.do_train and not args.train_data_file:
        parser.error("the following arguments are required: --train_data_file (or --no-do_train to evaluate only)")
    if not args.do_train:
        validate_eval_only(args, parser)
    if task_cls is not None:
        task_cls.check_args(args, parser)
    env_local = os.environ.get("LOCAL_RANK")
    if args.local_rank is not None and env_local is not None and int(env_local) != args.local_rank:
        parser.error(f"--local_rank {args.local_rank} disagrees with LOCAL_RANK={env_local} from the launcher")


def validate_eval_only(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    if not args.dev_data_file:
        parser.error("--no-do_train evaluates --dev_data_file: give one")
    if args.resume_from_checkpoint:
        parser.error("--no-do_train does not resume training: give the checkpoint to evaluate as --init_from_ckpt")


def parse_args(task_cls, argv: Sequence[str] | None = None, description: str | None = None) -> argparse.Namespace:
    """The flags of `task_cls`'s script, checked, with the defaults that depend on other flags filled in.

    This is the namespace the run uses from then on: nothing writes into it later (a task that needs the
    trainer to run differently says so in `trainer_args()`, which returns a copy)."""
    parser = build_parser(task_cls, description)
    args = parser.parse_args(argv)
    validate_args(args, parser, task_cls)
    return argparse.Namespace(**{**vars(args), "eval_batch_size": args.eval_batch_size or args.batch_size,
                                 "eval_steps": args.save_steps if args.eval_steps is None else args.eval_steps,
                                 "pad_to_multiple_of": args.pad_to_multiple_of or default_pad_multiple(args)})


def default_pad_multiple(args: argparse.Namespace) -> int:
    return AUTOCAST_PAD_MULTIPLE if args.fp16 or args.bf16 else 1


def check_output_dir(args: argparse.Namespace) -> None:
    """At start-up, before any data or model is loaded: --saved_dir can be made and written (not a file, not under
    one, not read-only), and holds no earlier run unless --overwrite_output_dir or --resume_from_checkpoint."""
    path = args.saved_dir
    if os.path.exists(path) and not os.path.isdir(path):
        raise errors.UsageError(f"--saved_dir {path} is a file, not a directory")
    existing = os.path.abspath(path)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise errors.UsageError(f"--saved_dir {path}: {existing} is a file, so no directory can be made under it")
    if not can_write_in(existing):
        raise errors.UsageError(f"--saved_dir {path}: cannot write in {existing} (no permission, or a read-only "
                                f"file system)")
    if args.resume_from_checkpoint or args.overwrite_output_dir or not os.path.isdir(path):
        return
    if os.listdir(path):
        raise errors.UsageError(f"--saved_dir {path} already exists and is not empty; pass --overwrite_output_dir "
                                f"to write into it, or --resume_from_checkpoint latest")


def can_write_in(directory: str) -> bool:
    """Tried, not os.access: that says yes to root on a read-only mount and no to some network file systems."""
    try:
        fd, probe = tempfile.mkstemp(prefix=".bertorch-write-test-", dir=directory)
    except OSError:
        return False
    os.close(fd)
    os.remove(probe)
    return True


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def reported_errors():
    """bertorch.errors.reported_errors, with a diverged run reported like a user's mistake (one line, no traceback)."""
    from bertorch.trainer import TrainingDiverged

    return errors.reported_errors(TrainingDiverged)


def exit_without_cleanup(message: str) -> None:
    """Report `message` like any user-facing error and end the process at once, skipping interpreter shutdown.

    After a collective timed out, the process group still has work queued for the stuck rank. Freeing it
    deadlocks (seen 1 run in 2 under load, torch 2.13 + gloo): the main thread, holding the GIL, joins
    ProcessGroupGloo's run-loop thread in its destructor while that thread waits for the GIL to free the
    timed-out work. NCCL's own watchdog aborts the process for the same reason; so do we, after the log line."""
    logger.error(message)
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.stdout.flush()
    os._exit(1)


def run(task_cls, argv: Sequence[str] | None = None, description: str | None = None,
        after: Callable[[Any, dict], dict] | None = None) -> dict:
    """Parse flags, set up distribution, let the task build data and model, train (or, with --no-do_train,
    evaluate), and clean up; returns the results (all_results.json).

    `after(task, results)`, if given, runs on every rank once the process group is gone (rank-0 extras such as
    a report need no collectives), under the same error reporting; its return value is returned instead."""
    from bertorch.memory import tune_allocator
    from bertorch.trainer import RankTimeout, Trainer

    args = parse_args(task_cls, argv, description)
    tune_allocator()  # before any data or model is allocated; a no-op off glibc (bertorch/memory.py says why)
    env = D.setup(no_cuda=args.no_cuda, timeout_s=args.ddp_timeout)
    setup_logging(env.is_main)
    with reported_errors():
        try:
            check_output_dir(args)
            if env.is_main:  # what a crash while saving left behind (models are swapped in whole: model_dir.py)
                for path in remove_leftovers(args.saved_dir):
                    logger.info(f"removed {path}, left by an interrupted save")
            D.barrier()  # every rank checks before rank 0 writes anything there
            set_seed(args.seed)
            task = task_cls(args, env)
            task.setup()
            trainer_args = task.trainer_args()
            if env.is_main:
                os.makedirs(args.saved_dir, exist_ok=True)
                with open(os.path.join(args.saved_dir, "training_args.json"), "w", encoding="utf-8") as f:
                    # the flags as run plus the command line as given, so a result row can name its recipe
                    given = list(sys.argv[1:] if argv is None else argv)
                    json.dump({**vars(trainer_args), "script": os.path.basename(sys.argv[0]), "argv": given}, f,
                              indent=2, ensure_ascii=False)
            trainer = Trainer(task, trainer_args, env)
            results = trainer.train() if args.do_train else trainer.evaluate_only()
        except RankTimeout as e:
            exit_without_cleanup(str(e))
        finally:
            D.teardown()
        return after(task, results) if after is not None else results
