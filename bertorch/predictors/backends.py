"""Predictor backends: numpy token ids in, numpy outputs out, so a predictor turns outputs into results the same
way whatever runs the model.

`TorchBackend` runs the transformers (or bertorch) module in PyTorch; `OnnxBackend` runs an exported graph with
onnxruntime. An export directory holds `model.onnx` (and `model_int8.onnx`) beside the tokenizer, config,
bertorch.json and the CRF transitions, so `Predictor.from_pretrained(export_dir_or_onnx_file, backend="onnx")`
rebuilds inputs exactly as the PyTorch predictor does and only the forward pass changes. onnxruntime is
imported only when an ONNX backend is built, and the error names the extra to install.
"""
from __future__ import annotations

import os
import warnings

import numpy as np
import torch

from bertorch.errors import UsageError
from bertorch.model_dir import ONNX_NAME

INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
CUDA, CPU = "CUDAExecutionProvider", "CPUExecutionProvider"


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


class OnnxError(UsageError):
    """An export or an .onnx file that cannot be used; the message says which and what to do."""


def require_onnxruntime():
    """Import onnxruntime or say which extra provides it (CPU and GPU builds are different packages)."""
    try:
        import onnxruntime
    except ImportError:
        raise OnnxError("onnxruntime is not installed: pip install 'bertorch[onnx]' (CPU) or "
                        "'bertorch[onnx-gpu]' (CUDA, onnxruntime-gpu)") from None
    return onnxruntime


def resolve_onnx_path(path: str) -> tuple[str, str]:
    """(the .onnx file, the directory with its tokenizer/config) from a file or an export directory."""
    if os.path.isdir(path):
        file = os.path.join(path, ONNX_NAME)
        if not os.path.isfile(file):
            raise OnnxError(f"{path}: no {ONNX_NAME} here; export first with "
                            f"`python export_onnx.py --model_dir {path} --output {path}/onnx`, "
                            f"then pass the export directory or the .onnx file")
        return file, path
    if not os.path.isfile(path):
        raise OnnxError(f"{path}: no such .onnx file or export directory")
    if not path.endswith(".onnx"):
        raise OnnxError(f"{path}: expected an .onnx file or an export directory")
    return path, os.path.dirname(os.path.abspath(path))


def choose_providers(providers=None, device: str | None = None) -> list[str]:
    """CUDA when onnxruntime-gpu offers it (and the caller did not ask for CPU), else CPU; asking for
    CUDA on a build without it warns and falls back rather than failing a serving job."""
    available = require_onnxruntime().get_available_providers()
    if providers is None:
        wants_cuda = device is not None and str(device).startswith("cuda")
        if device is None or wants_cuda:
            providers = [CUDA, CPU] if (wants_cuda or CUDA in available) else [CPU]
        else:
            providers = [CPU]
    chosen = [p for p in providers if p in available]
    if CUDA in providers and CUDA not in available:
        warnings.warn("CUDA was asked for but this onnxruntime has no CUDAExecutionProvider (install the "
                      "'onnx-gpu' extra, onnxruntime-gpu, instead of onnxruntime); running on CPU", stacklevel=3)
    return chosen or [CPU]


class OnnxBackend:
    """`backend(inputs) -> {"logits": ...}` (or `sentence_embedding`/`normalized_embedding`) as numpy.

    Inputs the graph does not take are dropped (a graph exported without token_type_ids still runs);
    a graph whose inputs are not the tokenizer's, or that was exported from another vocabulary, is
    refused at load time rather than producing garbage or an index error mid-batch.
    """

    def __init__(self, path_or_export_dir: str, providers=None, device: str | None = None,
                 outputs: tuple[str, ...] = (), tokenizer=None, threads: int | None = None,
                 spinning: bool | None = None):
        """`threads`: intra-op threads (default: onnxruntime's, one per physical core). `spinning=False`
        lets idle worker threads sleep instead of busy-waiting (tens of ms after each run by default):
        a wake-up per op, but no cores taken from other work in the process or on a shared machine."""
        ort = require_onnxruntime()
        self.path, self.model_dir = resolve_onnx_path(path_or_export_dir)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            options.intra_op_num_threads = int(threads)
        if spinning is not None:
            options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
        try:
            self.session = ort.InferenceSession(self.path, options, providers=choose_providers(providers, device))
        except Exception as e:  # onnxruntime raises its own exception types for unreadable graphs
            raise OnnxError(f"{self.path}: onnxruntime cannot load this file ({str(e).splitlines()[0]})") from None
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)
        self._check_io(outputs)
        if tokenizer is not None:
            self.check_tokenizer(tokenizer)

    @property
    def providers(self) -> list[str]:
        return self.session.get_providers()

    def _check_io(self, outputs: tuple[str, ...]) -> None:
        unknown = [n for n in self.input_names if n not in INPUT_NAMES]
        if unknown or "input_ids" not in self.input_names:
            raise OnnxError(f"{self.path}: graph inputs {self.input_names} do not match the tokenizer's "
                            f"{list(INPUT_NAMES)}; export this model with export_onnx.py")
        missing = [n for n in outputs if n not in self.output_names]
        if missing:
            kind = self.metadata.get("bertorch.task", "unknown")
            raise OnnxError(f"{self.path}: graph outputs {self.output_names} lack {missing} (exported "
                            f"for task {kind!r}); was it exported from another kind of model?")

    def check_tokenizer(self, tokenizer) -> None:
        """The tokenizer beside the graph must not produce ids past the graph's embedding table."""
        rows = int(self.metadata.get("bertorch.vocab_size", 0)) or self._embedding_rows()
        if rows and len(tokenizer) > rows:
            raise OnnxError(f"{self.path}: the tokenizer in {self.model_dir} has {len(tokenizer)} tokens but "
                            f"the graph's embedding table has {rows} rows: this .onnx was exported from "
                            f"another model; keep it in the directory export_onnx.py wrote")

    def _embedding_rows(self) -> int:
        """Rows of the word-embedding initializer, for graphs without bertorch metadata (0 if not found)."""
        import onnx

        model = onnx.load(self.path, load_external_data=False)
        return next((int(t.dims[0]) for t in model.graph.initializer
                     if "word_embeddings" in t.name and len(t.dims) == 2), 0)

    def __call__(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        feed = {k: np.ascontiguousarray(v, dtype=np.int64) for k, v in inputs.items() if k in self.input_names}
        return dict(zip(self.output_names, self.session.run(self.output_names, feed)))


def onnx_predictor(cls, path: str, info: dict, device: str | None = None, output: str = "logits", **kwargs):
    """`cls(export_dir, info, OnnxBackend)`: what each predictor's `load(..., backend="onnx")` returns;
    `providers`, `threads` and `spinning` in kwargs go to the OnnxBackend."""
    from bertorch.models.loading import load_tokenizer

    file, model_dir = resolve_onnx_path(path)
    tokenizer = load_tokenizer(model_dir, flag=None)
    backend = OnnxBackend(file, providers=kwargs.get("providers"), device=device, outputs=(output,),
                          tokenizer=tokenizer, threads=kwargs.get("threads"), spinning=kwargs.get("spinning"))
    baked, asked = backend.metadata.get("bertorch.pooling_mode"), kwargs.get("pooling_mode")
    if asked and baked and asked != baked:
        raise OnnxError(f"{file} was exported with pooling {baked!r}, not {asked!r}; re-export with "
                        f"--pooling_mode {asked}")
    return cls(model_dir, info, backend, tokenizer=tokenizer)
