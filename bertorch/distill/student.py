"""Where the student comes from: a pretrained directory, a config for random initialisation, or the teacher's
own layers (optionally narrowed to a smaller hidden size).

Every way ends in an ordinary model directory (config, weights, tokenizer), so the task that trains the
student loads it exactly as it loads any `--pretrained_model_name_or_path`. Copying N of the teacher's
layers (`--student_layers N`) is the cheap warm start: embeddings, the chosen layers, pooler and task head
are the teacher's, so the student starts near the teacher instead of from noise. `--student_hidden_size H`
also narrows the copy (`narrow_width`): it keeps the H residual dimensions, the H / head_dim attention heads
and the FFN neurons with the largest weights -- a pruned teacher rather than a random 4x312 student, which
learnt nothing in 300 steps on ChnSentiCorp (TinyBERT starts with general distillation on a corpus).
"""
from __future__ import annotations

import os
import re
import shutil

import torch
from safetensors.torch import save_file
from transformers import AutoConfig, AutoModel, AutoTokenizer

from bertorch.distill.matches import uniform_layer_map
from bertorch.errors import ModelError, UsageError
from bertorch.jsonfile import read_json_file
from bertorch.model_dir import HEAD_WEIGHTS_NAME
from bertorch.models.base import read_weights

LAYER_SELECTIONS = ("uniform", "first")
# encoder.layer.3. (BERT, RoBERTa, ELECTRA, MacBERT), transformer.layer.3. (DistilBERT); ALBERT shares one layer.
_LAYER_KEY = re.compile(r"((?:encoder|transformer)\.layer\.)(\d+)\.")


def select_layers(n_teacher: int, n_student: int, how: str = "uniform") -> list[int]:
    """0-based teacher layers the student's layers 0..n-1 are copied from.

    `uniform` follows the matches' layer map (12 -> 4 copies 2, 5, 8, 11: student layer i sits where it
    will be matched); `first` takes the bottom n layers (DistilBERT-style truncation).
    """
    if not 1 <= n_student <= n_teacher:
        raise UsageError(f"--student_layers {n_student}: must be in 1..{n_teacher}, the teacher's layer count")
    if how == "first":
        return list(range(n_student))
    if how != "uniform":
        raise UsageError(f"unknown layer selection {how!r}; choose from {LAYER_SELECTIONS}")
    return [t - 1 for t, _ in uniform_layer_map(n_teacher, n_student)[1:]]


def copy_teacher_layers(teacher_dir: str, n_layers: int | None, how: str, dest: str,
                        tokenizer_dir: str | None = None, hidden_size: int | None = None) -> list[int]:
    """Write a student directory holding `n_layers` (None: all) of the teacher's layers, narrowed to
    `hidden_size` if given; returns the teacher layers used.

    The tokenizer is the teacher's, or `tokenizer_dir`'s (multi-task: every task's student gets the one
    tokenizer of the shared encoder)."""
    config = AutoConfig.from_pretrained(teacher_dir)
    n_layers = config.num_hidden_layers if n_layers is None else n_layers
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
    if hidden_size is not None and hidden_size != config.hidden_size:
        state = narrow_width(state, config, hidden_size)
    os.makedirs(dest, exist_ok=True)
    config.save_pretrained(dest)
    save_file({k: v.contiguous() for k, v in state.items()}, os.path.join(dest, "model.safetensors"),
              metadata={"format": "pt"})
    head = os.path.join(teacher_dir, HEAD_WEIGHTS_NAME)  # e.g. CRF transitions: a warm start too
    if os.path.isfile(head):
        shutil.copy(head, os.path.join(dest, HEAD_WEIGHTS_NAME))
    AutoTokenizer.from_pretrained(tokenizer_dir or teacher_dir).save_pretrained(dest)
    return chosen


# Key suffix -> what each axis of the tensor indexes: h = residual (hidden) dimension, a = attention
# dimension (heads x head_dim), f = FFN neuron, None = kept whole. BERT layout (BERT, RoBERTa, ELECTRA,
# MacBERT, ...); first match wins, so "attention.output.dense" comes before the FFN's "output.dense".
_WIDTH_AXES = (
    ("embeddings.word_embeddings.weight", (None, "h")), ("embeddings.position_embeddings.weight", (None, "h")),
    ("embeddings.token_type_embeddings.weight", (None, "h")), ("embeddings.LayerNorm.", ("h",)),
    ("attention.self.query.weight", ("a", "h")), ("attention.self.key.weight", ("a", "h")),
    ("attention.self.value.weight", ("a", "h")), ("attention.self.query.bias", ("a",)),
    ("attention.self.key.bias", ("a",)), ("attention.self.value.bias", ("a",)),
    ("attention.output.dense.weight", ("h", "a")), ("attention.output.dense.bias", ("h",)),
    ("attention.output.LayerNorm.", ("h",)), ("intermediate.dense.weight", ("f", "h")),
    ("intermediate.dense.bias", ("f",)), ("output.dense.weight", ("h", "f")), ("output.dense.bias", ("h",)),
    ("output.LayerNorm.", ("h",)), ("pooler.dense.weight", ("h", "h")), ("pooler.dense.bias", ("h",)),
    ("classifier.weight", (None, "h")), ("classifier.bias", (None,)),
)


