"""Sentence vectors from a saved Sentence-BERT / SimCSE / batchneg model, or a plain HuggingFace encoder:
`SentenceEncoder.from_pretrained(dir).encode(texts)`; `encode(texts, dimensions=64)` keeps a prefix of each
vector (re-normalised), which is what a model trained with --matryoshka_dims is for (`matryoshka_dims`).

The pooling mode and projection come from the directory's sentence_pooling.json/.safetensors and texts
are tokenised as in training, so the vectors are exactly the training-time ones. The backend maps numpy
token ids to the numpy pooled vector ("sentence_embedding"), so an ONNX backend can plug in unchanged.
"""
from __future__ import annotations

from numbers import Integral
from typing import Sequence

import numpy as np

from bertorch.argtypes import BACKENDS
from bertorch.data.readers import DataError
from bertorch.errors import UsageError
from bertorch.predictors.backends import TorchBackend, onnx_predictor
from bertorch.predictors.base import Predictor, input_lines

DEFAULT_POOLING = "mean"  # for plain encoders without sentence_pooling.json (m3e, text2vec, ...)


class SentenceEncoder(Predictor):
    @classmethod
    def load(cls, model_dir, info, backend="torch", device=None, pooling_mode: str | None = None, **kwargs):
        """`pooling_mode` only matters for a directory without a saved pooler (a plain HF encoder)."""
        if backend == "onnx":  # pooling, projection and normalisation are inside the exported graph
            return onnx_predictor(cls, model_dir, info, device, output="sentence_embedding", pooling_mode=pooling_mode,
                                  **kwargs)
        if backend != "torch":
            raise ValueError(f"unknown backend {backend!r}; use one of {', '.join(BACKENDS)}")
        from transformers import AutoModel

        from bertorch.models.biencoder import SentenceEmbedder
        from bertorch.models.pooling import SentencePooler

        if SentencePooler.exists(model_dir):
            pooler = SentencePooler.load(model_dir)
            if pooling_mode and pooling_mode != pooler.mode:
                raise ValueError(f"{model_dir} was trained with pooling {pooler.mode!r}, not {pooling_mode!r}")
        else:
            pooler = SentencePooler(pooling_mode or info.get("pooling_mode") or DEFAULT_POOLING)
        backbone = AutoModel.from_pretrained(model_dir)
        return cls(model_dir, info, TorchBackend(SentenceEmbedder(backbone, pooler), device))

    @property
    def matryoshka_dims(self) -> list[int] | None:
        """The prefixes the model was trained to serve (--matryoshka_dims), None for other models."""
        return self.info.get("matryoshka_dims")

    def encode(self, texts: Sequence[str] | str, batch_size: int = 64, normalize: bool = True,
               dimensions: int | None = None) -> np.ndarray:
        """`(N, E)` float32 vectors (unit length with `normalize`); a single string gives `(E,)`. `dimensions`
        keeps the first `dimensions` values of each vector, normalised after the cut."""
        if isinstance(texts, str):
            return self.encode([texts], batch_size, normalize, dimensions)[0]
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.encode([""], 1, False, dimensions).shape[1]), dtype=np.float32)
        ids = self.tokenizer(texts, truncation=True, max_length=self.max_length)["input_ids"]
        features = [{"input_ids": x} for x in ids]
        out = None
        for idx in self.batches(len(features), [len(x) for x in ids], batch_size):
            vectors = self.backend(self.pad([features[i] for i in idx]))["sentence_embedding"]
            if out is None:
                check_dimensions(dimensions, vectors.shape[-1])
                out = np.empty((len(texts), vectors[:, :dimensions].shape[-1]), dtype=np.float32)
            out[idx] = vectors[:, :dimensions]
        if normalize:
            out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        return out

    def similarity(self, a_texts: Sequence[str], b_texts: Sequence[str], batch_size: int = 64,
                   dimensions: int | None = None) -> np.ndarray:
        """Cosine of each pair `(a_texts[i], b_texts[i])` (over the first `dimensions`), shape `(N,)`."""
        if len(a_texts) != len(b_texts):
            raise ValueError(f"similarity needs aligned lists, got {len(a_texts)} and {len(b_texts)} texts")
        a = self.encode(list(a_texts), batch_size, normalize=True, dimensions=dimensions)
        b = self.encode(list(b_texts), batch_size, normalize=True, dimensions=dimensions)
        return (a * b).sum(axis=1)

    def predict(self, texts: Sequence[str], batch_size: int = 64, normalize: bool = True,
                dimensions: int | None = None) -> np.ndarray:
        """Same as `encode` (the common Predictor verb)."""
        return self.encode(texts, batch_size, normalize, dimensions)

    def predict_file(self, input_file: str, output_file: str, batch_size: int = 64, normalize: bool = True,
                     dimensions: int | None = None, **kwargs) -> int:
        """One sentence a line -> a `.npy` array `(lines, E)`, row i for line i, written to exactly `output_file`
        (numpy would add `.npy` to a name without it); returns the number of lines. A blank line would have no
        row, so it is refused with its line number. (Options of other predictors, such as return_probs, are
        ignored.)"""
        lines = input_lines(input_file)
        blank = next((number for number, line in lines if not line), None)
        if blank is not None:
            raise DataError(input_file, blank, "blank line: an embedding model writes one .npy row per line, so "
                                               "every line needs a text")
        vectors = self.encode([line for _, line in lines], batch_size, normalize, dimensions)
        with open(output_file, "wb") as f:
            np.save(f, vectors)
        return len(lines)


def check_dimensions(dimensions: int | None, size: int) -> None:
    """`dimensions` must be None or a prefix length 1..size of the model's vectors."""
    if dimensions is not None and not (isinstance(dimensions, Integral) and 1 <= dimensions <= size):
        raise UsageError(f"dimensions={dimensions!r}: give a prefix length from 1 to the embedding size {size}")
