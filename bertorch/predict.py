"""Load a saved model directory and label texts: `Predictor.from_pretrained(dir).predict(texts)`.

The directory's `bertorch.json` (written at training time) says which task made it, so one call serves
classifiers, taggers and sentence encoders. Each predictor runs on a backend that maps numpy inputs to
numpy outputs: PyTorch here, onnxruntime with `backend="onnx"`, so both return identical structures.
"""
from __future__ import annotations

import functools
import importlib
import json
import os
from typing import Sequence

import numpy as np
import torch
from loguru import logger
from transformers import AutoConfig, AutoTokenizer

from bertorch.model_dir import TASK_FILE, read_multitask_manifest, read_task_info  # noqa: F401  (TASK_FILE: kept importable)

# task name -> "module:Class"; modules are imported only when their kind of model is loaded.
PREDICTORS = {
    "classification": "bertorch.predict:ClassificationPredictor",
    "ner": "bertorch.predictors.tagger:TaggerPredictor",
    "sentence_embedding": "bertorch.predictors.encoder:SentenceEncoder",
}


def _load_class(spec: str):
    module, name = spec.split(":")
    return getattr(importlib.import_module(module), name)


def __getattr__(name: str):
    """`from bertorch.predict import SentenceEncoder, TaggerPredictor` without importing them eagerly."""
    for spec in PREDICTORS.values():
        if spec.endswith(":" + name):
            return _load_class(spec)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
            raise ValueError(f"{model_dir} is a multi-task student: load one task's directory, e.g. "
                             f"{os.path.join(model_dir, tasks[0])} (tasks: {', '.join(tasks)}), or all of them with "
                             f"bertorch.distill.multitask.load_predictors({model_dir!r})")
        info = read_task_info(model_dir if os.path.isdir(model_dir) else os.path.dirname(model_dir))
        target = _load_class(PREDICTORS[info["task"]])
        if cls is not Predictor and not issubclass(target, cls):
            raise TypeError(f"{model_dir} holds a {info['task']} model, not a {cls.__name__}")
        return target.load(model_dir, info, backend=backend, device=device, **kwargs)

    auto_class = "AutoModel"  # the transformers class the torch backend loads (by name: imported lazily)
    onnx_output = "logits"     # the graph output this predictor reads

    @classmethod
    def load(cls, model_dir: str, info: dict, backend: str = "torch", device: str | None = None, **kwargs):
        if backend == "onnx":
            from bertorch.onnx import onnx_predictor
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


class TorchBackend:
    """Runs a transformers model on numpy inputs; returns {"logits" | "last_hidden_state", ...} as numpy."""

    def __init__(self, model: torch.nn.Module, device: str | None = None):
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = model.to(self.device).eval()

    @torch.inference_mode()
    def __call__(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        tensors = {k: torch.from_numpy(v).to(self.device) for k, v in inputs.items()}
        out = self.model(**tensors)
        return {k: v.float().cpu().numpy() for k, v in out.items() if torch.is_tensor(v)}


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


class ClassificationPredictor(Predictor):
    auto_class = "AutoModelForSequenceClassification"

    @functools.cached_property
    def labels(self) -> list[str]:
        """Read once: config.json parsed on every call cost about 1 ms, a tenth of an int8 batch-1 call."""
        config = AutoConfig.from_pretrained(self.model_dir)
        return [config.id2label[i] for i in range(len(config.id2label))]

    def predict(self, inputs: Sequence[str | tuple[str, str]], batch_size: int = 32, return_probs: bool = False):
        """Labels for texts or (text_a, text_b) pairs; with return_probs, {"label", "probs"} dicts."""
        labels = self.labels
        pairs = [x if isinstance(x, (tuple, list)) else (x, None) for x in inputs]
        if not pairs:
            return []
        enc = self.tokenizer([a for a, _ in pairs], [b for _, b in pairs] if pairs[0][1] is not None else None,
                             truncation=True, max_length=self.max_length)
        features = [{k: enc[k][i] for k in ("input_ids", "token_type_ids") if k in enc} for i in range(len(pairs))]
        cut = sum(len(f["input_ids"]) == self.max_length for f in features)
        if cut and not getattr(self, "_truncation_said", False):  # once: a serving loop would log it every call
            self._truncation_said = True
            logger.info(f"{cut} of {len(pairs)} inputs reached max length {self.max_length} and may be truncated "
                        f"(said once per predictor)")
        probs = np.zeros((len(pairs), len(labels)), dtype=np.float32)
        for idx in self.batches(len(features), [len(f["input_ids"]) for f in features], batch_size):
            probs[idx] = softmax(self.backend(self.pad([features[i] for i in idx]))["logits"])
        predicted = [labels[i] for i in probs.argmax(-1)]
        if not return_probs:
            return predicted
        return [{"label": lab, "probs": dict(zip(labels, map(float, p)))} for lab, p in zip(predicted, probs)]

    def predict_file(self, input_file: str, output_file: str, batch_size: int = 32, return_probs: bool = False):
        """One input a line (`text` or `text_a\\ttext_b`; a trailing label column is ignored) -> one
        `label` (or `label\\t{probs json}`) a line."""
        from bertorch.data.readers import DataError, iter_lines

        pair = bool(self.info.get("is_text_pair"))
        inputs = []
        for number, line in iter_lines(input_file):
            fields = line.split("\t")
            if len(fields) < (2 if pair else 1):
                raise DataError(input_file, number, "expected text_a\\ttext_b for this text-pair model", line)
            inputs.append((fields[0], fields[1]) if pair else fields[0])
        results = self.predict(inputs, batch_size=batch_size, return_probs=return_probs)
        with open(output_file, "w", encoding="utf-8") as f:
            for r in results:
                f.write(f"{r['label']}\t{json.dumps(r['probs'], ensure_ascii=False)}\n" if return_probs else f"{r}\n")
        return len(results)


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description="Label a file with a saved bertorch model.",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--model_dir", required=True, help="directory written by a run_*.py script")
    parser.add_argument("--input_file", required=True, help="one input a line")
    parser.add_argument("--output_file", required=True, help="where the predictions go")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--return_probs", action="store_true", help="also write class probabilities")
    parser.add_argument("--backend", choices=("torch", "onnx"), default="torch")
    args = parser.parse_args(argv)
    predictor = Predictor.from_pretrained(args.model_dir, backend=args.backend)
    n = predictor.predict_file(args.input_file, args.output_file, args.batch_size, return_probs=args.return_probs)
    logger.info(f"wrote {n} predictions to {args.output_file}")
    return n
