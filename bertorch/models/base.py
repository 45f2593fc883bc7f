"""The contract between a task's model and the trainer, and loading of pretrained backbones.

A `TaskModel` wraps a transformers model (`self.backbone`, chosen from `config.model_type`, never from
the path) plus optional extra modules (CRF, pooling, projections). `forward(**batch)` takes the labels
and returns the loss, so the trainer never branches on the task. `save_pretrained(dir)` writes a
HuggingFace directory that transformers loads, with the extras in `head.safetensors` beside it.
"""
from __future__ import annotations

import json
import os

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoConfig, PretrainedConfig

from bertorch.errors import ModelError, UsageError
from bertorch.model_dir import HEAD_WEIGHTS_NAME


def check_model_path(name_or_path: str) -> None:
    """A path-like name that does not exist is a typo, not a hub id: say so instead of a hub error."""
    if os.path.exists(os.path.expanduser(name_or_path)):
        return
    is_hub_id = not name_or_path.startswith((".", "/", "~")) and name_or_path.count("/") <= 1
    if not is_hub_id:
        raise ModelError(f"--pretrained_model_name_or_path {name_or_path!r}: no such directory")


def load_config(name_or_path: str, **overrides) -> PretrainedConfig:
    check_model_path(name_or_path)
    try:
        return AutoConfig.from_pretrained(name_or_path, **overrides)
    except (OSError, ValueError) as e:
        where = "directory" if os.path.isdir(name_or_path) else "path or model name"
        raise ModelError(f"--pretrained_model_name_or_path {name_or_path!r}: cannot load a model config from "
                         f"this {where} ({str(e).splitlines()[0]}). Give a local directory with config.json, "
                         f"or a hub name on a machine with internet access.") from None


def set_classifier_dropout(config: PretrainedConfig, rate: float | None) -> None:
    """`--dropout_rate`: the head's dropout, under the attribute name each model family reads."""
    if rate is None:
        return
    if not 0.0 <= rate < 1.0:
        raise UsageError(f"--dropout_rate must be in [0, 1), got {rate}")
    for attr in ("classifier_dropout", "classifier_dropout_prob", "summary_last_dropout"):
        setattr(config, attr, rate)


def read_weights(directory: str) -> dict[str, torch.Tensor]:
    """All tensors of a HuggingFace directory (single or sharded safetensors), or of one weights file.

    A `.bin`/`.pt` file (what the original bertorch saved) is read with weights_only=True: tensors only.
    """
    if os.path.isfile(directory):
        if directory.endswith(".safetensors"):
            return load_file(directory)
        return torch.load(directory, map_location="cpu", weights_only=True)
    single = os.path.join(directory, "model.safetensors")
    if os.path.isfile(single):
        return load_file(single)
    index = os.path.join(directory, "model.safetensors.index.json")
    if os.path.isfile(index):
        files = sorted(set(json.load(open(index, encoding="utf-8"))["weight_map"].values()))
        state: dict[str, torch.Tensor] = {}
        for name in files:
            state.update(load_file(os.path.join(directory, name)))
        return state
    raise ModelError(f"{directory}: no model.safetensors found")


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
        extras = load_file(head) if os.path.isfile(head) else {}
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