def _axes(key: str) -> tuple:
    for suffix, axes in _WIDTH_AXES:
        if key.endswith(suffix) or (suffix.endswith(".") and suffix in key):
            return axes
    raise ModelError(f"--student_hidden_size: cannot narrow {key!r} (only BERT-layout encoders and their "
                     f"classification / token-classification heads are supported)")


def narrow_width(state: dict[str, torch.Tensor], config, hidden_size: int) -> dict[str, torch.Tensor]:
    """The teacher's weights cut down to `hidden_size`, keeping the largest parts (updates `config`).

    Residual dimensions are shared by every layer, so one set is kept: the largest summed |LayerNorm
    weight|. Per layer, heads are ranked by the norm of their value and output weights, FFN neurons by
    the norms of their input row and output column. Head size stays the teacher's."""
    head_dim = config.hidden_size // config.num_attention_heads
    if not 0 < hidden_size < config.hidden_size or hidden_size % head_dim:
        raise ModelError(f"--student_hidden_size {hidden_size}: must be below the teacher's {config.hidden_size} "
                         f"and a multiple of its head size {head_dim} (whole heads are kept)")
    heads = hidden_size // head_dim
    ffn = max(1, round(config.intermediate_size * hidden_size / config.hidden_size))
    gamma = sum(t.abs() for k, t in state.items() if "LayerNorm.weight" in k)
    hidden = gamma.topk(hidden_size).indices.sort().values
    keep: dict[str, torch.Tensor] = {}  # layer prefix -> kept attention dims / FFN neurons
    for key, tensor in state.items():
        if key.endswith("attention.output.dense.weight"):
            prefix = key[: -len("attention.output.dense.weight")]
            value = state[prefix + "attention.self.value.weight"]
            score = (tensor.view(-1, config.num_attention_heads, head_dim).pow(2).sum((0, 2))
                     * value.view(config.num_attention_heads, head_dim, -1).pow(2).sum((1, 2)))
            chosen = score.topk(heads).indices.sort().values
            keep[prefix + "a"] = (chosen[:, None] * head_dim + torch.arange(head_dim)).flatten()
        elif key.endswith("intermediate.dense.weight"):
            prefix = key[: -len("intermediate.dense.weight")]
            score = tensor.pow(2).sum(1) * state[prefix + "output.dense.weight"].pow(2).sum(0)
            keep[prefix + "f"] = score.topk(ffn).indices.sort().values
    narrowed = {}
    for key, tensor in state.items():
        layer = _LAYER_KEY.search(key)
        prefix = key[: layer.end()] if layer else ""
        for dim, axis in enumerate(_axes(key)):
            if axis is not None:
                tensor = tensor.index_select(dim, hidden if axis == "h" else keep[prefix + axis])
        narrowed[key] = tensor.contiguous()
    config.hidden_size, config.num_attention_heads, config.intermediate_size = hidden_size, heads, ffn
    return narrowed


def random_student(teacher_dir: str, config_json: str, dest: str, seed: int) -> None:
    """A randomly initialised encoder from the teacher's config overridden by `config_json`.

    The JSON only needs what differs (e.g. {"num_hidden_layers": 4, "hidden_size": 312, ...}); the vocabulary
    and tokenizer are the teacher's, so token positions line up for intermediate matches.
    """
    import torch

    overrides = read_json_file(config_json, "--student_model", ModelError)
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
                    workdir: str, seed: int = 0, hidden_size: int | None = None) -> tuple[str, str]:
    """(directory to load the student from, one line saying what it is) for the flags given."""
    if student_layers is not None or hidden_size is not None:
        if student_model is not None:
            raise UsageError("give --student_model or --student_layers/--student_hidden_size, not both")
        chosen = copy_teacher_layers(teacher_dir, student_layers, how, workdir, hidden_size=hidden_size)
        narrowed = f", narrowed to hidden size {hidden_size}" if hidden_size else ""
        return workdir, (f"the teacher's layers {[c + 1 for c in chosen]} (1-based, --student_layer_selection "
                         f"{how}){narrowed}")
    if student_model is None:
        raise UsageError("give --student_model (a model directory or a config JSON) or --student_layers N")
    if not os.path.exists(os.path.expanduser(student_model)) and student_model.startswith((".", "/", "~")):
        raise ModelError(f"--student_model {student_model}: no such file or directory")
    if os.path.isfile(student_model) and student_model.endswith(".json"):
        random_student(teacher_dir, student_model, workdir, seed)
        return workdir, f"randomly initialised from {student_model}"
    return student_model, f"pretrained {student_model}"
