"""Export a saved model directory to ONNX: the exact module the PyTorch Predictor runs, nothing more.

The graph takes `input_ids`, `attention_mask`, `token_type_ids` with dynamic batch and sequence axes.
Classifiers output `logits (B, K)`; taggers output per-sub-token `logits (B, T, K)` (the CRF stays out:
its transitions are copied beside the graph and Viterbi runs in numpy, as with the torch backend), span
NER heads (GlobalPointer) `logits (B, K, T, T)`, a score per type and token pair, thresholded at 0 outside;
sentence encoders output the pooled + projected `sentence_embedding` and its L2-normalised
`normalized_embedding`, so serving code that reads the graph directly gets `SentenceEncoder.encode`;
with `output_dim` both are the first `output_dim` values (a Matryoshka prefix, normalised after the cut).

We use torch's TorchScript exporter (`dynamo=False`): it traces BERT-family models exactly and needs
nothing beyond torch and onnx, whereas the dynamo exporter would add onnxscript as a dependency. The trace
uses the eager attention; `optimize=True` also fuses the graph for onnxruntime (`optimize.py` says why
and when that pays).
"""
from __future__ import annotations

import os
import shutil
import warnings

import torch
from loguru import logger
from torch import nn

from bertorch.model_dir import ONNX_NAME, SIDECAR_FILES, is_span_model, read_task_info, write_task_info
from bertorch.onnx.optimize import eager_attention, optimize_graph
from bertorch.predictors.backends import INPUT_NAMES, OnnxError

MIN_OPSET = 10  # the traced eager attention slices with dynamic bounds: Slice takes them as inputs from opset 10
OUTPUTS = {"classification": ("logits",), "ner": ("logits",),
           "sentence_embedding": ("sentence_embedding", "normalized_embedding")}
EXPORT_INFO = "onnx_export.json"
SAMPLE = ["今天天气很好，我们去公园散步吧", "好"]  # a padded row, so the attention-mask path is traced


def max_opset() -> int:
    from torch.onnx import _constants

    return int(getattr(_constants, "ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET", 20))


def check_opset(opset: int) -> None:
    if opset < MIN_OPSET:
        raise OnnxError(f"--opset {opset} is too old for this model: BERT-family attention needs dynamic "
                        f"slices (opset {MIN_OPSET} or newer); use --opset 17")
    if opset > max_opset():
        raise OnnxError(f"--opset {opset} is newer than torch's TorchScript exporter supports "
                        f"({max_opset()}); use --opset 17")


def load_source(model_dir: str, pooling_mode: str | None = None):
    """(task info, the PyTorch predictor) of a saved model dir; a clear error for anything else."""
    from bertorch.predictors.base import Predictor

    if not os.path.isdir(model_dir):
        raise OnnxError(f"--model_dir {model_dir}: no such directory")
    try:
        info = read_task_info(model_dir)
        kwargs = {"pooling_mode": pooling_mode} if info["task"] == "sentence_embedding" else {}
        predictor = Predictor.from_pretrained(model_dir, backend="torch", device="cpu", **kwargs)
    except (OSError, ValueError, KeyError) as e:
        raise OnnxError(f"--model_dir {model_dir} is not a bertorch/transformers model directory "
                        f"({str(e).splitlines()[0]})") from None
    if info["task"] not in OUTPUTS:
        raise OnnxError(f"{model_dir}: task {info['task']!r} cannot be exported (known: {', '.join(OUTPUTS)})")
    if info["task"] == "sentence_embedding":
        info = {**info, "pooling_mode": predictor.backend.model.pooler.mode}
    return info, predictor


class GraphModule(nn.Module):
    """Positional (input_ids, attention_mask, token_type_ids) -> the task's outputs as a tuple."""

    def __init__(self, model: nn.Module, task: str, output_dim: int | None = None):
        super().__init__()
        self.model, self.task, self.output_dim = model, task, output_dim

    def forward(self, input_ids, attention_mask, token_type_ids):
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
        if self.task == "sentence_embedding":
            emb = out["sentence_embedding"][:, :self.output_dim]
            return emb, nn.functional.normalize(emb, p=2, dim=-1)
        return out["logits"]


def embedding_size(predictor) -> int:
    """The width of a sentence encoder's vectors (the projection's, else the backbone's hidden size)."""
    embedder = predictor.backend.model
    return embedder.pooler.embedding_size or embedder.backbone.config.hidden_size


