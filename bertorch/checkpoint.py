"""Saving and resuming: HuggingFace model directories written atomically, and the training state.

A directory is written under a temporary name and renamed into place, so a crash never leaves a
half-written model where a user (or `best/`) expects a whole one. Weights are safetensors; the training
state (optimizer, scheduler, scaler, RNG, counters) holds only tensors and plain containers and is
read back with `torch.load(weights_only=True)`, which refuses arbitrary pickles.
"""
from __future__ import annotations

import contextlib
import os
import random
import re
import shutil
import tempfile
from typing import Callable, Iterator

import numpy as np
import torch

TRAINING_STATE_NAME = "training_state.pt"
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


@contextlib.contextmanager
def atomic_directory(final_dir: str) -> Iterator[str]:
    """Yield a temporary sibling directory; on success it replaces `final_dir` in one rename."""
    parent = os.path.dirname(os.path.abspath(final_dir))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(final_dir)}.tmp-", dir=parent)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if os.path.exists(final_dir):
        trash = tempfile.mkdtemp(prefix=f".{os.path.basename(final_dir)}.old-", dir=parent)
        os.replace(final_dir, os.path.join(trash, "old"))
        os.replace(tmp, final_dir)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(tmp, final_dir)


def save_directory(final_dir: str, write: Callable[[str], None]) -> None:
    """Run `write(tmp_dir)` and move the result to `final_dir` atomically."""
    with atomic_directory(final_dir) as tmp:
        write(tmp)


def save_into(directory: str, write: Callable[[str], None]) -> None:
    """Write model files into an existing directory that holds other things (logs, checkpoints).

    Files are written to a temporary directory first and moved in one by one with config.json last:
    a crash midway leaves a directory transformers refuses to load, never a mix it would load.
    """
    os.makedirs(directory, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".model.tmp-", dir=directory)
    try:
        write(tmp)
        names = sorted(os.listdir(tmp), key=lambda n: n == "config.json")
        for name in names:
            target = os.path.join(directory, name)
            if os.path.isdir(target):
                shutil.rmtree(target)
            os.replace(os.path.join(tmp, name), target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


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
        raise FileNotFoundError(f"{directory}: not a resumable checkpoint (no {TRAINING_STATE_NAME})")
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
            raise FileNotFoundError(f"--resume_from_checkpoint latest: no checkpoint-* in {output_dir}")
        return found[-1]
    if not os.path.isdir(path):
        raise FileNotFoundError(f"--resume_from_checkpoint: {path} is not a directory")
    return path
