"""The Predictor base: `Predictor.from_pretrained(dir)` picks the predictor for the task that saved the
directory, tokenises as training did and batches by length; subclasses turn backend outputs into results.

The directory's `bertorch.json` (written at training time) says which task made it, so one call serves
classifiers, taggers and sentence encoders. Each predictor runs on a backend that maps numpy inputs to
numpy outputs (backends.py: PyTorch, or onnxruntime with `backend="onnx"`), so both return identical
structures.
"""
from __future__ import annotations

import importlib
import os
from typing import Any, Sequence

import numpy as np

from bertorch.argtypes import BACKENDS
from bertorch.data.readers import iter_lines
from bertorch.errors import ModelError, UsageError
from bertorch.model_dir import TASK_FILE, is_span_model, read_multitask_manifest, read_task_info
from bertorch.models.loading import check_pretrained, load_pretrained, load_tokenizer, position_limit
from bertorch.predictors.backends import TorchBackend, onnx_predictor

# task name -> "module:Class"; modules are imported only when their kind of model is loaded.
PREDICTORS = {
    "classification": "bertorch.predictors.classifier:ClassificationPredictor",
    "ner": "bertorch.predictors.tagger:TaggerPredictor",
    "sentence_embedding": "bertorch.predictors.encoder:SentenceEncoder",
    "ner_spans": "bertorch.predictors.spans:SpanPredictor",  # NER with a span head (model_dir.is_span_model)
}


def load_class(spec: str):
    """The class of a PREDICTORS entry ("module:Class"), importing its module."""
    module, name = spec.split(":")
    return getattr(importlib.import_module(module), name)