def check_output_dim(info: dict, predictor, output_dim: int | None) -> dict:
    """The task info written beside a graph cut to `output_dim`: refused unless it is a prefix of an encoder's
    vector; the Matryoshka dims it lists are those the graph can still serve."""
    if output_dim is None:
        return info
    if info["task"] != "sentence_embedding":
        raise OnnxError(f"--output_dim {output_dim}: only sentence encoders can be cut to a prefix, not "
                        f"{info['task']!r} models")
    size = embedding_size(predictor)
    if not 1 <= output_dim <= size:
        raise OnnxError(f"--output_dim {output_dim}: give a prefix length from 1 to the embedding size {size}")
    dims = info.get("matryoshka_dims")
    if output_dim < size and output_dim not in (dims or ()):
        logger.warning(f"--output_dim {output_dim} is not among the dims the model was trained for "
                       f"({dims or 'none: not a Matryoshka model'}); its prefix may embed poorly")
    served = [d for d in dims if d <= output_dim] if dims else dims
    return {**info, "output_dim": output_dim, "matryoshka_dims": served}


def prefix_outputs(backend, output_dim: int | None):
    """A torch backend whose `sentence_embedding` is cut as the exported graph cuts it (the parity reference)."""
    if output_dim is None:
        return backend
    return lambda inputs: {k: v[:, :output_dim] for k, v in backend(inputs).items()}


def export_paths(output: str) -> tuple[str, str]:
    """`--output` is an export directory (model.onnx inside) or an .onnx path (sidecars beside it)."""
    if output.endswith(".onnx"):
        return output, os.path.dirname(os.path.abspath(output))
    return os.path.join(output, ONNX_NAME), output


def export_model(model_dir: str, output: str, opset: int = 17, pooling_mode: str | None = None,
                 optimize: bool = False, output_dim: int | None = None) -> str:
    """Write the graph + sidecar files; returns the .onnx path. Loads from `model_dir` on CPU. The fused
    ops are listed in the graph's `bertorch.fused_ops` metadata (empty: plain graph). `output_dim`: a
    sentence encoder's graph outputs only that prefix of the vector (`bertorch.output_dim` metadata)."""
    import onnx

    check_opset(opset)
    info, predictor = load_source(model_dir, pooling_mode)
    info = check_output_dim(info, predictor, output_dim)
    path, out_dir = export_paths(output)
    os.makedirs(out_dir, exist_ok=True)
    task = info["task"]
    module = GraphModule(predictor.backend.model, task, output_dim).eval()  # eval(): the exporter restores this mode
    enc = predictor.tokenizer(SAMPLE, padding=True, return_tensors="pt", return_token_type_ids=True)
    args = tuple(enc[k].long() for k in INPUT_NAMES)
    axes = {k: {0: "batch", 1: "sequence"} for k in INPUT_NAMES}
    for name in OUTPUTS[task]:
        axes[name] = {0: "batch", 1: "sequence"} if task == "ner" else {0: "batch"}
        if is_span_model(info):  # span scores (B, K, T, T): a score per type and (start, end) token pair
            axes[name] = {0: "batch", 2: "sequence", 3: "sequence"}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)  # shape checks, not data-dependent
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
        # transformers' padding mask indexes with aranges, never negative indices
        warnings.filterwarnings("ignore", message=".*aten::index operator of advanced indexing.*")
        try:
            with eager_attention(module):
                torch.onnx.export(module, args, path, input_names=list(INPUT_NAMES), output_names=list(OUTPUTS[task]),
                                  dynamic_axes=axes, opset_version=opset, do_constant_folding=True, dynamo=False)
        except Exception as e:
            if "opset" in str(e).lower():
                raise OnnxError(f"--opset {opset} cannot express this model: {str(e).splitlines()[0]}") from None
            raise
    model = predictor.backend.model
    config = getattr(model, "config", None) or model.backbone.config  # SentenceEmbedder wraps the backbone
    fused = optimize_graph(path, config) if optimize else {}
    graph = onnx.load(path)
    meta = {"bertorch.task": task, "bertorch.vocab_size": str(config.vocab_size),
            "bertorch.source": os.path.abspath(model_dir),
            "bertorch.fused_ops": ",".join(f"{op}:{n}" for op, n in sorted(fused.items()))}
    if task == "sentence_embedding":
        meta["bertorch.pooling_mode"] = info["pooling_mode"]
    if output_dim is not None:
        meta["bertorch.output_dim"] = str(output_dim)
    for key, value in meta.items():
        graph.metadata_props.add(key=key, value=value)
    onnx.save(graph, path)
    copy_sidecars(model_dir, out_dir, info)
    return path


def copy_sidecars(model_dir: str, out_dir: str, info: dict) -> None:
    """Tokenizer, config, task info and CRF transitions beside the graph, so the export dir stands alone."""
    if os.path.abspath(model_dir) != os.path.abspath(out_dir):
        for name in SIDECAR_FILES:
            if os.path.isfile(os.path.join(model_dir, name)):
                shutil.copy2(os.path.join(model_dir, name), os.path.join(out_dir, name))
    # Written even for a plain transformers dir: the pooling baked into the graph must be known.
    write_task_info(out_dir, info)
