"""The models a server holds and what each endpoint does with them: check inputs, price them in padded
tokens, run a batch through the Predictor, and shape each request's answer.

A directory with multitask.json (a multi-task student) serves one model per task, under the task's name;
any other directory serves one model, named "default". Batches call the Predictor's own `predict` /
`encode`, so answers are the Predictor's (tokenisation, windows, CRF and labels included).
"""
from __future__ import annotations

import copy
import os
import threading
from dataclasses import dataclass

import numpy as np
from loguru import logger

from bertorch.model_dir import INT8_NAME, read_multitask_manifest
from bertorch.predict import Predictor
from bertorch.tagging import make_windows

ENDPOINTS = {"classification": "predict", "ner": "ner", "sentence_embedding": "embed"}
ONE_PASS = 1 << 30  # a Predictor batch_size that keeps a whole server batch in one forward pass
WARM_UP = "你好"


@dataclass
class ServeConfig:
    model_dir: str
    backend: str = "torch"          # torch | onnx
    onnx_dir: str | None = None     # export dir or .onnx file (default: model_dir)
    int8: bool = False              # model_int8.onnx of the export dir
    device: str | None = None
    threads: int | None = None
    max_batch_size: int = 32
    max_batch_tokens: int = 16384
    max_wait_ms: float = 5.0
    max_concurrent: int = 512


class InputError(ValueError):
    """An input the model cannot take; `field` is its place in the body, e.g. ("inputs", 3)."""

    def __init__(self, field: tuple, message: str, value=None):
        super().__init__(message)
        self.field, self.value = field, value


def model_sources(config: ServeConfig) -> dict[str, str]:
    """{name: what Predictor.from_pretrained loads}: the model directory, or its ONNX export."""
    manifest = read_multitask_manifest(config.model_dir) if os.path.isdir(config.model_dir) else None
    dirs = {name: t["directory"] for name, t in manifest["tasks"].items()} if manifest else {"default": ""}
    if config.backend != "onnx":
        return {name: os.path.join(config.model_dir, d) if d else config.model_dir for name, d in dirs.items()}
    root = config.onnx_dir or config.model_dir
    out = {}
    for name, d in dirs.items():  # a multi-task student's exports sit under the same task directories
        path = os.path.join(root, d) if d else root
        out[name] = os.path.join(path, INT8_NAME) if config.int8 and os.path.isdir(path) else path
    return out


class Served:
    """One loaded Predictor behind one endpoint."""
    task = ""

    def __init__(self, name: str, predictor):
        self.name, self.predictor = name, predictor
        self.max_length = predictor.max_length
        self.endpoint = ENDPOINTS[self.task]
        # Inputs are priced on the event loop while the worker thread tokenises a batch: a fast tokenizer
        # keeps its truncation setting in shared state, so one object used by both threads lets a call
        # without truncation switch it off under the Predictor's feet (over-long inputs reach the model).
        self.tokenizer = copy.deepcopy(predictor.tokenizer)

    def lengths(self, inputs: list) -> list[int]:
        """Tokens per input before any cut."""
        return [len(ids) for ids in self.tokenizer(inputs, verbose=False)["input_ids"]]

    def check(self, inputs: list, truncate: bool) -> tuple[tuple, list[int]]:
        """(batch key, padded-token cost per input); InputError for an over-long input with truncate=False."""
        lengths = self.lengths(inputs)
        if not truncate:
            for i, n in enumerate(lengths):
                if n > self.max_length:
                    raise InputError(("inputs", i), f"{n} tokens, over the model's max length {self.max_length} "
                                                    f"(send truncate=true to cut it)", inputs[i])
        return (self.name,), [min(n, self.max_length) for n in lengths]

    def validate(self, body) -> None:
        """InputError for request options this model cannot honour."""

    def describe(self) -> dict:
        return {"name": self.name, "task": self.task, "endpoint": "/" + self.endpoint, "max_length": self.max_length}


class ServedClassifier(Served):
    task = "classification"

    def __init__(self, name, predictor):
        super().__init__(name, predictor)
        self.labels = list(predictor.labels)
        self.pair = predictor.info.get("is_text_pair")  # None for a plain transformers directory: either kind

    def lengths(self, inputs):
        first = [x[0] if isinstance(x, tuple) else x for x in inputs]
        second = [x[1] for x in inputs] if isinstance(inputs[0], tuple) else None
        return [len(ids) for ids in self.tokenizer(first, second, verbose=False)["input_ids"]]

    def check(self, inputs, truncate):
        pair = isinstance(inputs[0], tuple) if self.pair is None else bool(self.pair)
        for i, x in enumerate(inputs):
            if isinstance(x, tuple) != pair:
                want = '["text_a", "text_b"] pairs' if pair else "single texts"
                raise InputError(("inputs", i), f"this model takes {want}" + ("" if self.pair is not None else
                                 " (as the first input of this request)"), x)
        key, costs = super().check(inputs, truncate)
        return key + (pair,), costs  # the Predictor tokenises a batch as all pairs or all single texts

    def run(self, inputs):
        return self.predictor.predict(inputs, batch_size=len(inputs), return_probs=True)

    def answer(self, results, return_probs=False, top_k=None):
        if not return_probs and not top_k:
            return [r["label"] for r in results]
        out = []
        for r in results:
            p = {"label": r["label"]}
            if return_probs:
                p["probs"] = r["probs"]
            if top_k:
                best = sorted(r["probs"].items(), key=lambda kv: -kv[1])[:top_k]
                p["top_k"] = [{"label": k, "score": v} for k, v in best]
            out.append(p)
        return out

    def describe(self):
        return {**super().describe(), "labels": self.labels, "is_text_pair": self.pair}


