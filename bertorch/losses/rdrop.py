"""R-Drop (Liang et al., 2021): two dropout passes over the same batch, and a symmetric KL between their
predicted distributions added to the loss, so the model's prediction depends less on which units dropped.

    loss = mean(CE_1, CE_2) + alpha * (KL(p_1 || p_2) + KL(p_2 || p_1)) / 2

The paper sums the two cross-entropies; averaging them keeps `--learning_rate` meaning what it means without
R-Drop. For a tagger the KL is per character and averaged over the real ones (with a CRF, on the emissions).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def symmetric_kl(logits_a: torch.Tensor, logits_b: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """(KL(a||b) + KL(b||a)) / 2 of the softmax distributions over the last axis, averaged over the other axes
    (or over the positions where `mask` is true). Shapes (..., K) and an optional (...) mask."""
    log_a = F.log_softmax(logits_a.float(), dim=-1)
    log_b = F.log_softmax(logits_b.float(), dim=-1)
    # kl_div(input, target, log_target=True) = sum target * (log target - input) = KL(target || input)
    per_position = 0.5 * (F.kl_div(log_a, log_b, reduction="none", log_target=True)
                          + F.kl_div(log_b, log_a, reduction="none", log_target=True)).sum(-1)
    if mask is None:
        return per_position.mean()
    mask = mask.to(per_position.dtype)
    return (per_position * mask).sum() / mask.sum().clamp(min=1.0)


def doubled_batch(batch: dict) -> dict:
    """Every tensor repeated along the batch axis: one forward pass gives both dropout passes of R-Drop (each
    example meets its own dropout masks twice), and `chunk(2)` splits the outputs back."""
    return {k: torch.cat([v, v]) if torch.is_tensor(v) else v for k, v in batch.items()}
