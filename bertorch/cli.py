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
from typing import Sequence

import numpy as np
import torch
from loguru import logger

from bertorch import distributed as D
from bertorch.adversarial import ADVERSARIAL_METHODS
from bertorch.errors import UsageError
from bertorch.logging import setup_logging
from bertorch.losses.classification import LOSS_ALIASES, LOSS_TYPES
from bertorch.model_dir import TASK_FILE
from bertorch.models.base import ModelError
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
    g.add_argument("--dropout_rate", type=float, default=None,
                   help="dropout before the task head (default: the model config's)")


def add_data_args(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("data")
    g.add_argument("--train_data_file", default=None, help="training data file (required unless --no-do_train)")
    g.add_argument("--dev_data_file", default=None, help="dev data file, evaluated every --eval_steps")
    g.add_argument("--label_file", default=None,
                   help="labels.txt: one label a line, in id order (required by classification, NER and NLI)")
    g.add_argument("--data_dir", default=None,
                   help="where relative data paths are looked up (also $BERTORCH_DATA_DIR; then ./data, "
                        "../shared/data)")
    g.add_argument("--group_by_length", action=argparse.BooleanOptionalAction, default=True,
                   help="batch examples of similar length together (fewer pad tokens; epochs stay shuffled)")
    g.add_argument("--pad_to_max_length", action="store_true",
                   help="pad every batch to --max_seq_length (slower; for comparisons only)")
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
                   help="on CPU in fp32: attention/FFN recompute and bool dropout masks keep less for backward "
                        "(same maths; dropout draws differ from stock PyTorch). See bertorch/models/low_memory.py")
    g.add_argument("--checkpoint_above_tokens", type=int, default=4096,
                   help="with --low_memory_training: batches of more than N tokens (batch x padded length) also "
                        "recompute each layer in backward, keeping only its input (0 = never)")
    g.add_argument("--gradient_checkpointing", action="store_true",
                   help="recompute each layer in backward for every batch, on any device: least memory, "
                        "about a third more compute")
    g.add_argument("--loss_type", choices=LOSS_TYPES + tuple(LOSS_ALIASES), default="cross_entropy",
                   help="hard-label loss")
    g.add_argument("--label_smoothing", type=float, default=0.1, help="smoothing for --loss_type label_smoothing")
    g.add_argument("--focal_gamma", type=float, default=2.0, help="gamma of --loss_type focal")
    g.add_argument("--focal_alpha", type=float, nargs="+", default=None,
                   help="per-label weights of --loss_type focal, one per label in labels.txt order")
    g.add_argument("--adversarial", choices=ADVERSARIAL_METHODS, default=None,
                   help="adversarial training on the word embeddings")
    g.add_argument("--adv_epsilon", type=float, default=1.0, help="perturbation norm (FGM) / radius (PGD)")
    g.add_argument("--adv_alpha", type=float, default=0.3, help="PGD step size")
    g.add_argument("--adv_steps", type=int, default=3, help="PGD steps")
    g.add_argument("--find_unused_parameters", action="store_true", help="DDP find_unused_parameters")


