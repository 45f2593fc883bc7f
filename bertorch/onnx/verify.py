"""Does the exported graph agree with PyTorch? Real inputs, two batch sizes x two sequence lengths.

Frozen shapes are the classic export bug, so every (batch, length) cell runs a shape the trace did not
see. Labels are compared the way users get them: classifier argmax, and per-character tags of a tagger
(first sub-token of each character, then decoded as the Predictor does: numpy Viterbi with the saved CRF
transitions, or under the tag scheme's constraints, or argmax).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from bertorch.model_dir import is_span_model

BUILTIN_TEXTS = [
    "这家酒店位置很好，服务周到，早餐也丰富，下次出差还会选择这里。",
    "房间太小了，隔音很差，晚上根本睡不好。",
    "张三和李四昨天在北京参观了故宫博物院。",
    "性价比一般",
    "物流很快，包装完好，书的印刷质量也不错，孩子非常喜欢，推荐给大家购买。"
    "不过价格比上个月贵了一些，希望商家以后多做活动，让老顾客也能得到实惠。",
    "屏幕清晰，电池耐用",
    "上海的天气今天晴转多云，气温二十度左右，适合出门散步。",
    "差",
]
ATOL = 1e-3  # per unit of output scale; fp32 graphs differ from eager by ~1e-6


def sample_examples(info: dict, dev_file: str | None = None, n: int = 16) -> list:
    """Inputs in the predictor's own form: texts, (text_a, text_b) pairs, or lists of characters:
    the dev file's first and longest examples (when given) and built-in Chinese texts."""
    task, pair = info["task"], bool(info.get("is_text_pair"))
    builtin = [list(t) for t in BUILTIN_TEXTS] if task == "ner" else (
        list(zip(BUILTIN_TEXTS, BUILTIN_TEXTS[1:] + BUILTIN_TEXTS[:1])) if pair else list(BUILTIN_TEXTS))
    if dev_file:
        from bertorch.onnx.evaluate import read_eval_set

        examples, _ = read_eval_set(info, dev_file, labels=None, limit=2000)
        if task == "sentence_embedding":
            examples = [t for e in examples for t in (e if isinstance(e, tuple) else (e,))]
        # the first ones and the longest ones, so the long-length cells really run long sequences
        size = (lambda e: sum(map(len, e)) if isinstance(e, tuple) else len(e))
        longest = sorted(range(len(examples)), key=lambda i: -size(examples[i]))[:n // 2]
        keep = sorted(set(range(min(n - len(longest), len(examples)))) | set(longest))
        # plus the built-in texts, so a dev file of short sentences still exercises the long length
        return [examples[i] for i in keep] + builtin
    return builtin


def build_features(info: dict, tokenizer, examples: list, length: int) -> list[dict]:
    """Token features truncated to `length`, as the predictor builds them (taggers: windows)."""
    if info["task"] == "ner":
        from bertorch.data.tagged import encode_documents

        stride = min(int(info.get("doc_stride", 32)), max(length // 4, 1))
        return encode_documents(tokenizer, [list(e) for e in examples], length, stride)
    pairs = [e if isinstance(e, tuple) else (e, None) for e in examples]
    second = [b for _, b in pairs] if pairs[0][1] is not None else None
    enc = tokenizer([a for a, _ in pairs], second, truncation=True, max_length=length, return_token_type_ids=True)
    return [{"input_ids": enc["input_ids"][i], "token_type_ids": enc["token_type_ids"][i]} for i in range(len(pairs))]


def pad(features: list[dict], pad_id: int) -> dict[str, np.ndarray]:
    width = max(len(f["input_ids"]) for f in features)
    out = {k: np.zeros((len(features), width), dtype=np.int64) for k in ("input_ids", "attention_mask", "token_type_ids")}
    out["input_ids"][:] = pad_id
    for row, f in enumerate(features):
        n = len(f["input_ids"])
        out["input_ids"][row, :n], out["attention_mask"][row, :n] = f["input_ids"], 1
        out["token_type_ids"][row, :n] = f.get("token_type_ids", 0)
    return out


def labels_of(task: str, outputs: dict, features: list[dict], crf=None, constraints=None) -> list:
    """Per feature: the class id, or the tuple of per-character tag ids (decoded as `decode_document` does)."""
    from bertorch.models.tagger import decode_document

    if task == "classification":
        return outputs["logits"].argmax(-1).tolist()
    if task == "ner_spans":  # the (type, start, end) scored above 0, on characters
        from bertorch.models.global_pointer import decode_spans

        return [frozenset(map(tuple, decode_spans(outputs["logits"][row], f["char_index"]).tolist()))
                for row, f in enumerate(features)]
    if task == "ner":
        emissions = [outputs["logits"][row, f["char_index"]] for row, f in enumerate(features)]
        return [tuple(decode_document(len(e), [(0, len(e))], [e], crf, constraints)) for e in emissions]
    return [None] * len(features)  # encoders: compared by value only


def comparable(task: str, outputs: dict) -> np.ndarray:
    """The array compared across backends; encoders: the normalised vector (what encode() returns); span
    scores with their masked cells (padding, start after end: a constant, not a score) as 0."""
    if task == "ner_spans":
        from bertorch.models.global_pointer import MASKED

        return np.where(outputs["logits"] <= MASKED / 2, 0.0, outputs["logits"])
    if task != "sentence_embedding":
        return outputs["logits"]
    if "normalized_embedding" in outputs:
        return outputs["normalized_embedding"]
    emb = outputs["sentence_embedding"]
    return emb / np.maximum(np.linalg.norm(emb, axis=-1, keepdims=True), 1e-12)


@dataclass
class ParityReport:
    task: str = ""
    rows: list[dict] = field(default_factory=list)  # one per (batch_size, length) cell

    @property
    def max_abs_diff(self) -> float:
        return max((r["max_abs_diff"] for r in self.rows), default=0.0)

    @property
    def ok(self) -> bool:
        return bool(self.rows) and all(r["ok"] for r in self.rows)

    def table(self) -> str:
        lines = [f"{'batch':>5} {'max_len':>7} {'longest':>7} {'inputs':>6} {'max_abs_diff':>12} {'labels differ':>13}  ok"]
        for r in self.rows:
            lines.append(f"{r['batch_size']:>5} {r['length']:>7} {r['longest']:>7} {r['inputs']:>6} {r['max_abs_diff']:>12.3g} "
                         f"{r['label_mismatches']:>13}  {'yes' if r['ok'] else 'NO'}")
        return "\n".join(lines)


def compare_backends(reference, candidate, info: dict, tokenizer, examples: list, crf=None,
                     batch_sizes=(1, 8), lengths=(16, 128), constraints=None) -> ParityReport:
    """Run both backends on every (batch size, length) cell; a cell passes with identical labels and a
    max abs difference within ATOL x the output's scale."""
    task = info["task"]
    report = ParityReport(task)
    kind = "ner_spans" if is_span_model(info) else task  # how outputs are compared and decoded
    cap = int(info.get("max_seq_length", 512))
    lengths = sorted({min(int(length), cap) for length in lengths})
    if len(lengths) < 2:  # a model trained on short windows still gets two different lengths
        lengths = [max(cap // 2, 4), cap]
    for length in lengths:
        features = build_features(info, tokenizer, examples, length)
        for bs in batch_sizes:
            diff, scale, mismatches, width = 0.0, 1.0, 0, 0
            for s in range(0, len(features), bs):
                chunk = features[s:s + bs]
                inputs = pad(chunk, tokenizer.pad_token_id)
                width = max(width, inputs["input_ids"].shape[1])
                ref, got = reference(inputs), candidate(inputs)
                a, b = comparable(kind, ref), comparable(kind, got)
                if a.shape != b.shape:
                    raise AssertionError(f"output shapes differ at batch {bs}, length {length}: {a.shape} vs {b.shape}")
                diff, scale = max(diff, float(np.abs(a - b).max())), max(scale, float(np.abs(a).max()))
                mismatches += sum(x != y for x, y in zip(labels_of(kind, ref, chunk, crf, constraints),
                                                          labels_of(kind, got, chunk, crf, constraints)))
            report.rows.append({"batch_size": bs, "length": length, "longest": width, "inputs": len(features), "max_abs_diff": diff,
                                "label_mismatches": int(mismatches),
                                "ok": bool(mismatches == 0 and diff <= ATOL * scale)})
    return report


def check_parity(model_dir: str, onnx_path: str, examples: list | None = None, dev_file: str | None = None,
                 batch_sizes=(1, 8), lengths=(16, 128), providers=None) -> ParityReport:
    """The exported graph against the PyTorch predictor of `model_dir`, on `examples` (or the dev file's,
    or built-in Chinese texts)."""
    from bertorch.models.tagger import load_crf_arrays
    from bertorch.onnx.export import load_source, prefix_outputs
    from bertorch.predictors.backends import OnnxBackend

    onnx_backend = OnnxBackend(onnx_path, providers=providers)
    # A plain HF encoder has no saved pooler: compare with the pooling baked into the graph.
    info, torch_predictor = load_source(model_dir, onnx_backend.metadata.get("bertorch.pooling_mode"))
    onnx_backend.check_tokenizer(torch_predictor.tokenizer)
    if examples is None:
        examples = sample_examples(info, dev_file)
    crf = load_crf_arrays(model_dir) if info["task"] == "ner" and info.get("use_crf") else None
    output_dim = onnx_backend.metadata.get("bertorch.output_dim")  # a graph cut to a Matryoshka prefix
    reference = prefix_outputs(torch_predictor.backend, int(output_dim) if output_dim else None)
    return compare_backends(reference, onnx_backend, info, torch_predictor.tokenizer, examples, crf,
                            batch_sizes, lengths, getattr(torch_predictor, "constraints", None))
