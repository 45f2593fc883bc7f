"""In-batch-negatives contrastive loss (SimCSE, batchneg, gathered negatives) as pure tensor maths.

Every anchor is scored against every candidate by cosine similarity; the anchor's own positive gets
``margin`` subtracted (so it must win by at least that much, as in the original bertorch / PaddleNLP
SimCSE), everything is multiplied by ``scale`` (an inverse temperature: 20 == temperature 0.05) and a
cross-entropy picks the positive out of the row.  No model is needed, so the tests compare it with a
plain loop formula, value and gradients.

`pair_contrastive_loss` is what the SimCSE / batchneg models call: it gathers the candidates of every rank
(the only part that is not pure maths) and hands them to these functions.

One function serves three set-ups:
  * SimCSE: ``anchors`` = first dropout view, ``candidates`` = second view, ``positive_index = arange(N)``;
  * batchneg: ``anchors`` = text_a vectors, ``candidates`` = text_b vectors (same indices);
  * gathered negatives: ``candidates`` = text_b from all ranks ``(world*N, D)`` (gathered with grad),
    ``positive_index = rank * N + arange(N)`` (``offset = rank * N``).

Identical texts in one batch are false negatives (a duplicate of the positive is scored as a negative
and the model is pushed away from the right answer).  Pass integer ids of the texts (e.g. a hash) and
such candidates are masked to -inf, i.e. dropped from the softmax.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from bertorch.distributed import all_gather_with_grad
from bertorch.errors import UsageError
from bertorch.losses.matryoshka import matryoshka_sum


def cosine_matrix(a: Tensor, b: Tensor) -> Tensor:
    """``(N, D) x (M, D) -> (N, M)`` cosine similarities."""
    return F.normalize(a, p=2, dim=-1) @ F.normalize(b, p=2, dim=-1).T


def duplicate_mask(positive_index: Tensor, candidate_ids: Tensor, anchor_ids: Tensor | None = None) -> Tensor:
    """``(N, M)`` bool, True where a candidate is a false negative for that anchor.

    A candidate ``j`` is a false negative for anchor ``i`` when it is not the positive but has the same
    id as the positive (``candidate_ids[j] == candidate_ids[positive_index[i]]``) or, if ``anchor_ids``
    is given, the same id as the anchor itself (the anchor's own text among the candidates).
    ``positive_index (N,)``, ``candidate_ids (M,)``, ``anchor_ids (N,)``.
    """
    cand = candidate_ids.view(1, -1)                                        # (1, M)
    dup = cand == candidate_ids[positive_index].view(-1, 1)                 # (N, M)
    if anchor_ids is not None:
        if anchor_ids.shape != positive_index.shape:
            raise ValueError(f"anchor_ids {tuple(anchor_ids.shape)} must match positive_index "
                             f"{tuple(positive_index.shape)}")
        dup = dup | (cand == anchor_ids.to(cand.device).view(-1, 1))
    is_pos = torch.zeros_like(dup)
    is_pos[torch.arange(dup.shape[0], device=dup.device), positive_index] = True
    return dup & ~is_pos


def in_batch_negatives_loss(anchors: Tensor, candidates: Tensor, positive_index: Tensor | None = None,
                            scale: float = 20.0, margin: float = 0.2, candidate_ids: Tensor | None = None,
                            anchor_ids: Tensor | None = None, offset: int = 0) -> Tensor:
    """Mean over anchors of ``-log softmax(scale * (cos - margin * [j == pos]))[pos]``.

    ``anchors (N, D)``, ``candidates (M, D)`` with ``M >= N`` allowed (gathered negatives),
    ``positive_index (N,)`` long, default ``offset + arange(N)`` (``offset``: this rank's first row among
    gathered candidates; checked on the host, where an explicit index costs a device sync to check).
    Optional ``candidate_ids (M,)`` / ``anchor_ids (N,)`` integer text ids switch on false-negative
    masking (see :func:`duplicate_mask`). Returns a scalar.
    """
    if anchors.dim() != 2 or candidates.dim() != 2 or anchors.shape[1] != candidates.shape[1]:
        raise ValueError(f"anchors (N, D) and candidates (M, D) needed, got {tuple(anchors.shape)} "
                         f"and {tuple(candidates.shape)}")
    n, m = anchors.shape[0], candidates.shape[0]
    if positive_index is None:
        if offset < 0 or offset + n > m:
            raise ValueError(f"positives at rows [{offset}, {offset + n}) lie outside the {m} candidates: give "
                             f"positive_index (or an offset) when there are fewer candidates than anchors")
        positive_index = torch.arange(offset, offset + n, device=anchors.device)
    else:
        positive_index = positive_index.to(device=anchors.device, dtype=torch.long)
        if positive_index.shape != (n,):
            raise ValueError(f"positive_index must have shape ({n},), got {tuple(positive_index.shape)}")
        if n and (int(positive_index.min()) < 0 or int(positive_index.max()) >= m):
            raise ValueError(f"positive_index out of range for {m} candidates")

    scores = cosine_matrix(anchors, candidates)                             # (N, M)
    # Subtract the margin from the positives only (an out-of-place scatter keeps autograd simple).
    margins = torch.zeros_like(scores).scatter(1, positive_index.view(-1, 1), margin)
    logits = (scores - margins) * scale
    if candidate_ids is not None:
        if candidate_ids.shape != (m,):
            raise ValueError(f"candidate_ids must have shape ({m},), got {tuple(candidate_ids.shape)}")
        mask = duplicate_mask(positive_index, candidate_ids.to(anchors.device), anchor_ids)
        logits = logits.masked_fill(mask, float("-inf"))
    elif anchor_ids is not None:
        raise ValueError("anchor_ids only makes sense together with candidate_ids")
    return F.cross_entropy(logits, positive_index)


def symmetric_in_batch_negatives_loss(a: Tensor, b: Tensor, scale: float = 20.0, margin: float = 0.2, *,
                                      a_candidates: Tensor | None = None, b_candidates: Tensor | None = None,
                                      offset: int = 0, a_ids: Tensor | None = None,
                                      b_ids: Tensor | None = None) -> Tensor:
    """``(loss(a -> b) + loss(b -> a)) / 2`` for aligned pairs ``a (N, D)``, ``b (N, D)`` (``--mean_loss``).

    With gathered negatives pass ``a_candidates`` / ``b_candidates (M, D)`` (every rank's a / b, this
    rank's rows at ``[offset, offset + N)``, ``offset = rank * N``); by default they are ``a`` and ``b``.
    ``a_ids`` / ``b_ids`` are text ids of the candidate sets (``(M,)``, or ``(N,)`` when not gathered);
    giving both masks duplicates of the positive and of the anchor's own text in either direction.
    """
    a_all = a if a_candidates is None else a_candidates
    b_all = b if b_candidates is None else b_candidates
    if a_all.shape[0] != b_all.shape[0]:
        raise ValueError(f"a and b candidate sets differ in size: {a_all.shape[0]} vs {b_all.shape[0]}")
    n = a.shape[0]
    if b.shape[0] != n or offset < 0 or offset + n > a_all.shape[0]:
        raise ValueError(f"need aligned a, b of {n} rows inside the candidate sets at offset {offset}")
    local = slice(offset, offset + n)
    a_loc_ids = a_ids[local] if a_ids is not None and b_ids is not None else None
    b_loc_ids = b_ids[local] if a_ids is not None and b_ids is not None else None
    a_to_b = in_batch_negatives_loss(a, b_all, None, scale, margin, b_ids, a_loc_ids, offset=offset)
    b_to_a = in_batch_negatives_loss(b, a_all, None, scale, margin, a_ids, b_loc_ids, offset=offset)
    return (a_to_b + b_to_a) / 2


def pair_contrastive_loss(emb: Tensor, scale: float = 20.0, margin: float = 0.2, symmetric: bool = False,
                          gather: bool = True, text_ids: Tensor | None = None, dims: Sequence[int] | None = None,
                          weights: Sequence[float] | None = None) -> Tensor:
    """In-batch negatives on ``emb (B, 2, E)``: row i of view 0 must pick its own view 1 among all view-1 rows
    (``symmetric``: and the other way round, averaged).

    With ``gather``, under DDP the candidates come from every rank (autograd-aware all-gather), so N ranks
    give N times the negatives and the gradients equal one process on the concatenated batch. ``text_ids
    (B, 2)`` switches on masking of identical texts (false negatives). ``dims``: Matryoshka, the loss summed
    (``weights``) over prefixes of the embedding, gathered once (`losses.matryoshka`). Collectives run on every
    rank in lockstep, so call it in training only (evaluation shards are uneven, where a collective would hang).
    """
    if emb.shape[1] != 2:
        raise ValueError(f"in-batch negatives need 2 sentences per example, got {emb.shape[1]}")
    a, b = emb[:, 0], emb[:, 1]
    a_all, b_all, ids_all, offset = a, b, text_ids, 0
    if gather:
        b_all, offset = all_gather_with_grad(b)
        if symmetric:
            a_all = all_gather_with_grad(a)[0]
        if text_ids is not None:
            ids_all = all_gather_with_grad(text_ids)[0]
    if b_all.shape[0] < 2:
        raise UsageError("a training batch holds a single example: in-batch negatives need at least 2 "
                         "(raise --batch_size)")
    a_ids, b_ids = (None, None) if ids_all is None else (ids_all[:, 0], ids_all[:, 1])
    anchor_ids = None if a_ids is None else a_ids[offset: offset + a.shape[0]]

    def loss_at(d: int | None) -> Tensor:  # on the first d dimensions (None: all)
        if symmetric:
            return symmetric_in_batch_negatives_loss(a[:, :d], b[:, :d], scale, margin, a_candidates=a_all[:, :d],
                                                     b_candidates=b_all[:, :d], offset=offset, a_ids=a_ids,
                                                     b_ids=b_ids)
        return in_batch_negatives_loss(a[:, :d], b_all[:, :d], None, scale, margin, b_ids, anchor_ids, offset=offset)

    return matryoshka_sum(loss_at, dims, weights)
