"""What a task plugs into the shared CLI and trainer.

A task adds its own flags, reads and tokenises its data once, builds its model (loss in forward), turns
a batch into per-example predictions, and computes its metrics from the predictions of the whole dev
set (gathered from every rank, in file order). Everything else -- DDP, schedules, accumulation, AMP,
adversarial training, logging, checkpoints -- is the trainer's.

Evaluation only (--no-do_train) is a mode of every task, not another class: `read_split("train", ...)`
reads nothing, and `init_weights` loads the weights to evaluate instead of warm-starting.
"""
from __future__ import annotations

import argparse
import os
from typing import Any, Callable, Sequence

import torch
from loguru import logger

from bertorch.data.batching import TrainBatchSampler, collate_encodings, padded_length
from bertorch.data.readers import resolve_path
from bertorch.distributed import DistEnv
from bertorch.losses.classification import build_loss
from bertorch.model_dir import TASK_FILE, write_task_info
from bertorch.models.base import ModelError, TaskModel, load_config, set_classifier_dropout
from bertorch.models.loading import (DIGESTS_KEY, MODEL_FLAG, check_pretrained, check_saved_task, load_tokenizer,
                                     weight_digests)


def accuracy_stats(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, tuple[torch.Tensor, int]]:
    """train_stats of a classifier head: argmax accuracy of the batch, summed on device (no host sync)."""
    return {"accuracy": ((logits.argmax(-1) == labels).sum(), labels.numel())}


