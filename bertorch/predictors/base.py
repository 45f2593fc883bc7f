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
from typing import Sequence

import numpy as np
from transformers import AutoTokenizer

from bertorch.errors import ModelError
from bertorch.model_dir import read_multitask_manifest, read_task_info
from bertorch.model_dir import is_span_model
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

    def __init__(self, model_dir: str, info: dict, backend, tokenizer=None):
        self.model_dir, self.info, self.backend = model_dir, info, backend
        self.tokenizer = tokenizer or AutoTokenizer.from_pretrained(model_dir)
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
        info = read_task_info(model_dir if os.path.isdir(model_dir) else os.path.dirname(model_dir))
        target = load_class(PREDICTORS["ner_spans" if is_span_model(info) else info["task"]])
        if cls is not Predictor and not issubclass(target, cls):
            raise TypeError(f"{model_dir} holds a {info['task']} model, not a {cls.__name__}")
        return target.load(model_dir, info, backend=backend, device=device, **kwargs)

    auto_class = "AutoModel"  # the transformers class the torch backend loads (by name: imported lazily)
    onnx_output = "logits"     # the graph output this predictor reads

    @classmethod
    def load(cls, model_dir: str, info: dict, backend: str = "torch", device: str | None = None, **kwargs):
        if backend == "onnx":
            return onnx_predictor(cls, model_dir, info, device, output=cls.onnx_output, **kwargs)
        if backend != "torch":
            raise ValueError(f"unknown backend {backend!r}; use 'torch' or 'onnx'")
        import transformers

        model = getattr(transformers, cls.auto_class).from_pretrained(model_dir)
        return cls(model_dir, info, TorchBackend(model, device))

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


def load_predictors(saved_dir: str, **kwargs) -> dict:
    """{task name: Predictor} for a multi-task student directory (kwargs go to Predictor.from_pretrained)."""
    manifest = read_multitask_manifest(saved_dir)
    if manifest is None:
        raise ModelError(f"{saved_dir}: not a multi-task student (no multitask.json)")
    return {name: Predictor.from_pretrained(os.path.join(saved_dir, t["directory"]), **kwargs)
            for name, t in manifest["tasks"].items()}
