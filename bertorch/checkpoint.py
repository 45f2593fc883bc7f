"""Resuming: the training state, checkpoint-<step> directories and their rotation.

Model directories (checkpoints, best/, the final model) are written under a temporary name and renamed into
place by model_dir.py's atomic writes, re-exported here for the trainer, so a crash never leaves a half-written
model where a user (or `best/`) expects a whole one. The training state (optimizer, scheduler, scaler, RNG,
counters) holds only tensors and plain containers and is read back with `torch.load(weights_only=True)`, which
refuses arbitrary pickles.
"""
from __future__ import annotations

import os
import random
import re
import shutil

import numpy as np
import torch

from bertorch.errors import UsageError
from bertorch.model_dir import atomic_directory, save_directory, save_into  # noqa: F401  (the trainer's writes)

TRAINING_STATE_NAME = "training_state.pt"
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": _to_plain(random.getstate()),
             "numpy": _to_plain(np.random.get_state())}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(_to_tuple(state["python"]))
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _to_plain(obj):
    """numpy arrays -> lists, so the state needs no unsafe unpickling."""
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (tuple, list)):
        return [_to_plain(o) for o in obj]
    return obj


def _to_tuple(obj):
    if isinstance(obj, list):
        return tuple(_to_tuple(o) for o in obj)
    return obj


def save_training_state(directory: str, state: dict) -> None:
    torch.save(state, os.path.join(directory, TRAINING_STATE_NAME))


def load_training_state(directory: str) -> dict:
    path = os.path.join(directory, TRAINING_STATE_NAME)
    if not os.path.isfile(path):
        raise UsageError(f"{directory}: not a resumable checkpoint (no {TRAINING_STATE_NAME})")
    return torch.load(path, map_location="cpu", weights_only=True)


def list_checkpoints(output_dir: str) -> list[str]:
    """checkpoint-<step> directories of `output_dir`, oldest first."""
    if not os.path.isdir(output_dir):
        return []
    found = [(int(m.group(1)), name) for name in os.listdir(output_dir) if (m := _CHECKPOINT.match(name))]
    return [os.path.join(output_dir, name) for _, name in sorted(found)]


def rotate_checkpoints(output_dir: str, keep: int) -> None:
    """Delete all but the newest `keep` checkpoints (keep <= 0 keeps everything)."""
    if keep <= 0:
        return
    for old in list_checkpoints(output_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def resolve_resume(path: str, output_dir: str) -> str:
    """`latest` means the newest checkpoint in the output directory."""
    if path == "latest":
        found = list_checkpoints(output_dir)
        if not found:
            raise UsageError(f"--resume_from_checkpoint latest: no checkpoint-* in {output_dir}")
        return found[-1]
    if not os.path.isdir(path):
        raise UsageError(f"--resume_from_checkpoint: {path} is not a directory")
    return path