class ServedTagger(Served):
    task = "ner"

    def lengths(self, inputs):
        enc = self.tokenizer([list(x) for x in inputs], is_split_into_words=True, verbose=False)
        return [len(ids) for ids in enc["input_ids"]]

    def check(self, inputs, truncate):
        key, _ = super().check(inputs, truncate)
        costs = []
        for x, n in zip(inputs, self.lengths(inputs)):  # a long text is windowed: each window costs a full row
            if n <= self.max_length:
                costs.append(n)
            else:
                windows = make_windows(len(x), self.max_length - 2, min(self.predictor.stride, self.max_length - 3))
                costs.append(len(windows) * self.max_length)
        return key, costs

    def run(self, inputs):
        return self.predictor.predict(inputs, batch_size=ONE_PASS)

    def describe(self):
        p = self.predictor
        return {**super().describe(), "labels": p.labels, "tag_scheme": p.scheme, "use_crf": p.crf is not None,
                "head": p.info.get("head")}  # span heads: labels are entity types, no tag scheme


class ServedEncoder(Served):
    task = "sentence_embedding"

    def __init__(self, name, predictor):
        super().__init__(name, predictor)
        self.size = int(predictor.encode([WARM_UP], normalize=False).shape[1])

    def validate(self, body):
        if body.dimensions and body.dimensions > self.size:
            raise InputError(("dimensions",), f"{body.dimensions} is over the embedding size {self.size}",
                             body.dimensions)

    def run(self, inputs):
        return list(self.predictor.encode(inputs, batch_size=len(inputs), normalize=False))

    def answer(self, rows, normalize=True, dimensions=None):
        """As SentenceEncoder.encode(normalize=...); `dimensions` keeps a prefix, renormalised."""
        out = np.stack(rows)[:, :dimensions]
        if normalize:
            out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        return out.tolist()

    def describe(self):
        return {**super().describe(), "embedding_size": self.size}


KINDS = {c.task: c for c in (ServedClassifier, ServedTagger, ServedEncoder)}


def load_models(config: ServeConfig) -> dict[str, Served]:
    """Every model of the directory, loaded and warmed up (one input each: lazy init happens now)."""
    if config.threads:
        import torch

        torch.set_num_threads(config.threads)
    extra = {"threads": config.threads, "spinning": False} if config.backend == "onnx" else {}
    # spinning=False: idle onnxruntime threads would otherwise busy-wait on the cores the event loop needs
    models = {}
    for name, source in model_sources(config).items():
        predictor = Predictor.from_pretrained(source, backend=config.backend, device=config.device, **extra)
        served = KINDS[predictor.info["task"]](name, predictor)
        served.run([("你", "好")] if getattr(served, "pair", False) else [WARM_UP])
        models[name] = served
        logger.info(f"serving {name}: {served.task} from {source} ({config.backend})")
    return models


class Service:
    """Loading state, the models, and the batcher that runs them; `state` is what /health reports."""

    def __init__(self, config: ServeConfig, loader=load_models, on_failed=None):
        self.config, self.loader, self.on_failed = config, loader, on_failed
        self.state, self.detail = "loading", None
        self.models: dict[str, Served] = {}
        self.batcher = None
        self.loaded = threading.Event()

    def start(self, make_batcher) -> None:
        """Load in a thread (the server answers /health with 503 "loading" meanwhile), then start batching."""
        def load():
            try:
                self.models = self.loader(self.config)
                self.batcher = make_batcher(lambda key, inputs: self.models[key[0]].run(inputs))
                if self.state == "loading":
                    self.state = "ok"
            except Exception as e:
                logger.exception(f"cannot load {self.config.model_dir}")
                self.state, self.detail = "failed", f"{type(e).__name__}: {e}"
                if self.on_failed:
                    self.on_failed(e)
            finally:
                self.loaded.set()
        threading.Thread(target=load, name="bertorch-serve-load", daemon=True).start()

    def drain(self) -> None:
        """Refuse new requests (503) and run what is queued without waiting for more."""
        self.state = "draining" if self.state in ("ok", "loading") else self.state
        if self.batcher is not None:
            self.batcher.drain()

    async def close(self) -> None:
        self.drain()
        if self.batcher is not None:
            await self.batcher.close()

    def model_for(self, task: str, name: str | None) -> Served:
        """The model behind an endpoint: InputError for a wrong or missing "task" name."""
        if name is not None:
            if name not in self.models:
                raise InputError(("task",), f"no model named {name!r}; this server has {sorted(self.models)}", name)
            if self.models[name].task != task:
                raise InputError(("task",), f"{name!r} is a {self.models[name].task} model: use "
                                            f"{self.models[name].describe()['endpoint']}", name)
            return self.models[name]
        fits = [m for m in self.models.values() if m.task == task]
        if len(fits) > 1:
            raise InputError(("task",), f"this server has several {task} models: name one of "
                                        f"{[m.name for m in fits]}")
        if not fits:
            raise LookupError(f"this server has no {task} model; it serves "
                              + ", ".join(f"{m.describe()['endpoint']} ({m.task})" for m in self.models.values()))
        return fits[0]

    async def submit(self, model: Served, inputs: list, truncate: bool) -> list:
        if not inputs:
            return []
        key, costs = model.check(inputs, truncate)
        return await self.batcher.submit(key, inputs, costs)
