"""Where the student comes from: a pretrained directory, a config for random initialisation, or the teacher's
own layers.

Every way ends in an ordinary model directory (config, weights, tokenizer), so the task that trains the
student loads it exactly as it loads any `--pretrained_model_name_or_path`. Copying N of the teacher's
layers (`--student_layers N`) is the cheap warm start: embeddings, the chosen layers, pooler and task head
are the teacher's, so the student starts near the teacher instead of from noise.
"""
from __future__ import annotations

import json
import os
import re
import shutil

from safetensors.torch import save_file
from transformers import AutoConfig, AutoModel, AutoTokenizer

from bertorch.distill.matches import uniform_layer_map
from bertorch.models.base import HEAD_WEIGHTS_NAME, ModelError, read_weights

LAYER_SELECTIONS = ("uniform", "first")
# encoder.layer.3. (BERT, RoBERTa, ELECTRA, MacBERT), transformer.layer.3. (DistilBERT); ALBERT shares one layer.
_LAYER_KEY = re.compile(r"((?:encoder|transformer)\.layer\.)(\d+)\.")


def select_layers(n_teacher: int, n_student: int, how: str = "uniform") -> list[int]:
    """0-based teacher layers the student's layers 0..n-1 are copied from.

    `uniform` follows the matches' layer map (12 -> 4 copies 2, 5, 8, 11: student layer i sits where it
    will be matched); `first` takes the bottom n layers (DistilBERT-style truncation).
    """
    if not 1 <= n_student <= n_teacher:
        raise ValueError(f"--student_layers {n_student}: must be in 1..{n_teacher}, the teacher's layer count")
    if how == "first":
        return list(range(n_student))
    if how != "uniform":
        raise ValueError(f"unknown layer selection {how!r}; choose from {LAYER_SELECTIONS}")
    return [t - 1 for t, _ in uniform_layer_map(n_teacher, n_student)[1:]]


def copy_teacher_layers(teacher_dir: str, n_layers: int, how: str, dest: str,
                        tokenizer_dir: str | None = None) -> list[int]:
    """Write a student directory holding `n_layers` of the teacher's layers; returns the teacher layers used.

    The tokenizer is the teacher's, or `tokenizer_dir`'s (multi-task: every task's student gets the one
    tokenizer of the shared encoder)."""
    config = AutoConfig.from_pretrained(teacher_dir)
    chosen = select_layers(config.num_hidden_layers, n_layers, how)
    new_index = {str(t): str(s) for s, t in enumerate(chosen)}
    state = {}
    for key, tensor in read_weights(teacher_dir).items():
        match = _LAYER_KEY.search(key)
        if match is None:
            state[key] = tensor
        elif match.group(2) in new_index:
            state[key[:match.start()] + match.group(1) + new_index[match.group(2)] + "." + key[match.end():]] = tensor
    config.num_hidden_layers = n_layers
    os.makedirs(dest, exist_ok=True)
    config.save_pretrained(dest)
    save_file({k: v.contiguous() for k, v in state.items()}, os.path.join(dest, "model.safetensors"),
              metadata={"format": "pt"})
    head = os.path.join(teacher_dir, HEAD_WEIGHTS_NAME)  # e.g. CRF transitions: a warm start too
    if os.path.isfile(head):
        shutil.copy(head, os.path.join(dest, HEAD_WEIGHTS_NAME))
    AutoTokenizer.from_pretrained(tokenizer_dir or teacher_dir).save_pretrained(dest)
    return chosen


def random_student(teacher_dir: str, config_json: str, dest: str, seed: int) -> None:
    """A randomly initialised encoder from the teacher's config overridden by `config_json`.

    The JSON only needs what differs (e.g. {"num_hidden_layers": 4, "hidden_size": 312, ...}); the vocabulary
    and tokenizer are the teacher's, so token positions line up for intermediate matches.
    """
    import torch

    try:
        with open(config_json, encoding="utf-8") as f:
            overrides = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise ModelError(f"--student_model {config_json}: not a readable config JSON ({e})") from None
    teacher = AutoConfig.from_pretrained(teacher_dir)
    values = {**teacher.to_dict(), **overrides}
    for key in ("id2label", "label2id", "architectures", "num_labels"):  # the task sets its own head
        values.pop(key, None)
    if values.get("vocab_size") != teacher.vocab_size:
        raise ModelError(f"--student_model {config_json}: vocab_size {values.get('vocab_size')} differs from the "
                         f"teacher's {teacher.vocab_size}; a random student shares the teacher's tokenizer")
    config = AutoConfig.for_model(values.pop("model_type", teacher.model_type), **values)
    torch.manual_seed(seed)
    AutoModel.from_config(config).save_pretrained(dest)
    AutoTokenizer.from_pretrained(teacher_dir).save_pretrained(dest)


def prepare_student(student_model: str | None, student_layers: int | None, how: str, teacher_dir: str,
                    workdir: str, seed: int = 0) -> tuple[str, str]:
    """(directory to load the student from, one line saying what it is) for the flags given."""
    if student_layers is not None:
        if student_model is not None:
            raise ValueError("give --student_model or --student_layers, not both")
        chosen = copy_teacher_layers(teacher_dir, student_layers, how, workdir)
        return workdir, f"the teacher's layers {[c + 1 for c in chosen]} (1-based, --student_layer_selection {how})"
    if student_model is None:
        raise ValueError("give --student_model (a model directory or a config JSON) or --student_layers N")
    if not os.path.exists(os.path.expanduser(student_model)) and student_model.startswith((".", "/", "~")):
        raise ModelError(f"--student_model {student_model}: no such file or directory")
    if os.path.isfile(student_model) and student_model.endswith(".json"):
        random_student(teacher_dir, student_model, workdir, seed)
        return workdir, f"randomly initialised from {student_model}"
    return student_model, f"pretrained {student_model}"
