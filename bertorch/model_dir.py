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

Only the standard library, atomic_dirs.py (the directory swaps, standard library only) and transformers (for
directories without bertorch.json) are imported, so every layer can depend on this module.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from typing import Callable, Iterator

from bertorch import atomic_dirs
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
        try:
            with open(path, encoding="utf-8-sig") as f:
                info = json.load(f)
        except (ValueError, UnicodeDecodeError) as e:  # JSONDecodeError is a ValueError
            raise ModelError(f"{path}: not a readable {TASK_FILE} ({e}); re-save the model, or remove the file to "
                             f"load the directory as a plain transformers model") from None
        if not isinstance(info, dict) or "task" not in info:
            raise ModelError(f"{path}: {TASK_FILE} must be an object with a \"task\" key")
        return info
    if not os.path.isfile(os.path.join(model_dir, "config.json")):
        raise ModelError(f"{model_dir}: not a model directory (no config.json)")
    from transformers import AutoConfig

    arch = " ".join(AutoConfig.from_pretrained(model_dir).architectures or [])
    if "TokenClassification" in arch:
        return {"task": "ner"}
    if "SequenceClassification" in arch:
        return {"task": "classification"}
    return {"task": "sentence_embedding"}


def saved_label_order(model_dir: str) -> list[str] | None:
    """A saved classifier's or tagger's labels in id order (config.json's id2label); None for a path that is no
    directory, or a config without labels of its own (transformers' default LABEL_0, LABEL_1, ...)."""
    path = os.path.join(model_dir, "config.json")
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        id2label = json.load(f).get("id2label") or {}
    labels = [id2label.get(str(i)) for i in range(len(id2label))]
    if None in labels or labels == [f"LABEL_{i}" for i in range(len(labels))]:
        return None
    return labels


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
# Written files and the directories beside them are swapped in whole (bertorch/atomic_dirs.py: RENAME_EXCHANGE, else
# two renames); a crash leaves temporary directories that remove_leftovers deletes at the next start.
# Names a model directory's own files match: what an older model leaves behind when a newer one is written into its
# directory, and is not carried over (new weights beside an old head or ONNX export would be a mix).
_MODEL_FILE = re.compile(r"^(config\.json|generation_config\.json|.*\.safetensors(\.index\.json)?|pytorch_model.*\.bin|"
                         r"model(_int8)?\.onnx)$")
_MODEL_FILES = {TASK_FILE, MULTITASK_FILE, *SIDECAR_FILES}


@contextlib.contextmanager
def atomic_directory(final_dir: str) -> Iterator[str]:
    """Yield a temporary sibling directory; on success it takes the place of `final_dir` in one step."""
    os.makedirs(os.path.dirname(os.path.abspath(final_dir)), exist_ok=True)
    tmp = atomic_dirs.sibling(final_dir)
    try:
        yield tmp
        atomic_dirs.publish_modes(tmp, like=final_dir)
        atomic_dirs.replace_directory(tmp, final_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def save_directory(final_dir: str, write: Callable[[str], None]) -> None:
    """Run `write(tmp_dir)` and move the result to `final_dir` atomically."""
    with atomic_directory(final_dir) as tmp:
        write(tmp)


def save_into(directory: str, write: Callable[[str], None]) -> None:
    """Write model files into a directory that holds other things too (logs, checkpoints, best/).

    A new copy of the whole directory is built beside it -- the new model's files, every other entry hard-linked (no
    data copied), the old model's files left out -- and exchanged with it in one step, so a reader finds the complete
    old or the complete new model. Where that cannot be done (no RENAME_EXCHANGE, no hard links, `directory` is a
    mount point or holds the working directory, its parent is read-only), the files are moved in one by one, the old
    config.json deleted first and the new one moved in last: a crash midway leaves a directory transformers refuses
    to load, never a mix it would load.
    """
    os.makedirs(directory, exist_ok=True)
    target = os.path.realpath(directory)
    tmp = _whole_copy_beside(target)
    swap = tmp is not None
    tmp = tmp or tempfile.mkdtemp(prefix=".model.tmp-", dir=target)
    try:
        write(tmp)
        written = set(os.listdir(tmp))
        atomic_dirs.publish_modes(tmp, like=target)
        if swap and _link_the_rest(target, tmp, written) and atomic_dirs.exchange(tmp, target):
            return  # `tmp` now names the old directory, deleted below
        _move_in(tmp, target, written)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _whole_copy_beside(target: str) -> str | None:
    """An empty sibling of `target` to build its new copy in, or None where swapping `target` cannot work."""
    cwd = os.path.realpath(os.getcwd())
    if os.path.ismount(target) or cwd == target or cwd.startswith(target + os.sep):
        return None  # a mount point cannot be renamed; a working directory would be left behind in the old copy
    try:
        return atomic_dirs.sibling(target)
    except OSError:
        return None


def _link_the_rest(target: str, tmp: str, written: set[str]) -> bool:
    """Hard-link into `tmp` what `target` holds besides its model (and leftovers); False where links fail."""
    manifest = read_multitask_manifest(target) or {}
    parts = {os.path.normpath(t["directory"]) for t in manifest.get("tasks", {}).values() if "directory" in t}
    try:
        for name in os.listdir(target):
            if name in written or name in _MODEL_FILES or name in parts or _MODEL_FILE.match(name) \
                    or atomic_dirs.LEFTOVER.match(name):
                continue
            atomic_dirs.link_tree(os.path.join(target, name), os.path.join(tmp, name))
    except OSError:
        return False
    return True


def _move_in(tmp: str, target: str, names: set[str]) -> None:
    """The fallback: file by file, the old config.json out first and the new one in last."""
    if "config.json" in names and os.path.exists(os.path.join(target, "config.json")):
        os.remove(os.path.join(target, "config.json"))
    for name in sorted(names, key=lambda n: n == "config.json"):
        destination = os.path.join(target, name)
        if os.path.isdir(destination) and not os.path.islink(destination):
            shutil.rmtree(destination)
        os.replace(os.path.join(tmp, name), destination)


def remove_leftovers(directory: str) -> list[str]:
    """What a crash while saving left in (or beside) `directory`, deleted; run at the start of every run."""
    return atomic_dirs.remove_leftovers(directory)
