"""What a task plugs into the shared CLI and trainer.

A task adds its own flags, reads and tokenises its data once, builds its model (loss in forward), turns
a batch into per-example predictions, and computes its metrics from the predictions of the whole dev
set (gathered from every rank, in file order). Everything else -- DDP, schedules, accumulation, AMP,
adversarial training, logging, checkpoints -- is the trainer's.
"""
from __future__ import annotations

import argparse
import os
from typing import Any, Sequence

import torch
from transformers import AutoTokenizer

from bertorch.data.batching import TrainBatchSampler, collate_encodings
from bertorch.data.readers import resolve_path
from bertorch.distributed import DistEnv
from bertorch.losses.classification import build_loss
from bertorch.model_dir import write_task_info
from bertorch.models.base import ModelError, TaskModel, check_model_path, load_config, set_classifier_dropout


class Task:
    name = "task"
    required_flags: tuple[str, ...] = ()  # shared flags this task cannot do without (checked by the CLI)
    metric_for_best = "accuracy"
    greater_is_better = True

    @classmethod
    def add_args(cls, parser: argparse.ArgumentParser) -> None:
        """Add this task's own flag group."""

    def __init__(self, args: argparse.Namespace, env: DistEnv):
        self.args, self.env = args, env
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

    def data_path(self, path: str | None) -> str | None:
        return None if path is None else resolve_path(path, getattr(self.args, "data_dir", None))

    def load_tokenizer(self, name_or_path: str):
        check_model_path(name_or_path)
        try:
            return AutoTokenizer.from_pretrained(name_or_path)
        except (OSError, ValueError) as e:
            raise ModelError(f"{name_or_path!r}: cannot load a tokenizer ({str(e).splitlines()[0]})") from None

    def init_weights(self, model: TaskModel) -> None:
        """--init_from_ckpt: warm-start from a saved directory or weights file (missing keys are logged)."""
        path = getattr(self.args, "init_from_ckpt", None)
        if not path:
            return
        if not os.path.exists(path):
            raise ModelError(f"--init_from_ckpt {path!r}: no such file or directory")
        from loguru import logger
        missing = model.load_weights(path, strict=False)
        logger.info(f"warm-started from {path}" + (f"; newly initialised: {missing}" if missing else ""))

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
        batch = collate_encodings(features, self.tokenizer.pad_token_id, self.pad_to())
        if "label" in features[0]:
            batch["labels"] = torch.tensor([f["label"] for f in features])
        return batch

    def pad_to(self) -> int | None:
        """Pad every batch to max_seq_length instead of its longest example (benchmark baseline only)."""
        return self.args.max_seq_length if getattr(self.args, "pad_to_max_length", False) else None

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
        the head dropout of --dropout_rate."""
        config = load_config(self.args.pretrained_model_name_or_path, num_labels=len(self.labels),
                             id2label=dict(enumerate(self.labels)),
                             label2id={label: i for i, label in enumerate(self.labels)})
        set_classifier_dropout(config, self.args.dropout_rate)
        return config

    def hard_label_loss(self):
        """--loss_type with its options, for this task's label count."""
        a = self.args
        return build_loss(a.loss_type, len(self.labels), a.label_smoothing, a.focal_gamma, a.focal_alpha)

    def lr_overrides(self) -> dict[str, float]:
        """Parameter-name prefix -> learning rate, e.g. a larger LR for a CRF layer."""
        return {}

    def task_info(self) -> dict:
        """What a Predictor needs to rebuild inputs exactly as in training (saved as bertorch.json)."""
        return {"task": self.name, "max_seq_length": self.args.max_seq_length}

    def save(self, model: TaskModel, directory: str) -> None:
        model.save_pretrained(directory)
        self.tokenizer.save_pretrained(directory)
        write_task_info(directory, self.task_info())
