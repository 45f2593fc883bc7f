"""Multilabel categorical cross-entropy (Su Jianlin's, the GlobalPointer loss) for span scores.

Every span of every type is a binary decision, but a sentence has a handful of entities among thousands of
candidate spans, so a per-span sigmoid loss drowns the positives. This loss ranks instead: each positive's
score above 0 and each negative's below 0, as one softmax-like term per side,

    log(1 + sum_neg exp(s)) + log(1 + sum_pos exp(-s))

(https://kexue.fm/archives/7359). Decoding is then a threshold at 0. Masked candidates (padding, start > end)
carry a very negative score, so they count as confident negatives and add nothing.
"""
from __future__ import annotations

import torch

_OFF = 1e12  # pushes a score out of a logsumexp; fp32 holds it, and the loss is always computed in fp32


def multilabel_categorical_crossentropy(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(N, M) scores and (N, M) 0/1 targets -> (N,) losses, in fp32 whatever the input dtype."""
    scores, targets = scores.float(), targets.float()
    signed = (1 - 2 * targets) * scores  # positives negated: both sides become "should be below 0"
    zeros = torch.zeros_like(signed[..., :1])  # the "1 +" inside each log
    negatives = torch.cat([signed - targets * _OFF, zeros], dim=-1)
    positives = torch.cat([signed - (1 - targets) * _OFF, zeros], dim=-1)
    return torch.logsumexp(negatives, dim=-1) + torch.logsumexp(positives, dim=-1)


def global_pointer_loss(span_scores: torch.Tensor, span_targets: torch.Tensor) -> torch.Tensor:
    """Mean over examples and types of the loss over all spans; (B, K, C, C) scores and 0/1 targets."""
    batch, types = span_scores.shape[:2]
    return multilabel_categorical_crossentropy(span_scores.reshape(batch * types, -1),
                                               span_targets.reshape(batch * types, -1)).mean()
