"""The saved-model directory: which files a bertorch model directory holds besides the HuggingFace ones, the task
info that says which task made it, and how a directory is written so that no reader ever sees half of one.

Training (tasks, distillation), prediction and ONNX export all read these names from here:

    config.json, model.safetensors, tokenizer files   the transformers model (AutoModelFor*.from_pretrained)
    bertorch.json           TASK_FILE: the task that made it and what a Predictor needs to rebuild its inputs
    head.safetensors        HEAD_WEIGHTS_NAME: modules outside the transformers model (CRF, pair classifier, pooler)
    crf.safetensors         CRF_WEIGHTS_NAME: CRF transitions saved on their own (read, never written, here)
    sentence_pooling.json   POOLING_CONFIG_NAME (+ POOLING_WEIGHTS_NAME, .safetensors, for a projection)
    multitask.json          MULTITASK_FILE: a multi-task student; one model directory per task inside
    model.onnx              ONNX_NAME (and INT8_NAME) in an export directory, beside copies of the files above

Only the standard library and transformers (for directories without bertorch.json) are imported, so every
layer can depend on this module.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from typing import Callable, Iterator

from bertorch.errors import ModelError

TASK_FILE = "bertorch.json"
MULTITASK_FILE = "multitask.json"
HEAD_WEIGHTS_NAME = "head.safetensors"
CRF_WEIGHTS_NAME = "crf.safetensors"
POOLING_CONFIG_NAME = "sentence_pooling.json"
POOLING_WEIGHTS_NAME = "sentence_pooling.safetensors"
ONNX_NAME = "model.onnx"
INT8_NAME = "model_int8.onnx"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json",
                   "added_tokens.json", "sentencepiece.bpe.model", "spiece.model")
# Everything a predictor reads besides the weights: what an ONNX export copies beside its graph.
SIDECAR_FILES = ("config.json", TASK_FILE, *TOKENIZER_FILES, HEAD_WEIGHTS_NAME, CRF_WEIGHTS_NAME,
                 POOLING_CONFIG_NAME, POOLING_WEIGHTS_NAME)
# NER heads that score every span (bertorch.json "head"): no tags, entities may nest; the others tag characters
SPAN_HEADS = ("global_pointer", "efficient_global_pointer")


def is_span_model(info: dict) -> bool:
    """A NER model directory whose head scores spans (GlobalPointer) rather than tagging characters."""
    return info.get("task") == "ner" and info.get("head") in SPAN_HEADS


def read_task_info(model_dir: str) -> dict:
    """bertorch.json if present; else inferred from config.architectures (plain transformers dirs)."""
    path = os.path.join(model_dir, TASK_FILE)
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    if not os.path.isfile(os.path.join(model_dir, "config.json")):
        raise ModelError(f"{model_dir}: not a model directory (no config.json)")
    from transformers import AutoConfig

    arch = " ".join(AutoConfig.from_pretrained(model_dir).architectures or [])
    if "TokenClassification" in arch:
        return {"task": "ner"}
    if "SequenceClassification" in arch:
        return {"task": "classification"}
    return {"task": "sentence_embedding"}


def write_task_info(directory: str, info: dict) -> None:
    _write_json(os.path.join(directory, TASK_FILE), info)


def read_multitask_manifest(directory: str) -> dict | None:
    """multitask.json of a multi-task student ({"metric_for_best", "tasks": {name: {"directory", ...}}}), or None."""
    path = os.path.join(directory, MULTITASK_FILE)
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def write_multitask_manifest(directory: str, manifest: dict) -> None:
    _write_json(os.path.join(directory, MULTITASK_FILE), manifest)


def _write_json(path: str, obj: dict) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, ensure_ascii=False)


# -- writing a directory so that readers see the old one or the new one, never a mix ------------------------
@contextlib.contextmanager
def atomic_directory(final_dir: str) -> Iterator[str]:
    """Yield a temporary sibling directory; on success it takes the place of `final_dir`: one rename, or two
    when `final_dir` exists (the old directory is renamed away first, then deleted)."""
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
