"""Hard-label losses shared by every task: cross-entropy, label smoothing and focal loss.

Inputs are logits (N, C) and labels (N,), where label -100 marks positions to ignore (padding of token
classification), as in `F.cross_entropy`. Losses are computed in fp32 even under autocast.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from bertorch.errors import UsageError

IGNORE_INDEX = -100
LOSS_TYPES = ("cross_entropy", "label_smoothing", "focal")
# easy-bert spells them with a `_loss` suffix; accept those too.
LOSS_ALIASES = {f"{name}_loss": name for name in LOSS_TYPES}


def focal_loss(logits: torch.Tensor, labels: torch.Tensor, gamma: float = 2.0,
               alpha: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over non-ignored examples of -alpha[y] * (1 - p_y)^gamma * log p_y (Lin et al., 2017)."""
    keep = labels != IGNORE_INDEX
    logits, labels = logits[keep].float(), labels[keep]
    if labels.numel() == 0:
        return logits.sum() * 0.0
    log_p = F.log_softmax(logits, dim=-1).gather(1, labels[:, None]).squeeze(1)
    loss = -((1.0 - log_p.exp()) ** gamma) * log_p
    if alpha is not None:
        loss = loss * alpha.to(loss.device)[labels]
    return loss.mean()


def build_loss(loss_type: str, num_labels: int, label_smoothing: float = 0.1, focal_gamma: float = 2.0,
               focal_alpha: Sequence[float] | None = None) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The loss function named by `--loss_type`, with its options validated."""
    loss_type = LOSS_ALIASES.get(loss_type, loss_type)
    if loss_type == "cross_entropy":
        return lambda logits, labels: F.cross_entropy(logits.float(), labels, ignore_index=IGNORE_INDEX)
    if loss_type == "label_smoothing":
        if not 0.0 <= label_smoothing < 1.0:
            raise UsageError(f"--label_smoothing must be in [0, 1), got {label_smoothing}")
        return lambda logits, labels: F.cross_entropy(logits.float(), labels, ignore_index=IGNORE_INDEX,
                                                      label_smoothing=label_smoothing)
    if loss_type == "focal":
        alpha = None
        if focal_alpha is not None:
            if len(focal_alpha) != num_labels:
                raise UsageError(f"--focal_alpha has {len(focal_alpha)} weights but there are {num_labels} "
                                 f"labels: give one weight per label, in labels.txt order")
            if any(a < 0 for a in focal_alpha):
                raise UsageError(f"--focal_alpha weights must be non-negative, got {list(focal_alpha)}")
            alpha = torch.tensor(focal_alpha, dtype=torch.float32)
        return lambda logits, labels: focal_loss(logits, labels, focal_gamma, alpha)
    raise UsageError(f"unknown --loss_type {loss_type!r}; choose from {', '.join(LOSS_TYPES)}")
