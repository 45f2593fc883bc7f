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

from bertorch.data.readers import DataError
from bertorch.data.tagged import encode_documents
from bertorch.models.tagger import decode_document, load_crf_arrays
from bertorch.predictors.base import Predictor
from bertorch.tagging import (decoding_constraints, extract_entities, segment_words, to_seqeval_tags,
                              validate_tag_set)


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
        # As the model was scored on dev: a directory from before --decoding (or plain transformers) means argmax
        self.constraints = decoding_constraints(self.labels, self.scheme, info.get("decoding"))


    def predict(self, texts: Sequence[str | Sequence[str]], batch_size: int = 32) -> list[dict]:
        """Per input: {"text", "tags" (one per character), "entities" [{"type","start","end","text"}]}
        plus "words" for B/M/E/S models. A string is split into code points, so `text[start:end]` is
        exactly the entity; a list is taken as given (one tag per element)."""
        docs = [list(t) for t in texts]
        windows = self.window_outputs(docs, batch_size, lambda logits, index: logits[index])
        results = []
        for d, (text, chars) in enumerate(zip(texts, docs)):
            parts = windows.get(d, [])
            ids = decode_document(len(chars), [w for w, _ in parts], [s for _, s in parts], self.crf,
                                  self.constraints) if chars else []
            results.append(self.result(text, chars, [self.labels[i] for i in ids]))
        return results

    def window_outputs(self, docs: list[list[str]], batch_size: int, take) -> dict[int, list]:
        """{document: [((start, end), take(logits_row, char_index))]} over every window of the non-empty
        documents, windows built as in training (span predictors reuse this with their own `take`)."""
        keep = [d for d, chars in enumerate(docs) if chars]
        features = encode_documents(self.tokenizer, [docs[d] for d in keep], self.max_length, self.stride)
        windows = defaultdict(list)
        for idx in self.batches(len(features), [len(f["input_ids"]) for f in features], batch_size):
            logits = self.backend(self.pad([features[i] for i in idx]))["logits"]
            for row, i in enumerate(idx):
                f = features[i]
                windows[keep[f["doc"]]].append(((f["start"], f["start"] + len(f["char_index"])),
                                                take(logits[row], f["char_index"])))
        for parts in windows.values():
            parts.sort(key=lambda part: part[0])  # batches go by length: windows back in document order
        return windows

    def result(self, text, chars: list[str], tags: list[str]) -> dict:
        out = {"text": text, "tags": tags,
               "entities": extract_entities(to_seqeval_tags(tags, self.scheme), chars)}
        if self.scheme == "bmes":
            out["words"] = segment_words(tags, chars)
        return out

    @property
    def blank_result(self) -> dict:
        """A blank input line: the result of an empty text (no tags, no entities)."""
        return self.result("", [], [])

    def parse_line(self, path: str, number: int, line: str):
        """A raw text, or a JSON line with "text" (a string or a list of characters; other keys, e.g. gold labels,
        are ignored)."""
        if line.lstrip().startswith("{"):
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                obj = None
            if isinstance(obj, dict):
                if "text" not in obj:
                    raise DataError(path, number, 'JSON line without a "text" key', line)
                return obj["text"]
        return line

    def format_result(self, result: dict, **options) -> str:
        """One JSON result a line."""
        return json.dumps(result, ensure_ascii=False)
