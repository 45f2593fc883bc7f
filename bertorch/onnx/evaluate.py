"""Dev-set metrics through a Predictor (any backend), agreement between two backends, int8 quantisation.

Everything goes through the public predictors, so the numbers are what a user of `backend="onnx"`
gets: accuracy / macro-F1 for classifiers, seqeval F1 for taggers, Spearman for encoders on STS data.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from bertorch.model_dir import SPAN_HEADS, is_span_model


def read_eval_set(info: dict, dev_file: str, labels: Sequence[str] | None = None, limit: int | None = None):
    """(examples, gold) from a dev file in the task's training format; gold is None when it has none.

    classification: `text\\tlabel` / `text_a\\ttext_b\\tlabel`; ner: JSON lines; encoders: STS
    `a\\tb\\tscore` (examples are pairs) or one sentence a line (no gold).
    """
    from bertorch.data.readers import DataError, read_classification

    task = info["task"]
    if is_span_model(info):  # span JSON lines, CLUENER or tag files; gold: (type, start, end) per text
        from bertorch.data.spans import read_spans

        rows = read_spans(dev_file, list(labels) if labels else None, labelled=bool(labels))[:limit]
        return [r.chars for r in rows], ([[(t, s, e) for s, e, t in r.entities] for r in rows] if labels else None)
    if task == "classification":
        rows = read_classification(dev_file, list(labels) if labels else None, bool(info.get("is_text_pair")))[:limit]
        return [(r.text_a, r.text_b) if r.text_b is not None else r.text_a for r in rows], [r.label for r in rows]
    if task == "ner":
        from bertorch.data.tagged import read_tagged

        rows = read_tagged(dev_file, list(labels) if labels else None)[:limit]
        return [r.chars for r in rows], ([r.tags for r in rows] if labels else None)
    from bertorch.data.sentence import read_sentences, read_sts

    try:
        rows = read_sts(dev_file)[:limit]
        return [(r.text_a, r.text_b) for r in rows], [float(r.label) for r in rows]
    except DataError:
        return [r.text_a for r in read_sentences(dev_file)[:limit]], None


def predict_all(predictor, task: str, examples: list, batch_size: int = 32):
    """Label strings, tag lists, entity sets (span models: {(type, start, end)}), or embeddings (`(N, E)`, or
    `(N, 2, E)` for pairs)."""
    if task == "ner" and getattr(predictor, "head", None) in SPAN_HEADS:
        return [frozenset((e["type"], e["start"], e["end"]) for e in r["entities"])
                for r in predictor.predict(examples, batch_size=batch_size)]
    if task == "classification":
        return predictor.predict(examples, batch_size=batch_size)
    if task == "ner":
        return [r["tags"] for r in predictor.predict(examples, batch_size=batch_size)]
    if examples and isinstance(examples[0], tuple):
        flat = [t for pair in examples for t in pair]
        return predictor.encode(flat, batch_size=batch_size).reshape(len(examples), 2, -1)
    return predictor.encode(examples, batch_size=batch_size)


def score(task: str, predictor, gold, predictions) -> dict[str, float]:
    """The task's headline metrics; {} when the dev file has no gold labels."""
    if gold is None:
        return {}
    if task == "classification":
        from bertorch.metrics import classification_metrics

        ids = {label: i for i, label in enumerate(predictor.labels)}
        m = classification_metrics([ids[g] for g in gold], [ids[p] for p in predictions], predictor.labels)
        return {"accuracy": m["accuracy"], "macro_f1": m["macro_f1"]}
    if task == "ner" and getattr(predictor, "head", None) in SPAN_HEADS:
        from bertorch.metrics import span_metrics

        m = span_metrics(gold, predictions, predictor.labels)
        return {"f1": m["f1"], "precision": m["precision"], "recall": m["recall"]}
    if task == "ner":
        from bertorch.metrics import sequence_metrics

        m = sequence_metrics(gold, predictions, predictor.scheme)
        return {"f1": m["f1"], "precision": m["precision"], "recall": m["recall"]}
    from bertorch.metrics import correlation_metrics

    return {"spearman": correlation_metrics(gold, (predictions[:, 0] * predictions[:, 1]).sum(-1))["spearman"]}


def evaluate(predictor, info: dict, dev_file: str, limit: int | None = None, batch_size: int = 32) -> dict:
    """Metrics of `predictor` on a dev file (plus its predictions, for agreement)."""
    labels = getattr(predictor, "labels", None) if info["task"] != "sentence_embedding" else None
    examples, gold = read_eval_set(info, dev_file, labels, limit)
    predictions = predict_all(predictor, info["task"], examples, batch_size)
    return {"metrics": score(info["task"], predictor, gold, predictions), "predictions": predictions}


def agreement(task: str, a, b) -> float:
    """Fraction of identical labels (taggers: per character; span models: entities found by both of those
    found by either), or mean cosine for embeddings."""
    if task == "ner" and a and isinstance(a[0], frozenset):
        union = sum(len(x | y) for x, y in zip(a, b))
        return sum(len(x & y) for x, y in zip(a, b)) / union if union else 1.0
    if task == "classification":
        return float(np.mean([x == y for x, y in zip(a, b)])) if a else 1.0
    if task == "ner":
        pairs = [(x, y) for ta, tb in zip(a, b) for x, y in zip(ta, tb)]
        return float(np.mean([x == y for x, y in pairs])) if pairs else 1.0
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.mean((a * b).sum(-1) / np.maximum(np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1), 1e-12)))


def quantize_int8(onnx_path: str, output: str | None = None) -> str:
    """Dynamic int8 quantisation of the MatMul weights (activations are quantised on the fly): no
    calibration data, and the MatMuls are where a BERT spends its CPU time. In a fused graph the Q/K/V
    projections sit inside `Attention` nodes, which become `QAttention` (left fp32, int8 is ~25% slower). Embeddings, LayerNorm and the small Gemm heads stay fp32, which keeps the
    accuracy loss small."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from bertorch.predictors.backends import require_onnxruntime

    require_onnxruntime()
    output = output or onnx_path[:-len(".onnx")] + "_int8.onnx"  # model.onnx -> model_int8.onnx
    import onnx

    # DefaultTensorType: types of tensors shape inference cannot see (e.g. behind contrib ops) are fp32
    quantize_dynamic(onnx_path, output, weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Attention"],
                     extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    return output
