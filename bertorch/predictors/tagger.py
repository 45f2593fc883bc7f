"""Tag raw texts with a saved sequence-labelling model: tags per character, entity spans, words.

Inputs are rebuilt exactly as in training (`encode_documents`: one token per character, windows of
`max_seq_length` overlapping by the saved `doc_stride`), the backend returns sub-token logits as numpy,
and stitching + CRF decoding are numpy too, so an ONNX backend plugs in without touching this file.
"""
from __future__ import annotations

import json
from collections import defaultdict
from typing import Sequence

from transformers import AutoConfig

from bertorch.data.readers import DataError, iter_lines
from bertorch.data.tagged import encode_documents
from bertorch.models.tagger import decode_document, load_crf_arrays
from bertorch.predictors.base import Predictor
from bertorch.tagging import extract_entities, segment_words, to_seqeval_tags, validate_tag_set


class TaggerPredictor(Predictor):
    auto_class = "AutoModelForTokenClassification"  # the CRF stays in numpy: its transitions sit beside the model

    def __init__(self, model_dir: str, info: dict, backend, tokenizer=None):
        super().__init__(model_dir, info, backend, tokenizer)
        config = AutoConfig.from_pretrained(model_dir)
        self.labels = [config.id2label[i] for i in range(len(config.id2label))]
        # A plain transformers directory has no bertorch.json: detect the scheme, no CRF.
        self.scheme = info.get("tag") or validate_tag_set(self.labels)
        self.stride = int(info.get("doc_stride", 32))
        self.crf = load_crf_arrays(model_dir) if info.get("use_crf") else None


    def predict(self, texts: Sequence[str | Sequence[str]], batch_size: int = 32) -> list[dict]:
        """Per input: {"text", "tags" (one per character), "entities" [{"type","start","end","text"}]}
        plus "words" for B/M/E/S models. A string is split into code points, so `text[start:end]` is
        exactly the entity; a list is taken as given (one tag per element)."""
        docs = [list(t) for t in texts]
        keep = [d for d, chars in enumerate(docs) if chars]
        features = encode_documents(self.tokenizer, [docs[d] for d in keep], self.max_length, self.stride)
        scores: list = [None] * len(features)
        for idx in self.batches(len(features), [len(f["input_ids"]) for f in features], batch_size):
            logits = self.backend(self.pad([features[i] for i in idx]))["logits"]
            for row, i in enumerate(idx):
                scores[i] = logits[row, features[i]["char_index"]]
        windows = defaultdict(list)
        for f, s in zip(features, scores):
            windows[keep[f["doc"]]].append(((f["start"], f["start"] + len(s)), s))
        results = []
        for d, (text, chars) in enumerate(zip(texts, docs)):
            parts = windows.get(d, [])
            ids = decode_document(len(chars), [w for w, _ in parts], [s for _, s in parts], self.crf) if chars else []
            results.append(self.result(text, chars, [self.labels[i] for i in ids]))
        return results

    def result(self, text, chars: list[str], tags: list[str]) -> dict:
        out = {"text": text, "tags": tags,
               "entities": extract_entities(to_seqeval_tags(tags, self.scheme), chars)}
        if self.scheme == "bmes":
            out["words"] = segment_words(tags, chars)
        return out

    def predict_file(self, input_file: str, output_file: str, batch_size: int = 32, **kwargs) -> int:
        """One raw text a line, or JSON lines with "text" (a string or a list of characters; other keys,
        e.g. gold labels, are ignored) -> one JSON result a line."""
        texts = []
        for number, line in iter_lines(input_file):
            if line.lstrip().startswith("{"):
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError:
                    obj = None
                if isinstance(obj, dict):
                    if "text" not in obj:
                        raise DataError(input_file, number, 'JSON line without a "text" key', line)
                    texts.append(obj["text"])
                    continue
            texts.append(line)
        results = self.predict(texts, batch_size=batch_size)
        with open(output_file, "w", encoding="utf-8") as f:
            for r in results:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
        return len(results)
