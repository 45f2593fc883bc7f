"""The model of multi-task distillation: one `Distiller` per task whose students share one encoder.

Each task keeps its own student model (`SequenceClassifier`, `Tagger` + CRF, with its own forward, loss and
`save_pretrained`), its own teachers, matches and projections; only the encoder modules (embeddings and
transformer layers) are one object, put into every student's backbone. So a task's student saved alone
is a normal model directory of that task, and the trainer sees one model whose parameters (shared ones
once) it optimises as usual.

A batch's keys are "<task>/<input>"; the forward runs each task's distiller on its own inputs (training
batches hold one task, an evaluation batch may hold several) and "<task>/rows" says which rows of the
collated batch each task's examples were.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass

import torch
from torch import nn
from transformers.utils import ModelOutput

from bertorch.distill.distiller import Distiller, DistillOutput
from bertorch.models.base import ModelError, TaskModel

SEP = "/"
ROWS = "rows"  # "<task>/rows": positions of that task's examples in the collated batch
# Config fields that must agree for one encoder to serve every task's head.
ENCODER_FIELDS = ("model_type", "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                  "intermediate_size", "max_position_embeddings", "type_vocab_size")


@dataclass
class MultiTaskOutput(ModelOutput):
    loss: torch.Tensor | None = None
    tasks: dict[str, DistillOutput] | None = None  # task name -> the output for that task's examples


def split_batch(batch: dict) -> dict[str, dict]:
    """{"senti/input_ids": x, "ner/input_ids": y} -> {"senti": {"input_ids": x}, "ner": {"input_ids": y}}."""
    parts: dict[str, dict] = {}
    for key, value in batch.items():
        name, _, field = key.partition(SEP)
        parts.setdefault(name, {})[field] = value
    return parts


def share_encoder(students: dict[str, TaskModel]) -> str:
    """Put the first student's encoder modules into every other student's backbone.

    Every child of the base model (BertModel, ...) is shared except the pooler, which only classifiers
    have and which is part of their head. Returns the task whose base model to save as "the encoder":
    one with a pooler if any, so the saved encoder loads with AutoModel without new weights.
    """
    names = list(students)
    first = students[names[0]].backbone
    for name in names[1:]:
        other = students[name].backbone
        for field in ENCODER_FIELDS:
            mine, theirs = getattr(first.config, field, None), getattr(other.config, field, None)
            if mine != theirs:
                raise ModelError(f"the students of tasks {names[0]!r} and {name!r} differ in {field} ({mine} vs "
                                 f"{theirs}): one encoder cannot serve both. With --student_layers every teacher "
                                 f"must have the same architecture; else give --student_model")
        for child, module in first.base_model.named_children():
            if child != "pooler":
                setattr(other.base_model, child, module)
    record_outputs_once(first.base_model, [students[n].backbone.base_model for n in names[1:]])
    return next((n for n in names if getattr(students[n].backbone.base_model, "pooler", None) is not None), names[0])


def record_outputs_once(owner: nn.Module, sharers: list[nn.Module]) -> None:
    """transformers 5 records hidden states and attentions (output_hidden_states, which the matches use) with
    forward hooks that each base model installs on its own layers the first time it is asked for them; on
    shared layers every task would add its hooks and each layer would be recorded once per task. Install
    the owner's hooks now and mark the other base models as hooked: they run the same layers."""
    try:
        from transformers.utils.output_capturing import maybe_install_capturing_hooks
    except ImportError:  # transformers 4 collects these outputs inside forward, without hooks
        return
    maybe_install_capturing_hooks(owner)
    for base in sharers:
        base._output_capturing_hooks_installed = True


class MultiTaskDistiller(TaskModel):
    def __init__(self, distillers: dict[str, Distiller]):
        super().__init__()
        self.tasks = nn.ModuleDict(distillers)
        self.encoder_task = share_encoder({name: d.student for name, d in distillers.items()})
        if any(d.need_attention for d in distillers.values()):  # the shared layers read the first task's config
            for d in distillers.values():
                d.student.backbone.set_attn_implementation("eager")

    @property
    def backbone(self) -> nn.Module:
        """A backbone holding the shared embeddings and layers (layer-wise LRs, adversarial noise)."""
        return self.tasks[self.encoder_task].backbone

    @property
    def encoder(self) -> nn.Module:
        return self.backbone.base_model

    def students(self) -> dict[str, TaskModel]:
        return {name: d.student for name, d in self.tasks.items()}

    def forward(self, **batch) -> MultiTaskOutput:
        outputs = {}
        for name, inputs in split_batch(batch).items():
            inputs.pop(ROWS, None)
            outputs[name] = self.tasks[name](**inputs)
        losses = [o.loss for o in outputs.values() if o.loss is not None]
        # An evaluation batch may mix tasks whose losses (CE, CRF NLL) do not add up to anything meaningful.
        loss = sum(losses) if self.training and losses else None
        return MultiTaskOutput(loss=loss, tasks=outputs)

    # -- saving: the encoder alone at the top, each task's student (+ its distill state) in <task>/ ---------
    def save_encoder(self, directory: str) -> None:
        self.encoder.save_pretrained(directory)
        path = os.path.join(directory, "config.json")
        with open(path, encoding="utf-8") as f:
            config = json.load(f)
        for key in ("id2label", "label2id", "problem_type"):  # the labels of the task it was taken from
            config.pop(key, None)
        with open(path, "w", encoding="utf-8") as f:
            json.dump(config, f, indent=2, ensure_ascii=False)

    def save_pretrained(self, directory: str) -> None:
        self.save_encoder(directory)
        for name, distiller in self.tasks.items():
            distiller.save_pretrained(os.path.join(directory, name))

    def load_weights(self, directory: str, strict: bool = True) -> list[str]:
        missing = []
        for name, distiller in self.tasks.items():
            path = os.path.join(directory, name)
            if not os.path.isdir(path):
                raise ModelError(f"{directory}: no {name}/ directory; not a multi-task checkpoint with task {name!r}")
            missing += [f"{name}.{key}" for key in distiller.load_weights(path, strict)]
        return missing
