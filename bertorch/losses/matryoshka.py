"""Matryoshka embeddings (Kusupati et al. 2022; sentence-transformers' MatryoshkaLoss): the loss is summed
over prefixes of the embedding, so its first 256, 128 or 64 dimensions are embeddings in their own right
and a server can keep only a prefix (re-normalised) for a smaller index.

The losses here are cosine-based, so a prefix is re-normalised inside them; a loss only has to say what it
is on the first ``d`` dimensions (``loss_at(d)``, ``d = None``: all of them) and it is computed from the same
forward pass for every ``d``, as sentence-transformers' cached variant does.
"""
from __future__ import annotations

from typing import Callable, Sequence

from torch import Tensor

from bertorch.errors import UsageError


def check_dims(dims: Sequence[int] | None, weights: Sequence[float] | None = None,
               size: int | None = None) -> None:
    """One-line UsageError naming the flag and value for dims that are not distinct positive ints <= `size`
    (the embedding size, when known), or weights that are not one per dimension."""
    if not dims:
        if weights:
            raise UsageError("--matryoshka_weights needs --matryoshka_dims")
        return
    if any(d < 1 for d in dims) or len(set(dims)) != len(dims):
        raise UsageError(f"--matryoshka_dims {' '.join(map(str, dims))}: give distinct positive sizes")
    if size is not None and max(dims) > size:
        raise UsageError(f"--matryoshka_dims {max(dims)} is over the embedding size {size} (the model's hidden "
                         f"size, or --output_emb_size)")
    if weights is not None and len(weights) != len(dims):
        raise UsageError(f"--matryoshka_weights gives {len(weights)} weights for {len(dims)} --matryoshka_dims")


def matryoshka_sum(loss_at: Callable[[int | None], Tensor], dims: Sequence[int] | None = None,
                   weights: Sequence[float] | None = None) -> Tensor:
    """``sum_k weights[k] * loss_at(dims[k])`` (weights default to 1); without dims, ``loss_at(None)``."""
    if not dims:
        return loss_at(None)
    weights = [1.0] * len(dims) if weights is None else weights
    return sum(w * loss_at(d) for d, w in zip(dims, weights))
