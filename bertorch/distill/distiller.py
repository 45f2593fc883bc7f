"""The distillation model: a student, frozen teachers and match projections behind one `forward(**batch)`.

The hard-label, soft-label (KD) and intermediate-match losses are all computed in forward, so the shared
trainer trains a `Distiller` like any other task model (DDP, accumulation, AMP, checkpoints, resume).
Teachers are kept in a plain list, not as submodules: DDP, the optimiser, gradient clipping, `state_dict`
and `.train()` never see them; `_apply` moves them with the student. They run in eval mode under no_grad.
"""
from __future__ import annotations

import contextlib
import math
import os
from dataclasses import dataclass

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers.utils import ModelOutput

from bertorch.distill.matches import Match
from bertorch.errors import UsageError
from bertorch.losses.distillation import (KD_LOSSES, combine_span_teachers, get_feature_loss, span_kd_loss,
                                          temperature_schedule, weight_schedule)
from bertorch.model_dir import is_span_model, read_task_info
from bertorch.models.base import ModelError, TaskModel, load_config
from bertorch.models.global_pointer import MASKED

DISTILL_STATE_NAME = "distill_state.safetensors"  # projections + step counter: checkpoints only
# Inputs tokenised for the teacher when its tokenizer differs (classification KD only).
TEACHER_INPUTS = {"teacher_input_ids": "input_ids", "teacher_input_mask": "attention_mask",
                  "teacher_token_type_ids": "token_type_ids"}


@dataclass
class KDConfig:
    kd_loss_type: str = "ce"
    temperature: float = 4.0
    temperature_schedule: str = "constant"
    kd_loss_weight: float = 1.2
    kd_loss_weight_schedule: str = "constant"
    hard_label_weight: float = 1.0
    hard_label_weight_schedule: str = "constant"
    teacher_weights: tuple[float, ...] | None = None
    logits_mask: str | None = None  # batch key masking token-level logits ("char_mask" for taggers)
    span_scores: bool = False  # logits are GlobalPointer span scores (B, K, C, C): span_kd_loss


@dataclass
class DistillOutput(ModelOutput):
    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    hard_loss: torch.Tensor | None = None
    kd_loss: torch.Tensor | None = None
    match_loss: torch.Tensor | None = None


def combine_teachers(logits: list[torch.Tensor], weights: list[float], temperature: float,
                     kd_loss_type: str) -> torch.Tensor:
    """One teacher-logit tensor whose soft labels are the weighted mean of every teacher's.

    ce: T·log Σ_k w_k softmax(t_k/T), so softmax(result/T) is exactly the averaged soft label;
    mse: Σ_k w_k t_k, since MSE regresses logits. Weights are normalised to sum to 1.
    """
    if len(logits) == 1:
        return logits[0]
    w = [x / sum(weights) for x in weights]
    if kd_loss_type == "mse":
        return sum(wk * t for wk, t in zip(w, logits))
    probs = sum(wk * torch.softmax(t.float() / temperature, dim=-1) for wk, t in zip(w, logits))
    return temperature * torch.log(probs.clamp_min(torch.finfo(probs.dtype).tiny))


class StepClock:
    """The optimisation step of the current training micro-batch, for the temperature/weight schedules.

    Counts distinct training batches (an adversarial re-forward of the same batch is not a new one) and
    maps the count to a step as the trainer does: `batches_per_epoch` micro-batches an epoch, windows of
    `accumulation` with a last partial window, so the step is exact under accumulation and after resume.
    """

    def __init__(self, batches_per_epoch: int, accumulation: int, total_steps: int):
        self.batches_per_epoch, self.accumulation, self.total_steps = batches_per_epoch, accumulation, total_steps
        self.steps_per_epoch = math.ceil(batches_per_epoch / accumulation)
        self.micro_batches = 0
        self._last = None

    @classmethod
    def for_run(cls, batches_per_epoch: int, accumulation: int, epochs: int, max_steps: int) -> "StepClock":
        """The clock of a run of `epochs` (or `max_steps` > 0) optimisation steps, counted as the trainer does."""
        steps_per_epoch = math.ceil(batches_per_epoch / accumulation)
        return cls(batches_per_epoch, accumulation, max_steps if max_steps > 0 else steps_per_epoch * epochs)

    def step(self, batch_key) -> int:
        if batch_key is not self._last:
            self._last, self.micro_batches = batch_key, self.micro_batches + 1
        epoch, batch = divmod(self.micro_batches - 1, self.batches_per_epoch)
        return epoch * self.steps_per_epoch + batch // self.accumulation


