"""Distillation losses against explicit formulas written with loops on small tensors."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from bertorch.losses.distillation import (
    FEATURE_LOSSES, KD_LOSSES, TEMPERATURE_SCHEDULES, WEIGHT_SCHEDULES, attention_ce, attention_mse, cos_loss,
    gram_loss, hidden_mse, kd_ce_loss, kd_mse_loss, pkd_loss, smmd_loss, temperature_schedule, weight_schedule)

torch.manual_seed(0)
MASK = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])  # (B=2, L=4): 3 and 2 real tokens


def _soft_ce(s, t, T):
    return -(F.softmax(t / T, -1) * F.log_softmax(s / T, -1)).sum(-1).mean()


# ----------------------------------------------------------------------------- KD
def test_kd_ce_at_t1_is_kl_plus_teacher_entropy_and_has_kl_gradient():
    s = torch.randn(5, 7, requires_grad=True)
    t = torch.randn(5, 7)
    loss = kd_ce_loss(s, t, temperature=1.0)
    kl = F.kl_div(F.log_softmax(s, -1), F.log_softmax(t, -1), reduction="batchmean", log_target=True)
    p_t = F.softmax(t, -1)
    entropy = -(p_t * p_t.log()).sum(-1).mean()
    assert torch.allclose(loss, kl + entropy, atol=1e-6)
    (g_ce,) = torch.autograd.grad(loss, s)
    (g_kl,) = torch.autograd.grad(kl, s)
    assert torch.allclose(g_ce, g_kl, atol=1e-6)


def test_kd_ce_t_squared_factor():
    s, t = torch.randn(4, 3), torch.randn(4, 3)
    T = 4.0
    assert torch.allclose(kd_ce_loss(s, t, T), T ** 2 * _soft_ce(s, t, T), atol=1e-6)
    # gradient magnitude does not vanish like 1/T²: T² · grad of the soft CE at T
    s1 = s.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(kd_ce_loss(s1, t, T), s1)
    expected = T * (F.softmax(s / T, -1) - F.softmax(t / T, -1)) / s.size(0)
    assert torch.allclose(g, expected, atol=1e-6)


def test_kd_per_example_temperature():
    s, t = torch.randn(3, 5), torch.randn(3, 5)
    temps = torch.tensor([1.0, 2.0, 4.0])
    expected = torch.stack([temps[i] ** 2 * _soft_ce(s[i:i + 1], t[i:i + 1], temps[i]) for i in range(3)]).mean()
    assert torch.allclose(kd_ce_loss(s, t, temps), expected, atol=1e-6)


@pytest.mark.parametrize("name", sorted(KD_LOSSES))
def test_token_level_kd_ignores_padding(name):
    fn = KD_LOSSES[name]
    s, t = torch.randn(2, 4, 6), torch.randn(2, 4, 6)
    loss = fn(s, t, 2.0, mask=MASK)
    s2, t2 = s.clone(), t.clone()
    s2[MASK == 0] = 100 * torch.randn_like(s2[MASK == 0])
    t2[MASK == 0] = -50.0
    assert torch.allclose(fn(s2, t2, 2.0, mask=MASK), loss)
    # and it equals the loss on the real positions only
    keep = MASK.bool()
    assert torch.allclose(fn(s[keep], t[keep], 2.0), loss, atol=1e-6)


def test_kd_mse_formula():
    s, t = torch.randn(4, 3), torch.randn(4, 3)
    T = 2.0
    manual = sum(((s[i, c] - t[i, c]) / T) ** 2 for i in range(4) for c in range(3)) / 12
    assert torch.allclose(kd_mse_loss(s, t, T), manual, atol=1e-6)


# ----------------------------------------------------------------------------- hidden-state losses
def _real(mask):
    return [(b, i) for b in range(mask.size(0)) for i in range(mask.size(1)) if mask[b, i]]


def test_hidden_mse_masked():
    s, t = torch.randn(2, 4, 5), torch.randn(2, 4, 5)
    real = _real(MASK)
    manual = sum(((s[b, i] - t[b, i]) ** 2).sum() for b, i in real) / (len(real) * 5)
    assert torch.allclose(hidden_mse(s, t, MASK), manual, atol=1e-6)
    assert torch.allclose(hidden_mse(s, t), F.mse_loss(s, t), atol=1e-6)


def test_hidden_mse_width_mismatch_says_proj():
    with pytest.raises(ValueError, match="proj"):
        hidden_mse(torch.randn(2, 4, 5), torch.randn(2, 4, 8), MASK)


def test_cos_masked():
    s, t = torch.randn(2, 4, 5), torch.randn(2, 4, 5)
    real = _real(MASK)
    manual = sum(1 - (s[b, i] @ t[b, i]) / (s[b, i].norm() * t[b, i].norm()) for b, i in real) / len(real)
    assert torch.allclose(cos_loss(s, t, MASK), manual, atol=1e-6)
    assert torch.allclose(cos_loss(s, 3 * s, MASK), torch.tensor(0.0), atol=1e-6)


def test_pkd():
    s, t = torch.randn(2, 4, 5), torch.randn(2, 4, 5)
    manual = sum(((s[b, 0] / s[b, 0].norm() - t[b, 0] / t[b, 0].norm()) ** 2).sum() for b in range(2)) / 2
    assert torch.allclose(pkd_loss(s, t, MASK), manual, atol=1e-6)


def test_gram_feature_by_feature():
    s, t = torch.randn(2, 4, 3), torch.randn(2, 4, 3)
    total = 0.0
    for b in range(2):
        n = int(MASK[b].sum())
        for p in range(3):
            for q in range(3):
                gs = sum(s[b, i, p] * s[b, i, q] for i in range(n)) / n
                gt = sum(t[b, i, p] * t[b, i, q] for i in range(n)) / n
                total = total + (gs - gt) ** 2
    assert torch.allclose(gram_loss(s, t, MASK), total / (2 * 3 * 3), atol=1e-6)
    assert FEATURE_LOSSES["fsp"] is gram_loss


def test_smmd_token_by_token_with_different_widths():
    s, t = torch.randn(2, 4, 3), torch.randn(2, 4, 6)  # no projection needed
    total, count = 0.0, 0
    for b in range(2):
        n = int(MASK[b].sum())
        for i in range(n):
            for j in range(n):
                gs = (s[b, i] @ s[b, j]) / 3
                gt = (t[b, i] @ t[b, j]) / 6
                total, count = total + (gs - gt) ** 2, count + 1
    assert torch.allclose(smmd_loss(s, t, MASK), total / count, atol=1e-6)
    assert FEATURE_LOSSES["nst"] is FEATURE_LOSSES["mmd"] is FEATURE_LOSSES["smmd"] is smmd_loss


# ----------------------------------------------------------------------------- attention losses
def _attention(B=2, heads=2, L=4, mask=MASK, scores=False):
    """Random attention with padded keys at -inf (scores) or probability 0 (softmax of those scores)."""
    x = torch.randn(B, heads, L, L)
    x = x.masked_fill(mask[:, None, None, :] == 0, float("-inf"))
    return x if scores else x.softmax(-1)


def test_attention_mse_with_padding():
    s, t = _attention(), _attention()
    total, count = 0.0, 0
    for b in range(2):
        n = int(MASK[b].sum())
        for h in range(2):
            for i in range(n):
                for j in range(n):
                    total, count = total + (s[b, h, i, j] - t[b, h, i, j]) ** 2, count + 1
    loss = attention_mse(s, t, MASK)
    assert torch.allclose(loss, total / count, atol=1e-7)
    # padded queries may hold anything
    s2 = s.clone()
    s2[1, :, 3] = 5.0
    assert torch.allclose(attention_mse(s2, t, MASK), loss)


def test_attention_mse_zeroes_minus_inf_scores_like_tinybert():
    s, t = _attention(scores=True), _attention(scores=True)
    s.requires_grad_(True)
    loss = attention_mse(s, t)  # no mask: -inf positions count as 0 on both sides
    zs = torch.where(torch.isinf(s), 0.0, s.detach())
    zt = torch.where(torch.isinf(t), 0.0, t)
    assert torch.allclose(loss, ((zs - zt) ** 2).mean(), atol=1e-6)
    (g,) = torch.autograd.grad(loss, s)
    assert torch.isfinite(g).all()


def test_attention_ce_per_head_and_query():
    s, t = _attention(), _attention()
    total, count = 0.0, 0
    for b in range(2):
        n = int(MASK[b].sum())
        for h in range(2):
            for i in range(n):
                total = total - sum(t[b, h, i, j] * torch.log(s[b, h, i, j]) for j in range(n))
                count += 1
    assert torch.allclose(attention_ce(s, t, MASK), total / count, atol=1e-6)
    # minimised (at the teacher's entropy) when the student copies the teacher
    assert attention_ce(t, t, MASK) < attention_ce(s, t, MASK)


# ----------------------------------------------------------------------------- schedules
def test_schedules_start_middle_end():
    assert [temperature_schedule("constant", 8.0, k, 100) for k in (0, 50, 100)] == [8.0, 8.0, 8.0]
    assert [temperature_schedule("linear_decay", 8.0, k, 100) for k in (0, 50, 100)] == [8.0, 4.5, 1.0]
    assert [weight_schedule("constant", 0.5, k, 100) for k in (0, 50, 100)] == [0.5, 0.5, 0.5]
    assert [weight_schedule("linear_decay", 2.0, k, 100) for k in (0, 50, 100)] == [2.0, 1.0, 0.0]
    assert [weight_schedule("linear_growth", 1.0, k, 100) for k in (0, 50, 100)] == [0.0, 0.5, 1.0]
    assert weight_schedule("linear_decay", 1.0, 150, 100) == 0.0  # clipped past the end
    assert {"constant", "linear_decay"} <= set(TEMPERATURE_SCHEDULES) & set(WEIGHT_SCHEDULES)
    with pytest.raises(ValueError, match="linear_decay"):
        weight_schedule("cosine", 1.0, 0, 10)
    assert math.isclose(temperature_schedule("constant", 3.0, 5, 0), 3.0)  # constant needs no total