def add_output_args(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("output and logging")
    g.add_argument("--saved_dir", "--output_dir", default="./checkpoint", help="where models and logs go")
    g.add_argument("--overwrite_output_dir", action="store_true", help="allow writing into a non-empty --saved_dir")
    g.add_argument("--logging_steps", type=int, default=20, help="log every N optimisation steps")
    g.add_argument("--eval_steps", type=int, default=None, help="evaluate every N steps (default: --save_steps)")
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
    add_output_args(parser)
    task_cls.add_args(parser)
    return parser


def validate_args(args: argparse.Namespace, parser: argparse.ArgumentParser, task_cls=None) -> None:
    """Flag combinations that cannot work are refused before any data or model is loaded."""
    if args.fp16 and args.bf16:
        parser.error("--fp16 and --bf16 are exclusive")
    if args.fp16 and (args.no_cuda or not torch.cuda.is_available()):
        parser.error("--fp16 needs a CUDA GPU; on CPU use --bf16 or fp32 (the default)")
    for name in ("batch_size", "gradient_accumulation_steps"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1, got {getattr(args, name)}")
    if args.max_steps <= 0 and args.epochs < 1:
        parser.error("give --epochs >= 1 or --max_steps > 0")
    if not 1 <= args.max_seq_length <= 4096:
        parser.error(f"--max_seq_length must be in [1, 4096], got {args.max_seq_length}")
    if not 0.0 <= args.warmup_proportion < 1.0:
        parser.error(f"--warmup_proportion must be in [0, 1), got {args.warmup_proportion}")
    if not 0.0 < args.layerwise_lr_decay <= 1.0:
        parser.error(f"--layerwise_lr_decay must be in (0, 1], got {args.layerwise_lr_decay}")
    for name in ("max_train_samples", "max_eval_samples"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1, got {getattr(args, name)}")
    if args.do_train and not args.train_data_file:
        parser.error("the following arguments are required: --train_data_file (or --no-do_train to evaluate only)")
    if not args.do_train:
        validate_eval_only(args, parser, task_cls)
    for name in getattr(task_cls, "required_flags", ()):
        if getattr(args, name, None) in (None, ""):
            parser.error(f"the following arguments are required: --{name}")
    args.eval_batch_size = args.eval_batch_size or args.batch_size
    if args.eval_steps is None:
        args.eval_steps = args.save_steps
    env_local = os.environ.get("LOCAL_RANK")
    if args.local_rank is not None and env_local is not None and int(env_local) != args.local_rank:
        parser.error(f"--local_rank {args.local_rank} disagrees with LOCAL_RANK={env_local} from the launcher")


def validate_eval_only(args: argparse.Namespace, parser: argparse.ArgumentParser, task_cls) -> None:
    if not args.dev_data_file:
        parser.error("--no-do_train evaluates --dev_data_file: give one")
    if args.resume_from_checkpoint:
        parser.error("--no-do_train does not resume training: give the checkpoint to evaluate as --init_from_ckpt")
    if task_cls is not None:
        from bertorch.tasks.distill import DistillTask
        if issubclass(task_cls, DistillTask):
            parser.error("run_distill.py has no --no-do_train mode: the distilled student is a plain model directory, "
                         "so evaluate it with run_classifier.py or run_ner.py --no-do_train "
                         "--pretrained_model_name_or_path STUDENT_DIR")


def evaluation_only(task_cls):
    """`task_cls` reading no training data and evaluating saved weights (--no-do_train).

    Tasks read their training file in `setup()`; here they are handed the dev file instead (same format,
    read but never tokenised: `take` keeps none of it), and contrastive tasks, whose training file has
    another format, read nothing. The weights come from --init_from_ckpt, else from
    --pretrained_model_name_or_path when it is a saved bertorch directory (heads, CRF, pooling included).
    """
    class EvalOnly(task_cls):
        def setup(self) -> None:
            self.args.train_data_file = self.args.dev_data_file
            try:
                super().setup()
            finally:
                self.args.train_data_file = None

        def take(self, examples: list, split: str) -> list:
            return [] if split == "train" else super().take(examples, split)

        def read_train(self) -> list:
            return []

        def init_weights(self, model) -> None:
            a = self.args
            source = a.init_from_ckpt or a.pretrained_model_name_or_path
            if not a.init_from_ckpt and not os.path.isfile(os.path.join(source, TASK_FILE)):
                logger.info(f"evaluating {source} as loaded (no {TASK_FILE}: a task head on top is new)")
                return
            if not os.path.exists(source):
                raise ModelError(f"--init_from_ckpt {source!r}: no such file or directory")
            missing = model.load_weights(source, strict=False)
            if missing:
                logger.warning(f"{source} has no weights for {missing}: they are randomly initialised, so the "
                               f"metrics are not those of a trained model (saved with other flags, e.g. "
                               f"--pooling_mode, --output_emb_size, --concat_multiply, --use_crf?)")
            logger.info(f"evaluating the weights of {source}")

    EvalOnly.__name__ = EvalOnly.__qualname__ = f"EvalOnly{task_cls.__name__}"
    return EvalOnly


def check_output_dir(args: argparse.Namespace) -> None:
    if args.resume_from_checkpoint or args.overwrite_output_dir or not os.path.isdir(args.saved_dir):
        return
    if os.listdir(args.saved_dir):
        raise SystemExit(f"error: --saved_dir {args.saved_dir} already exists and is not empty; pass "
                         f"--overwrite_output_dir to write into it, or --resume_from_checkpoint latest")


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def run(task_cls, argv: Sequence[str] | None = None, description: str | None = None) -> dict:
    """Parse flags, set up distribution, let the task build data and model, train, and clean up."""
    from bertorch.memory import tune_allocator
    from bertorch.trainer import Trainer, TrainingDiverged

    tune_allocator()  # before any data or model is allocated; a no-op off glibc

    parser = build_parser(task_cls, description)
    args = parser.parse_args(argv)
    validate_args(args, parser, task_cls)
    env = D.setup(no_cuda=args.no_cuda)
    setup_logging(env.is_main)
    try:
        check_output_dir(args)
        D.barrier()  # every rank checks before rank 0 writes anything there
        set_seed(args.seed)
        task = (task_cls if args.do_train else evaluation_only(task_cls))(args, env)
        task.setup()
        if env.is_main:
            os.makedirs(args.saved_dir, exist_ok=True)
            with open(os.path.join(args.saved_dir, "training_args.json"), "w", encoding="utf-8") as f:
                json.dump(vars(args), f, indent=2, ensure_ascii=False)
        trainer = Trainer(task, args, env)
        return trainer.train() if args.do_train else trainer.evaluate_only()
    except (UsageError, TrainingDiverged) as e:  # a user's mistake: one line; anything else is a bug (traceback)
        logger.error(str(e))
        raise SystemExit(f"error: {e}") from None
    finally:
        D.teardown()