class Predictor:
    """Base: tokenizer + backend + batching by length; subclasses turn outputs into results."""

    file_options: tuple[str, ...] = ()  # keyword options of predict() that predict_file passes on (return_probs)
    blank_result: Any = None            # what a blank input line gives in predict_file (formatted by format_result)

    def __init__(self, model_dir: str, info: dict, backend, tokenizer=None):
        self.model_dir, self.info, self.backend = model_dir, info, backend
        self.tokenizer = tokenizer or load_tokenizer(model_dir, flag=None)
        self.max_length = int(info.get("max_seq_length", 512))

    @classmethod
    def from_pretrained(cls, model_dir: str, backend: str = "torch", device: str | None = None, **kwargs):
        """The right predictor for the directory; `backend="onnx"` takes an .onnx path or export dir."""
        manifest = read_multitask_manifest(model_dir) if cls is Predictor and os.path.isdir(model_dir) else None
        if manifest:
            tasks = list(manifest["tasks"])
            raise ModelError(f"{model_dir} is a multi-task student: load one task's directory, e.g. "
                             f"{os.path.join(model_dir, tasks[0])} (tasks: {', '.join(tasks)}), or all of them with "
                             f"bertorch.predict.load_predictors({model_dir!r})")
        if not os.path.exists(model_dir):
            raise ModelError(f"{model_dir}: no such model directory" + (" or .onnx file" if backend == "onnx" else ""))
        files_dir = model_dir if os.path.isdir(model_dir) else os.path.dirname(os.path.abspath(model_dir))
        info = read_task_info(files_dir)
        if info.get("task") not in PREDICTORS:
            raise ModelError(f"{os.path.join(files_dir, TASK_FILE)}: unknown task {info.get('task')!r} (a predictor "
                             f"serves {', '.join(PREDICTORS)})")
        target = load_class(PREDICTORS["ner_spans" if is_span_model(info) else info["task"]])
        if cls is not Predictor and not issubclass(target, cls):
            raise ModelError(f"{model_dir} holds a {info['task']} model, not one for a {cls.__name__}")
        return target.load(model_dir, checked_info(files_dir, info), backend=backend, device=device, **kwargs)

    auto_class = "AutoModel"  # the transformers class the torch backend loads (by name: imported lazily)
    onnx_output = "logits"     # the graph output this predictor reads

    @classmethod
    def load(cls, model_dir: str, info: dict, backend: str = "torch", device: str | None = None, **kwargs):
        if backend == "onnx":
            return onnx_predictor(cls, model_dir, info, device, output=cls.onnx_output, **kwargs)
        if backend != "torch":
            raise ValueError(f"unknown backend {backend!r}; use one of {', '.join(BACKENDS)}")
        return cls(model_dir, info, TorchBackend(load_pretrained(cls.auto_class, model_dir), device))

    def batches(self, n: int, lengths: Sequence[int], batch_size: int):
        """Index batches sorted by length (dense batches); results are put back in input order."""
        order = sorted(range(n), key=lambda i: -lengths[i])
        for s in range(0, n, batch_size):
            yield order[s:s + batch_size]

    def pad(self, features: Sequence[dict]) -> dict[str, np.ndarray]:
        width = max(len(f["input_ids"]) for f in features)
        out = {"input_ids": np.full((len(features), width), self.tokenizer.pad_token_id, dtype=np.int64),
               "attention_mask": np.zeros((len(features), width), dtype=np.int64),
               "token_type_ids": np.zeros((len(features), width), dtype=np.int64)}
        for row, f in enumerate(features):
            n = len(f["input_ids"])
            out["input_ids"][row, :n] = f["input_ids"]
            out["attention_mask"][row, :n] = 1
            if "token_type_ids" in f:
                out["token_type_ids"][row, :n] = f["token_type_ids"]
        return out


    def predict_file(self, input_file: str, output_file: str, batch_size: int = 32, **options) -> int:
        """One result a line of `input_file`, written to exactly `output_file` in input order; a blank input line
        gives `blank_result` (an empty line, or an empty result), so output line i answers input line i. Returns
        the number of lines. `options` are those of predict() named in `file_options`."""
        unknown = sorted(set(options) - set(self.file_options))
        if unknown:
            raise UsageError(f"--{unknown[0]}: not an option of a {self.info.get('task')} model's predictions")
        lines = input_lines(input_file)
        kept = [(i, self.parse_line(input_file, number, line)) for i, (number, line) in enumerate(lines) if line]
        results = self.predict([x for _, x in kept], batch_size=batch_size, **options) if kept else []
        aligned = [self.blank_result] * len(lines)
        for (i, _), result in zip(kept, results):
            aligned[i] = result
        with open(output_file, "w", encoding="utf-8") as f:
            f.writelines(self.format_result(r, **options) + "\n" for r in aligned)
        return len(aligned)

    def parse_line(self, path: str, number: int, line: str):
        """One input of predict() from a non-blank line of a file (DataError naming path:number if it is not)."""
        return line

    def format_result(self, result, **options) -> str:
        """One output line (without its newline) for a result of predict() or `blank_result`."""
        return "" if result is None else str(result)


def input_lines(path: str) -> list[tuple[int, str]]:
    """(line number, line) for every line of a text file, a blank one as "" (iter_lines skips them)."""
    lines, last = [], 0
    for number, line in iter_lines(path):
        lines += [(n, "") for n in range(last + 1, number)] + [(number, line)]
        last = number
    with open(path, encoding="utf-8") as f:
        total = sum(1 for _ in f)
    return lines + [(n, "") for n in range(last + 1, total + 1)]


def checked_info(model_dir: str, info: dict) -> dict:
    """`info` once the directory passed the model checks (models/loading.py), with the max_seq_length to use:
    bertorch.json's (refused if the position embeddings do not fit it), else the most the model takes, up to 512."""
    saved = info.get("max_seq_length")
    config = check_pretrained(model_dir, saved, flag=None, length_flag=f"{TASK_FILE}'s max_seq_length")
    return {**info, "max_seq_length": int(saved or min(512, position_limit(config) or 512))}


def load_predictors(saved_dir: str, **kwargs) -> dict:
    """{task name: Predictor} for a multi-task student directory (kwargs go to Predictor.from_pretrained)."""
    manifest = read_multitask_manifest(saved_dir)
    if manifest is None:
        raise ModelError(f"{saved_dir}: not a multi-task student (no multitask.json)")
    return {name: Predictor.from_pretrained(os.path.join(saved_dir, t["directory"]), **kwargs)
            for name, t in manifest["tasks"].items()}