@contextlib.contextmanager
def tap_features(model: TaskModel, hidden: bool, attention: bool):
    """Catch the hidden states / attentions of `model.backbone` during one call.

    Hooks rather than new forward arguments: each task model's own forward (per-character gather, CRF
    loss) is reused unchanged, for the student and the teacher alike.
    """
    found: dict = {}
    if not (hidden or attention):
        yield found
        return
    flags = {"output_hidden_states": True} if hidden else {}
    if attention:
        flags["output_attentions"] = True

    def ask(module, args, kwargs):
        return args, {**kwargs, **flags}

    def catch(module, args, kwargs, output):
        found["hidden"], found["attention"] = output.hidden_states, output.attentions

    handles = [model.backbone.register_forward_pre_hook(ask, with_kwargs=True),
               model.backbone.register_forward_hook(catch, with_kwargs=True)]
    try:
        yield found
    finally:
        for h in handles:
            h.remove()


def cache_teacher_logits(model: "Distiller", features: list[dict], collate, length, batch_size: int, env) -> None:
    """--teacher_cached: every training feature gets "teacher_logits", (K, C) or (K, chars, C) numpy.

    Each rank computes a share of the features (teacher in eval mode: the same logits every epoch) and the
    shares are exchanged, so the cache does not depend on how the sampler deals batches out later.
    """
    from bertorch import distributed as D
    from bertorch.data.batching import eval_shard

    found = []
    for idx in eval_shard([length(f) for f in features], batch_size, env.rank, env.world_size):
        batch = collate([{k: v for k, v in features[i].items() if k not in ("label", "labels", "aux")} for i in idx])
        logits = torch.stack(model.teacher_logits({k: v.to(env.device) for k, v in batch.items()}), 1).cpu().numpy()
        for row, i in enumerate(idx):
            chars = len(features[i].get("char_index", ()))
            found.append((i, logits[row, :, :chars] if chars else logits[row]))
    for part in D.gather_objects(found):
        for i, value in part:
            features[i]["teacher_logits"] = value


def stack_cached_logits(arrays: list) -> torch.Tensor:
    """(B, K, C), or (B, K, chars, C) zero-padded to the longest example of the batch."""
    if arrays[0].ndim == 2:
        return torch.from_numpy(np.stack(arrays))
    out = np.zeros((len(arrays), arrays[0].shape[0], max(x.shape[1] for x in arrays), arrays[0].shape[2]),
                   dtype=np.float32)
    for row, x in enumerate(arrays):
        out[row, :, :x.shape[1]] = x
    return torch.from_numpy(out)


def load_teacher(directory: str) -> tuple[TaskModel, dict]:
    """A saved classifier, tagger or span NER directory as a frozen TaskModel in eval mode, and its bertorch.json."""
    from bertorch.models.classifier import SequenceClassifier
    from bertorch.models.global_pointer import SpanNer
    from bertorch.models.tagger import Tagger

    if not os.path.isdir(directory):
        raise ModelError(f"--teacher_model_dir {directory}: no such directory")
    info = read_task_info(directory)
    config = load_config(directory)
    if is_span_model(info):  # its student is a span model too (NerDistillTask.student_head): KD on span scores
        model = SpanNer.from_saved(directory, info)
    elif info["task"] == "classification":
        model = SequenceClassifier.from_pretrained(directory, config, loss_fn=None)
    elif info["task"] == "ner":
        model = Tagger.from_pretrained(directory, config, None, bool(info.get("use_crf")))
        if info.get("use_crf"):
            model.load_weights(directory)  # the CRF transitions, for the teacher's own dev score
    else:
        raise ModelError(f"--teacher_model_dir {directory}: a {info['task']!r} model; distillation needs a "
                         f"classifier (run_classifier.py) or a tagger (run_ner.py)")
    return model.eval().requires_grad_(False), info


