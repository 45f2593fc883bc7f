"""Label texts or text pairs with a saved classifier (run_classifier.py, or a distilled student)."""
from __future__ import annotations

import functools
import json
from typing import Sequence

import numpy as np
from loguru import logger
from transformers import AutoConfig

from bertorch.data.readers import DataError
from bertorch.predictors.base import Predictor


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


class ClassificationPredictor(Predictor):
    auto_class = "AutoModelForSequenceClassification"
    file_options = ("return_probs",)

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

    def parse_line(self, path: str, number: int, line: str):
        """`text` or `text_a\\ttext_b` (a trailing label column is ignored)."""
        fields = line.split("\t")
        if not self.info.get("is_text_pair"):
            return fields[0]
        if len(fields) < 2:
            raise DataError(path, number, "expected text_a\\ttext_b for this text-pair model", line)
        return fields[0], fields[1]

    def format_result(self, result, return_probs: bool = False) -> str:
        """`label`, or `label\\t{probs json}` with return_probs; a blank input line gives an empty line."""
        if result is None:
            return ""
        return f"{result['label']}\t{json.dumps(result['probs'], ensure_ascii=False)}" if return_probs else result
