"""CoSENT (Su Jianlin, 2022; bojone/CoSENT, text2vec, sentence-transformers' CoSENTLoss) as pure tensor maths.

Every pair whose gold score is higher must get a higher cosine than every pair whose score is lower:

    loss = log(1 + sum over (i, j) with label_i > label_j of exp(scale * (cos_j - cos_i)))

Only the order of the labels matters, so 0/1 similarity labels and graded STS scores train alike, and
the cosine itself is what is trained (Sentence-BERT's softmax trains a classifier over the pair, and its
cosine only follows). ``scale`` is an inverse temperature (20, as published).

`pair_cosent_loss` is what the bi-encoder calls: the cosines of every rank's pairs are gathered (with
grad), so N ranks rank N times the pairs and the gradients equal one process on the concatenated batch.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from bertorch.distributed import all_gather_with_grad
from bertorch.losses.matryoshka import matryoshka_sum


def cosent_loss(cosines: Tensor, labels: Tensor, scale: float = 20.0) -> Tensor:
    """``cosines (N,)`` of N pairs, ``labels (N,)`` their gold scores (any real numbers) -> a scalar.

    A log-sum-exp over the N x N score differences of the pairs that are out of order in the labels, and
    a 0 for the ``1 +`` (so a batch with a single label value gives log 1 = 0, not nan)."""
    if cosines.dim() != 1 or labels.shape != cosines.shape:
        raise ValueError(f"cosines (N,) and labels (N,) needed, got {tuple(cosines.shape)} and {tuple(labels.shape)}")
    scores = cosines * scale
    differences = scores.view(-1, 1) - scores.view(1, -1)               # (i, j): s_i - s_j
    labels = labels.to(cosines.device)
    lower_first = labels.view(-1, 1) < labels.view(1, -1)               # label_i < label_j: i must score lower
    differences = differences.masked_fill(~lower_first, float("-inf"))
    return torch.logsumexp(torch.cat([scores.new_zeros(1), differences.view(-1)]), dim=0)


def prefix_cosines(a: Tensor, b: Tensor, dims: Sequence[int | None] = (None,)) -> Tensor:
    """``a``, ``b (N, E)`` -> ``(N, K)``: the cosine of each row pair over the first ``dims[k]`` dimensions
    (None: all of them). Cosine normalises, so a prefix is re-normalised as Matryoshka needs."""
    return torch.stack([F.cosine_similarity(a[:, :d], b[:, :d], dim=-1) for d in dims], dim=1)


def pair_cosent_loss(emb: Tensor, labels: Tensor, scale: float = 20.0, gather: bool = True,
                     dims: Sequence[int] | None = None, weights: Sequence[float] | None = None) -> Tensor:
    """CoSENT on ``emb (B, 2, E)`` with ``labels (B,)``: the cosine of each example's two sentences, ranked.

    With ``gather``, under DDP the cosines and labels of every rank are ranked together (one autograd-aware
    all-gather for all of ``dims``). ``dims``: Matryoshka, the loss summed (``weights``) over prefixes of
    the embedding (`losses.matryoshka`). Collectives run on every rank in lockstep: training only."""
    if emb.dim() != 3 or emb.shape[1] != 2:
        raise ValueError(f"CoSENT needs 2 sentences per example (B, 2, E), got {tuple(emb.shape)}")
    cosines = prefix_cosines(emb[:, 0], emb[:, 1], dims or (None,))   # (B, K)
    if gather:
        cosines = all_gather_with_grad(cosines)[0]
        labels = all_gather_with_grad(labels.to(cosines.device))[0]
    columns = dict(zip(dims or (None,), cosines.unbind(dim=1)))
    return matryoshka_sum(lambda d: cosent_loss(columns[d], labels, scale), dims, weights)