class Task:
    name = "task"
    required_flags: tuple[str, ...] = ()  # shared flags this task cannot do without (checked by the CLI)
    label_head = True  # a classifier over labels: the CLI offers --label_file, --dropout_rate and --loss_type & co.
    supports_rdrop = False  # rdrop_logits() gives distributions to compare: the CLI offers --rdrop_alpha
    metric_for_best = "accuracy"
    greater_is_better = True

    @classmethod
    def add_args(cls, parser: argparse.ArgumentParser) -> None:
        """Add this task's own flag group."""

    @classmethod
    def check_args(cls, args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
        """Refuse, with parser.error, flags this task cannot run with (called by the CLI after parsing)."""
        for name in cls.required_flags:
            if getattr(args, name, None) in (None, ""):
                parser.error(f"the following arguments are required: --{name}")

    def __init__(self, args: argparse.Namespace, env: DistEnv):
        self.args, self.env = args, env
        self.do_train = getattr(args, "do_train", True)  # False: --no-do_train, evaluate saved weights only
        self.tokenizer = None
        self.train_features: list[dict] = []
        self.eval_features: list[dict] = []
        self.model: TaskModel | None = None

    # -- set-up ---------------------------------------------------------------------------------------
    def setup(self) -> None:
        """Read data, tokenise it once, build the model. Fills the attributes above."""
        raise NotImplementedError

    def take(self, examples: list, split: str) -> list:
        """--max_train_samples / --max_eval_samples: the first N examples of a split (quick runs, debugging)."""
        limit = getattr(self.args, "max_train_samples" if split == "train" else "max_eval_samples", None)
        return examples if limit is None else examples[:limit]

    def read_split(self, split: str, read: Callable[[str], list]) -> list:
        """`read(path)` of --train_data_file ("train") or --dev_data_file ("dev"), cut by take(); nothing for a
        split that is not used: no dev file given, or training data when only evaluating."""
        path = self.args.train_data_file if split == "train" else self.args.dev_data_file
        if not path or (split == "train" and not self.do_train):
            return []
        return self.take(read(self.data_path(path)), split)

    def data_path(self, path: str | None) -> str | None:
        return None if path is None else resolve_path(path, getattr(self.args, "data_dir", None))

    def load_tokenizer(self, name_or_path: str):
        """The tokenizer of a model this run reads (the one to train, a teacher), after the model checks that need
        no model built (models/loading.py), --max_seq_length against its position embeddings included."""
        flag = MODEL_FLAG if name_or_path == self.args.pretrained_model_name_or_path else None
        check_pretrained(name_or_path, self.args.max_seq_length, flag)
        return load_tokenizer(name_or_path, flag)

    def init_weights(self, model: TaskModel) -> None:
        """--init_from_ckpt: warm-start from a saved directory or weights file (missing keys are logged).

        Evaluating only, the weights to evaluate: --init_from_ckpt, else --pretrained_model_name_or_path when
        it is a saved bertorch directory (heads, CRF, pooling included)."""
        a = self.args
        path = getattr(a, "init_from_ckpt", None)
        if not self.do_train:
            path = path or a.pretrained_model_name_or_path
            if not a.init_from_ckpt and not os.path.isfile(os.path.join(path, TASK_FILE)):
                logger.info(f"evaluating {path} as loaded (no {TASK_FILE}: a task head on top is new)")
                return
        if not path:
            return
        if not os.path.exists(path):
            raise ModelError(f"--init_from_ckpt {path!r}: no such file or directory")
        missing = model.load_weights(path, strict=False)
        if self.do_train:
            logger.info(f"warm-started from {path}" + (f"; newly initialised: {missing}" if missing else ""))
            return
        if missing:
            logger.warning(f"{path} has no weights for {missing}: they are randomly initialised, so the metrics are "
                           f"not those of a trained model (saved with other flags, e.g. --pooling_mode, "
                           f"--output_emb_size, --concat_multiply, --use_crf?)")
        logger.info(f"evaluating the weights of {path}")

    # -- batches --------------------------------------------------------------------------------------
    def feature_length(self, feature: dict) -> int:
        """Token count used to group batches by length."""
        return len(feature["input_ids"])

    def train_sampler(self) -> TrainBatchSampler:
        """Per-rank training batches; tasks may subclass the sampler (e.g. no duplicate texts per batch)."""
        a, e = self.args, self.env
        return TrainBatchSampler([self.feature_length(f) for f in self.train_features], a.batch_size,
                                 e.rank, e.world_size, a.seed, a.group_by_length)

    def collate(self, features: Sequence[dict]) -> dict[str, torch.Tensor]:
        batch = collate_encodings(features, self.tokenizer.pad_token_id, self.pad_to(features))
        if "label" in features[0]:
            batch["labels"] = torch.tensor([f["label"] for f in features])
        return batch

    def pad_to(self, features: Sequence[dict]) -> int:
        """The padded length of a batch: its longest input rounded up to --pad_to_multiple_of (never past
        --max_seq_length), or --max_seq_length itself with --pad_to_max_length (a benchmark baseline)."""
        a = self.args
        if getattr(a, "pad_to_max_length", False):
            return a.max_seq_length
        return padded_length(max(len(f["input_ids"]) for f in features), getattr(a, "pad_to_multiple_of", None) or 1,
                             a.max_seq_length)

    def train_stats(self, batch: dict, output: Any) -> dict[str, tuple[torch.Tensor, float]]:
        """Running training metrics for the log line, as (numerator, denominator) pairs."""
        return {}

    def predict(self, model: TaskModel, batch: dict, output: Any) -> list:
        """Per-example predictions for one eval batch (model is unwrapped, in eval mode)."""
        raise NotImplementedError

    def compute_metrics(self, predictions: list, model: TaskModel | None = None) -> dict[str, float]:
        """Metrics of the whole dev set; predictions[i] belongs to eval_features[i]. `model` made them, when it
        is not `self.model` (a distillation teacher): metrics that decode with the model (a tagger's CRF)
        take what they need from it."""
        raise NotImplementedError

    # -- model ----------------------------------------------------------------------------------------
    def labelled_config(self):
        """The backbone's config with this task's labels (the real id2label lands in config.json) and
        the head dropout of --dropout_rate. A saved model of another task or head is refused first."""
        if os.path.isdir(self.args.pretrained_model_name_or_path):
            check_saved_task(self.args.pretrained_model_name_or_path, self.task_info())
        config = load_config(self.args.pretrained_model_name_or_path, num_labels=len(self.labels),
                             id2label=dict(enumerate(self.labels)),
                             label2id={label: i for i, label in enumerate(self.labels)})
        set_classifier_dropout(config, self.args.dropout_rate)
        return config

    def hard_label_loss(self):
        """--loss_type with its options, for this task's label count."""
        a = self.args
        return build_loss(a.loss_type, len(self.labels), a.label_smoothing, a.focal_gamma, a.focal_alpha)

    def trainer_args(self) -> argparse.Namespace:
        """The flags the trainer runs with: the parsed ones, or a copy with what this task needs changed (the
        parsed namespace itself is never written to)."""
        return self.args

    def rdrop_logits(self, batch: dict, output) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The logits R-Drop compares across its two dropout passes (..., K), and which positions count (...)."""
        raise NotImplementedError(f"{self.name} has no R-Drop logits")

    def lr_overrides(self) -> dict[str, float]:
        """Parameter-name prefix -> learning rate, e.g. a larger LR for a CRF layer."""
        return {}

    def task_info(self) -> dict:
        """What a Predictor needs to rebuild inputs exactly as in training (saved as bertorch.json)."""
        return {"task": self.name, "max_seq_length": self.args.max_seq_length}

    def save(self, model: TaskModel, directory: str) -> None:
        model.save_pretrained(directory)
        self.tokenizer.save_pretrained(directory)
        write_task_info(directory, {**self.task_info(), DIGESTS_KEY: weight_digests(directory)})
