"""Focal and label-smoothing losses against hand computation; option validation."""
import math

import pytest
import torch

from bertorch.losses.classification import build_loss


def test_label_smoothing_by_hand():
    logits = torch.tensor([[2.0, 0.0, -1.0]])
    labels = torch.tensor([0])
    eps = 0.1
    log_p = torch.log_softmax(logits, -1)[0]
    target = torch.full((3,), eps / 3)
    target[0] += 1 - eps
    expected = -(target * log_p).sum()
    assert build_loss("label_smoothing", 3, label_smoothing=eps)(logits, labels) == pytest.approx(expected.item())


def test_focal_by_hand_with_alpha_and_ignore_index():
    logits = torch.tensor([[1.0, 0.0], [0.0, 3.0], [5.0, 5.0]])
    labels = torch.tensor([0, 0, -100])
    gamma, alpha = 2.0, [0.25, 0.75]
    total = 0.0
    for row, y in ((0, 0), (1, 0)):
        p = math.exp(logits[row, y]) / sum(math.exp(v) for v in logits[row].tolist())
        total += -alpha[y] * (1 - p) ** gamma * math.log(p)
    loss = build_loss("focal", 2, focal_gamma=gamma, focal_alpha=alpha)(logits, labels)
    assert loss.item() == pytest.approx(total / 2, rel=1e-6)


def test_focal_gamma_zero_is_cross_entropy_and_aliases_work():
    logits, labels = torch.randn(6, 4), torch.randint(0, 4, (6,))
    ce = build_loss("cross_entropy_loss", 4)(logits, labels)
    assert build_loss("focal", 4, focal_gamma=0.0)(logits, labels).item() == pytest.approx(ce.item(), rel=1e-6)


def test_focal_alpha_must_match_label_count():
    with pytest.raises(ValueError, match="3 weights but there are 2 labels"):
        build_loss("focal", 2, focal_alpha=[1, 1, 1])