class Distiller(TaskModel):
    def __init__(self, student: TaskModel, teachers: list[TaskModel], matches: list[Match] = (),
                 config: KDConfig | None = None, clock: StepClock | None = None):
        super().__init__()
        self.student = student
        self.teachers = [t.eval().requires_grad_(False) for t in teachers]  # plain list: see module docstring
        self.matches = list(matches)
        self.projections = nn.ModuleDict({str(i): nn.Linear(*m.proj) for i, m in enumerate(self.matches) if m.proj})
        self.config = config or KDConfig()
        self.clock = clock
        weights = self.config.teacher_weights or [1.0] * len(self.teachers)
        if len(weights) != len(self.teachers) or min(weights) < 0 or sum(weights) <= 0:
            raise UsageError(f"--teacher_weights {list(weights)}: give one non-negative weight per teacher "
                             f"({len(self.teachers)}), not all zero")
        self.teacher_weights = list(weights)
        self.need_hidden = any(m.feature != "attention" for m in self.matches)
        self.need_attention = any(m.feature == "attention" for m in self.matches)

    @property
    def backbone(self) -> nn.Module:
        """The student's: the trainer builds layer-wise LRs and adversarial noise from it."""
        return self.student.backbone

    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)
        for teacher in self.teachers:
            teacher._apply(fn, recurse)
        return self

    # -- saving: the student directory, plus projections and the step counter for resume ---------------
    def save_pretrained(self, directory: str) -> None:
        self.student.save_pretrained(directory)
        state = {f"projections.{k}": v.detach().cpu().contiguous() for k, v in self.projections.state_dict().items()}
        state["clock.micro_batches"] = torch.tensor([self.clock.micro_batches if self.clock else 0])
        save_file(state, os.path.join(directory, DISTILL_STATE_NAME))

    def load_weights(self, directory: str, strict: bool = True) -> list[str]:
        missing = self.student.load_weights(directory, strict)
        path = os.path.join(directory, DISTILL_STATE_NAME)
        if not os.path.isfile(path):
            if strict and len(self.projections):
                raise ModelError(f"{directory}: no {DISTILL_STATE_NAME} (match projections); not a distillation "
                                 f"checkpoint of this run")
            return missing + [f"projections.{k}" for k in self.projections.state_dict()]
        state = load_file(path)
        own = {k[len("projections."):]: v for k, v in state.items() if k.startswith("projections.")}
        result = self.projections.load_state_dict(own, strict=strict)
        if self.clock is not None and "clock.micro_batches" in state:
            self.clock.micro_batches = int(state["clock.micro_batches"][0])
        return missing + [f"projections.{k}" for k in result.missing_keys]

    # -- forward -------------------------------------------------------------------------------------------
    @staticmethod
    def teacher_inputs(batch: dict) -> dict:
        """Pops the teacher's own inputs if it has them; else the student's inputs (without labels)."""
        own = {TEACHER_INPUTS[k]: batch.pop(k) for k in list(batch) if k in TEACHER_INPUTS}
        return own or {k: v for k, v in batch.items() if k != "labels"}

    @torch.no_grad()
    def teacher_logits(self, batch: dict) -> list[torch.Tensor]:
        inputs = self.teacher_inputs(dict(batch))
        return [teacher(**inputs).logits.float() for teacher in self.teachers]

    def forward(self, **batch) -> DistillOutput:
        inputs = self.teacher_inputs(batch)
        cached = batch.pop("teacher_logits", None)
        if not self.training:  # evaluation scores the student alone
            out = self.student(**batch)
            return DistillOutput(loss=out.loss, logits=out.logits)
        c = self.config
        step, total = (self.clock.step(batch["input_ids"]), self.clock.total_steps) if self.clock else (0, 1)
        temperature = temperature_schedule(c.temperature_schedule, c.temperature, step, total)
        with tap_features(self.student, self.need_hidden, self.need_attention) as student_features:
            out = self.student(**batch)
        with torch.no_grad(), tap_features(self.teachers[0], self.need_hidden, self.need_attention) as teacher_features:
            teacher = (list(cached.float().unbind(1)) if cached is not None
                       else [t(**inputs).logits.float() for t in self.teachers])
        if c.span_scores:  # masked spans (padding, start after end) score MASKED in student and teacher alike
            target = combine_span_teachers(teacher, self.teacher_weights, temperature, c.kd_loss_type)
            kd = span_kd_loss(out.logits.float(), target, temperature, out.logits > MASKED / 2, c.kd_loss_type)
        else:
            target = combine_teachers(teacher, self.teacher_weights, temperature, c.kd_loss_type)
            mask = batch.get(c.logits_mask) if c.logits_mask else None
            kd = KD_LOSSES[c.kd_loss_type](out.logits.float(), target, temperature, mask)
        zero = kd.new_zeros(())
        hard = out.loss.float() if out.loss is not None else zero  # unlabelled (--aux_data_file) batches: none
        matched = self.match_loss(student_features, teacher_features, batch.get("attention_mask")) \
            if self.matches else zero
        loss = (weight_schedule(c.hard_label_weight_schedule, c.hard_label_weight, step, total) * hard
                + weight_schedule(c.kd_loss_weight_schedule, c.kd_loss_weight, step, total) * kd + matched)
        return DistillOutput(loss=loss, logits=out.logits, hard_loss=hard.detach(), kd_loss=kd.detach(),
                             match_loss=matched.detach())

    def match_loss(self, student: dict, teacher: dict, mask: torch.Tensor | None) -> torch.Tensor:
        """Σ weight · loss(proj(student feature), teacher feature) over the matches."""
        total = None
        for i, m in enumerate(self.matches):
            if m.feature == "attention":  # attention of layer k is attentions[k - 1]
                s, t = student["attention"][m.student_layer - 1], teacher["attention"][m.teacher_layer - 1]
            else:
                s, t = student["hidden"][m.student_layer], teacher["hidden"][m.teacher_layer]
            if str(i) in self.projections:
                s = self.projections[str(i)](s)
            value = m.weight * get_feature_loss(m.loss)(s.float(), t.float(), mask)
            total = value if total is None else total + value
        return total
