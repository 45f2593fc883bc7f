"""Entities from a saved GlobalPointer NER model (`run_ner.py --head global_pointer`): nested and overlapping.

Inputs and windows are the tagger's (`TaggerPredictor.window_outputs`); the backend (PyTorch or ONNX) returns
the span scores over tokens, (B, K, T, T), and the rest is numpy: the characters' rows and columns, a
threshold at 0, and windows merged so each span is judged once (`tagging.merge_window_spans`), exactly as
the dev metric of training does. Results have the tagger's "entities" (no "tags": nested spans have none).
"""
from __future__ import annotations

from typing import Sequence

from transformers import AutoConfig

from bertorch.models.global_pointer import SpanNer, decode_spans
from bertorch.predictors.backends import TorchBackend
from bertorch.predictors.base import Predictor
from bertorch.predictors.tagger import TaggerPredictor
from bertorch.tagging import merge_window_spans


class SpanPredictor(TaggerPredictor):
    """A TaggerPredictor in what it takes and returns (texts or character lists, file prediction), not in how."""

    def __init__(self, model_dir: str, info: dict, backend, tokenizer=None):
        Predictor.__init__(self, model_dir, info, backend, tokenizer)
        config = AutoConfig.from_pretrained(model_dir)
        self.labels = [config.id2label[i] for i in range(len(config.id2label))]  # entity types
        self.head, self.stride = info["head"], int(info.get("doc_stride", 32))
        self.scheme, self.crf = None, None  # no tags

    @classmethod
    def load(cls, model_dir: str, info: dict, backend: str = "torch", device: str | None = None, **kwargs):
        if backend != "torch":
            return super().load(model_dir, info, backend=backend, device=device, **kwargs)
        return cls(model_dir, info, TorchBackend(SpanNer.from_saved(model_dir, info), device))

    @property
    def blank_result(self) -> dict:
        """A blank input line of predict_file: an empty text's result."""
        return {"text": "", "entities": []}

    def predict(self, texts: Sequence[str | Sequence[str]], batch_size: int = 32) -> list[dict]:
        """Per input: {"text", "entities": [{"type", "start", "end", "text"}]}, `end` exclusive, sorted by
        start, then longest first; entities may nest (北京大学 ORG holding 北京 LOC) or overlap."""
        docs = [list(t) for t in texts]
        windows = self.window_outputs(docs, batch_size, decode_spans)
        results = []
        for d, (text, chars) in enumerate(zip(texts, docs)):
            parts = windows.get(d, [])
            spans = merge_window_spans(len(chars), [w for w, _ in parts], [s for _, s in parts])
            spans.sort(key=lambda s: (s[1], -s[2], s[0]))
            results.append({"text": text, "entities": [
                {"type": self.labels[t], "start": s, "end": e, "text": "".join(chars[s:e])} for t, s, e in spans]})
        return results
