"""The contract between a task's model and the trainer, and loading of pretrained backbones.

A `TaskModel` wraps a transformers model (`self.backbone`, chosen from `config.model_type`, never from
the path) plus optional extra modules (CRF, pooling, projections). `forward(**batch)` takes the labels
and returns the loss, so the trainer never branches on the task. `save_pretrained(dir)` writes a
HuggingFace directory that transformers loads, with the extras in `head.safetensors` beside it.
"""
from __future__ import annotations

import os

from safetensors.torch import save_file
from torch import nn
from transformers import PretrainedConfig

from bertorch.errors import ModelError, UsageError
from bertorch.model_dir import HEAD_WEIGHTS_NAME
# Loading (checked: see loading.py) is re-exported here, where the tasks and distillation import it from.
from bertorch.models.loading import check_model_path, load_config, read_safetensors, read_weights  # noqa: F401


def set_classifier_dropout(config: PretrainedConfig, rate: float | None) -> None:
    """`--dropout_rate`: the head's dropout, under the attribute name each model family reads."""
    if rate is None:
        return
    if not 0.0 <= rate < 1.0:
        raise UsageError(f"--dropout_rate must be in [0, 1), got {rate}")
    for attr in ("classifier_dropout", "classifier_dropout_prob", "summary_last_dropout"):
        setattr(config, attr, rate)


class TaskModel(nn.Module):
    """Backbone + task extras; subclasses implement forward(**batch) -> ModelOutput(loss=..., ...)."""

    backbone: nn.Module

    def extra_modules(self) -> dict[str, nn.Module]:
        """Modules saved in head.safetensors (not part of the transformers model)."""
        return {}

    def save_pretrained(self, directory: str) -> None:
        self.backbone.save_pretrained(directory)
        extras = {f"{name}.{key}": t.detach().cpu().contiguous()
                  for name, module in self.extra_modules().items() for key, t in module.state_dict().items()}
        if extras:
            save_file(extras, os.path.join(directory, HEAD_WEIGHTS_NAME))

    def load_weights(self, directory: str, strict: bool = True) -> list[str]:
        """Load a directory written by save_pretrained (resume, --init_from_ckpt); returns missing keys."""
        missing = _load(self.backbone, read_weights(directory), strict, directory)
        head = os.path.join(directory, HEAD_WEIGHTS_NAME)
        extras = read_safetensors(head) if os.path.isfile(head) else {}
        for name, module in self.extra_modules().items():
            part = {k[len(name) + 1:]: v for k, v in extras.items() if k.startswith(name + ".")}
            missing += [f"{name}.{k}" for k in _load(module, part, strict, head)]
        return missing


def _load(module: nn.Module, state: dict, strict: bool, source: str) -> list[str]:
    own = module.state_dict()
    mismatched = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    if mismatched:
        if strict:
            raise ModelError(f"{source}: weights do not fit this model, e.g. {mismatched[0]} "
                             f"{tuple(state[mismatched[0]].shape)} vs {tuple(own[mismatched[0]].shape)}")
        state = {k: v for k, v in state.items() if k not in mismatched}
    result = module.load_state_dict(state, strict=False)
    if strict and result.missing_keys:
        raise ModelError(f"{source}: missing weights {result.missing_keys[:5]}")
    return list(result.missing_keys) + mismatched
