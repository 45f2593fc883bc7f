"""Resuming: the training state, checkpoint-<step> directories and their rotation.

Model directories (checkpoints, best/, the final model) are written under a temporary name and renamed into
place by model_dir.py's atomic writes, re-exported here for the trainer, so a crash never leaves a half-written
model where a user (or `best/`) expects a whole one. The training state (optimizer, scheduler, scaler, RNG,
counters) holds only tensors and plain containers and is read back with `torch.load(weights_only=True)`, which
refuses arbitrary pickles; it also records the run's shape (RUN_SHAPE), which a resumed run must share.
"""
from __future__ import annotations

import os
import random
import re
import shutil

import numpy as np
import torch
from safetensors import SafetensorError, safe_open

from bertorch.errors import ModelError, UsageError
from bertorch.model_dir import atomic_directory, save_directory, save_into  # noqa: F401  (the trainer's writes)

TRAINING_STATE_NAME = "training_state.pt"
TRAINING_STATE_KEYS = ("optimizer", "scheduler", "trainer", "history")
# What a resumed run must share with the run that wrote the checkpoint. The per-device batch, the accumulation and
# the world size say how many examples a step takes and where in the epoch the run stands, --max_seq_length and
# --seed which batches an epoch has and in which order: another value would silently skip or repeat examples (and
# stretch the learning-rate schedule), so it is refused rather than warned about.
RUN_SHAPE = ("batch_size", "gradient_accumulation_steps", "max_seq_length", "seed")
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
    """The training state, or one ModelError naming the file when it is missing, damaged or not ours."""
    path = os.path.join(directory, TRAINING_STATE_NAME)
    if not os.path.isfile(path):
        raise UsageError(f"{directory}: not a resumable checkpoint (no {TRAINING_STATE_NAME})")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001  a damaged file raises whatever its bytes lead the unpickler to
        # Not torch's message: for anything it cannot load with weights_only it advises weights_only=False, that is
        # running whatever code the file holds.
        raise ModelError(f"{path}: not a readable training state ({type(e).__name__}): truncated or damaged, or "
                         f"holding objects other than tensors, which are never unpickled; resume from another "
                         f"checkpoint-*, or start again") from None
    return state


def run_shape(args, world_size: int) -> dict[str, int]:
    """RUN_SHAPE of this run, saved in every checkpoint's training state."""
    return {**{name: getattr(args, name) for name in RUN_SHAPE}, "world_size": world_size}


def check_run_shape(directory: str, state: dict, args, world_size: int) -> None:
    """Refuse to resume with another RUN_SHAPE than the checkpoint was written with (older checkpoints lack it)."""
    saved = state.get("run") or {}
    for name, given in run_shape(args, world_size).items():
        if name not in saved or saved[name] == given:
            continue
        if name == "world_size":
            change = f"written by {saved[name]} process(es), resumed by {given}: launch {saved[name]}"
        else:
            change = f"written with --{name} {saved[name]}, resumed with --{name} {given}: give {saved[name]}"
        raise UsageError(f"--resume_from_checkpoint {directory}: {change} to resume it, or start a new run from its "
                         f"weights with --init_from_ckpt {directory}")


def load_checkpoint(directory: str, model, args, world_size: int) -> dict:
    """Resume's reading: the training state (checked against this run's shape), then the weights into `model`.
    A damaged weights file is one ModelError naming it."""
    state = load_training_state(directory)
    missing = [k for k in TRAINING_STATE_KEYS if not isinstance(state, dict) or k not in state]
    if missing:
        raise ModelError(f"{os.path.join(directory, TRAINING_STATE_NAME)}: not a bertorch training state (no "
                         f"{missing[0]!r})")
    check_run_shape(directory, state, args, world_size)
    for name in sorted(os.listdir(directory)):
        if name.endswith(".safetensors"):
            check_safetensors(os.path.join(directory, name))
    try:
        model.load_weights(directory, strict=True)
    except (SafetensorError, OSError, EOFError) as e:
        raise ModelError(f"{directory}: its weights cannot be read ({str(e).splitlines()[0][:200]})") from None
    return state


def check_safetensors(path: str) -> None:
    """Open (header and size only, the tensors stay on disk): a truncated or overwritten file fails here."""
    try:
        with safe_open(path, framework="pt"):
            pass
    except (SafetensorError, OSError) as e:
        raise ModelError(f"{path}: damaged or truncated ({str(e).splitlines()[0][:200]}); resume from another "
                         f"checkpoint-*, or start again") from None


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
