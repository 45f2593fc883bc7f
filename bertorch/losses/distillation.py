"""Distillation maths: soft-label KD, intermediate-feature losses, temperature and weight schedules.

Pure tensor functions, no model, so each one is tested against a hand-written formula. The registry keys
(`KD_LOSSES`, `FEATURE_LOSSES`, `TEMPERATURE_SCHEDULES`, `WEIGHT_SCHEDULES`) are the names users type and see
in `--help`; they follow TextBrewer's names so its users recognise them. A `mask` is (B, L), 1/True for
real tokens; `None` means every position is real. Feature losses share one signature,
`loss(student, teacher, mask=None) -> scalar`.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

Tensor = torch.Tensor


def _keep(mask: Tensor | None, shape: torch.Size, device) -> Tensor:
    """Bool (B, L) (or (B,) for sentence-level logits); all True when mask is None."""
    if mask is None:
        return torch.ones(shape, dtype=torch.bool, device=device)
    if tuple(mask.shape) != tuple(shape):
        raise ValueError(f"mask has shape {tuple(mask.shape)}, expected {tuple(shape)}")
    return mask.to(device).bool()


def _same_shape(name: str, student: Tensor, teacher: Tensor) -> None:
    if student.shape != teacher.shape:
        hint = " (hidden widths differ: the match needs proj=(student, teacher))" \
            if student.shape[:-1] == teacher.shape[:-1] else ""
        raise ValueError(f"{name}: student {tuple(student.shape)} and teacher {tuple(teacher.shape)} "
                         f"must have the same shape{hint}")


def _mean(values: Tensor) -> Tensor:
    """Mean that is 0 (not NaN) when every position is padding."""
    return values.sum() / max(values.numel(), 1)


# ----------------------------------------------------------------------------- soft-label KD
def _select_logits(student_logits, teacher_logits, temperature, mask):
    """Keep the real positions: (B, C) or (B, L, C) -> (N, C), and the temperature as (N, 1) or a float."""
    _same_shape("kd loss", student_logits, teacher_logits)
    keep = _keep(mask, student_logits.shape[:-1], student_logits.device)
    if isinstance(temperature, Tensor) and temperature.dim() > 0:  # per-example (B,) or per-token (B, L)
        t = temperature.to(student_logits)
        t = t.reshape(tuple(t.shape) + (1,) * (keep.dim() - t.dim())).expand(keep.shape)
        temperature = t[keep].unsqueeze(-1)
    return student_logits[keep], teacher_logits[keep], temperature


def kd_ce_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float | Tensor = 1.0,
               mask: Tensor | None = None) -> Tensor:
    """Soft cross-entropy (Hinton et al. 2015; TinyBERT's prediction loss), scaled by T².

    loss = T² · mean over real positions of  -Σ_c softmax(t/T)_c · log_softmax(s/T)_c
    logits (B, C) or token-level (B, L, C) with mask (B, L); temperature a float, (B,) or (B, L).
    Why T²: the gradient of the softened loss shrinks like 1/T², so the factor keeps its size (and the
    meaning of the KD weight next to the hard-label loss) independent of T. TextBrewer and TinyBERT leave
    it out: their weight w at temperature T equals our w / T². This is CE, not KL: it exceeds
    KL(p_T || p_S) by the teacher's entropy, a constant with zero gradient for the student.
    """
    s, t, temp = _select_logits(student_logits, teacher_logits, temperature, mask)
    ce = -(F.softmax(t / temp, dim=-1) * F.log_softmax(s / temp, dim=-1)).sum(-1)  # (N,)
    scale = temp.squeeze(-1) ** 2 if isinstance(temp, Tensor) else temp ** 2
    return _mean(ce * scale)


def kd_mse_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float | Tensor = 1.0,
                mask: Tensor | None = None) -> Tensor:
    """Mean squared error between the logits divided by T, over real positions and classes (TextBrewer's).

    Shapes as `kd_ce_loss`. No T² factor: regression on logits needs no softening, and keeping
    TextBrewer's definition means a number from a TextBrewer run means the same here.
    """
    s, t, temp = _select_logits(student_logits, teacher_logits, temperature, mask)
    return _mean(((s - t) / temp) ** 2)


KD_LOSSES: dict[str, Callable[..., Tensor]] = {"ce": kd_ce_loss, "mse": kd_mse_loss}


# ----------------------------------------------------------------------------- span scores (GlobalPointer)
def span_kd_loss(student_scores: Tensor, teacher_scores: Tensor, temperature: float | Tensor = 1.0,
                 valid: Tensor | None = None, kd_loss_type: str = "ce") -> Tensor:
    """KD on span scores (B, K, C, C), where every valid span is its own yes/no decision per type (GlobalPointer
    scores are multilabel, so a softmax over classes, as `kd_ce_loss` takes, does not apply).

    ce: T² · binary KL(σ(t/T) || σ(s/T)) summed over the valid spans of each (example, type) and averaged over
        examples and types, the way the hard GlobalPointer loss averages, so --kd_loss_weight keeps its meaning;
        KL rather than CE so the reported value is 0 when the student equals the teacher (same gradient).
    mse: mean over valid spans of ((s - t)/T)², TextBrewer's logit regression.
    `valid` (B, K, C, C) bool marks real spans (start <= end, both characters); None: all. A per-example
    temperature (B,) is broadcast over its spans."""
    _same_shape("span kd loss", student_scores, teacher_scores)
    keep = torch.ones_like(student_scores, dtype=torch.bool) if valid is None else valid.bool()
    temp = temperature
    if isinstance(temp, Tensor) and temp.dim() > 0:
        temp = temp.to(student_scores).view(-1, *([1] * (student_scores.dim() - 1)))
    s = torch.where(keep, student_scores.float(), 0.0) / temp
    t = torch.where(keep, teacher_scores.float(), 0.0) / temp
    if kd_loss_type == "mse":
        return ((s - t) ** 2 * keep).sum() / keep.sum().clamp_min(1)
    if kd_loss_type != "ce":
        raise ValueError(f"unknown kd_loss_type {kd_loss_type!r} for span scores (ce or mse)")
    p = torch.sigmoid(t)
    kl = p * (F.logsigmoid(t) - F.logsigmoid(s)) + (1 - p) * (F.logsigmoid(-t) - F.logsigmoid(-s))
    per_example_type = (kl * keep * temp ** 2).flatten(2).sum(-1)  # (B, K)
    return per_example_type.mean()


def combine_span_teachers(scores: list[Tensor], weights: list[float], temperature: float,
                          kd_loss_type: str) -> Tensor:
    """One teacher score tensor for several span teachers: ce averages their probabilities σ(t_k/T) (returned as
    T·logit of the mean, so σ(result/T) is the averaged soft label); mse averages the scores."""
    if len(scores) == 1:
        return scores[0]
    w = [x / sum(weights) for x in weights]
    if kd_loss_type == "mse":
        return sum(wk * t for wk, t in zip(w, scores))
    probs = sum(wk * torch.sigmoid(t.float() / temperature) for wk, t in zip(w, scores))
    eps = torch.finfo(probs.dtype).eps
    return temperature * torch.logit(probs.clamp(eps, 1 - eps))


# ----------------------------------------------------------------------------- hidden-state losses
def hidden_mse(student: Tensor, teacher: Tensor, mask: Tensor | None = None) -> Tensor:
    """MSE over real tokens and hidden units (TinyBERT/TextBrewer `hidden_mse`). (B, L, H) each, equal H."""
    _same_shape("hidden_mse", student, teacher)
    keep = _keep(mask, student.shape[:2], student.device)
    return _mean((student[keep] - teacher[keep]) ** 2)


def cos_loss(student: Tensor, teacher: Tensor, mask: Tensor | None = None) -> Tensor:
    """1 - cosine(student_i, teacher_i) per real token, averaged (DistilBERT's). (B, L, H) each, equal H."""
    _same_shape("cos", student, teacher)
    keep = _keep(mask, student.shape[:2], student.device)
    return _mean(1 - F.cosine_similarity(student[keep], teacher[keep], dim=-1))


def pkd_loss(student: Tensor, teacher: Tensor, mask: Tensor | None = None) -> Tensor:
    """BERT-PKD: squared distance of the L2-normalised [CLS] vectors (position 0), summed over H, mean over B.

    (B, L, H) each, equal H; mask unused ([CLS] is always real)."""
    _same_shape("pkd", student, teacher)
    s, t = F.normalize(student[:, 0], dim=-1), F.normalize(teacher[:, 0], dim=-1)
    return ((s - t) ** 2).sum(-1).mean()


def gram_loss(student: Tensor, teacher: Tensor, mask: Tensor | None = None) -> Tensor:
    """TextBrewer's `gram`/`fsp` with both layers of the pair the same: feature-feature Gram matrices.

    G = Hᵀ·H / n  (B, H, H), n = number of real tokens of the example, padded rows zeroed;
    loss = mean over B·H·H of (G_S - G_T)². (B, L, H) each; widths must be equal (use proj).
    Hᵀ·H rather than H·Hᵀ: the token-token version is `smmd`, so `gram` adds the other view.
    """
    _same_shape("gram", student, teacher)
    keep = _keep(mask, student.shape[:2], student.device).unsqueeze(-1)  # (B, L, 1)
    n = keep.sum(1, keepdim=True).clamp_min(1).to(student)  # (B, 1, 1)

    def gram(h):
        h = torch.where(keep, h, h.new_zeros(()))
        return h.transpose(1, 2) @ h / n

    return F.mse_loss(gram(student), gram(teacher))


def smmd_loss(student: Tensor, teacher: Tensor, mask: Tensor | None = None) -> Tensor:
    """TextBrewer's `mmd_loss` (`mmd`/`nst`, its `*_hidden_smmd` presets): token-token similarity matching.

    G = H·Hᵀ / d  (B, L, L) for each model with its own width d (a linear kernel between tokens);
    loss = Σ_b Σ_{i,j real} (G_S - G_T)²_bij / Σ_b n_b². Student (B, L, H_s), teacher (B, L, H_t): the
    widths may differ, so no projection is needed. A variant of NST (Huang & Wang 2017): NST's
    polynomial-kernel MMD between the two models' features is replaced by matching the relation matrices.
    """
    if student.shape[:2] != teacher.shape[:2]:
        raise ValueError(f"smmd: student {tuple(student.shape)} and teacher {tuple(teacher.shape)} "
                         "must share (batch, length)")
    keep = _keep(mask, student.shape[:2], student.device)
    pairs = keep.unsqueeze(2) & keep.unsqueeze(1)  # (B, L, L)
    g_s = student @ student.transpose(1, 2) / student.size(-1)
    g_t = teacher @ teacher.transpose(1, 2) / teacher.size(-1)
    return _mean((g_s - g_t)[pairs] ** 2)


# ----------------------------------------------------------------------------- attention losses
def _attention_pairs(name, student, teacher, mask) -> Tensor:
    """Bool (B, heads, L, L): real query i and real key j."""
    _same_shape(name, student, teacher)
    if student.dim() != 4:
        raise ValueError(f"{name}: attention must be (batch, heads, length, length), got {tuple(student.shape)}")
    keep = _keep(mask, (student.size(0), student.size(2)), student.device)
    return (keep[:, None, :, None] & keep[:, None, None, :]).expand(student.shape)


def attention_mse(student: Tensor, teacher: Tensor, mask: Tensor | None = None) -> Tensor:
    """TinyBERT attention loss: MSE over heads and real (query, key) pairs. (B, heads, L, L) each.

    Takes probabilities (what transformers returns with output_attentions=True) or raw scores, as
    TinyBERT does; like TinyBERT, entries <= -100 (the -10000/-inf put on padded keys) count as 0.
    """
    pairs = _attention_pairs("attention_mse", student, teacher, mask)
    s = torch.where(student <= -1e2, student.new_zeros(()), student)
    t = torch.where(teacher <= -1e2, teacher.new_zeros(()), teacher)
    return _mean((s - t)[pairs] ** 2)


def attention_ce(student: Tensor, teacher: Tensor, mask: Tensor | None = None) -> Tensor:
    """Soft cross-entropy between attention distributions, per head and real query. (B, heads, L, L) each.

    loss = mean over (b, head, real i) of  -Σ_{real j} A_T[i, j] · log A_S[i, j]. Inputs are
    probabilities (transformers' attentions); TextBrewer's att_ce takes scores and applies the softmax.
    """
    pairs = _attention_pairs("attention_ce", student, teacher, mask)
    terms = torch.where(pairs, teacher * torch.log(student.clamp_min(1e-12)), student.new_zeros(()))
    real_queries = pairs.any(-1)  # (B, heads, L)
    return _mean(-terms.sum(-1)[real_queries])


FEATURE_LOSSES: dict[str, Callable[..., Tensor]] = {
    "hidden_mse": hidden_mse, "cos": cos_loss, "pkd": pkd_loss, "gram": gram_loss, "fsp": gram_loss,
    "smmd": smmd_loss, "mmd": smmd_loss, "nst": smmd_loss,
    "attention_mse": attention_mse, "attention_ce": attention_ce,
}
ATTENTION_LOSSES = frozenset({"attention_mse", "attention_ce"})  # take (B, heads, L, L)
WIDTH_FREE_LOSSES = frozenset({"smmd", "mmd", "nst"})  # compare token relations: no projection needed


def get_feature_loss(name: str) -> Callable[..., Tensor]:
    if name not in FEATURE_LOSSES:
        raise ValueError(f"unknown feature loss {name!r}; choose from {sorted(FEATURE_LOSSES)}")
    return FEATURE_LOSSES[name]


# ----------------------------------------------------------------------------- schedules
def _progress(step: int, total: int) -> float:
    """step / total clipped to [0, 1]."""
    if total <= 0:
        raise ValueError(f"a decaying schedule needs total steps > 0, got {total}")
    return min(max(step / total, 0.0), 1.0)


TEMPERATURE_SCHEDULES: dict[str, Callable[[float, int, int], float]] = {
    "constant": lambda base, step, total: base,
    # base -> 1 (never below 1: T -> 0 would turn the soft labels into one-hot and divide by 0)
    "linear_decay": lambda base, step, total: 1.0 + (base - 1.0) * (1.0 - _progress(step, total)),
}
WEIGHT_SCHEDULES: dict[str, Callable[[float, int, int], float]] = {
    "constant": lambda base, step, total: base,
    "linear_decay": lambda base, step, total: base * (1.0 - _progress(step, total)),  # TextBrewer: 1 -> 0
    "linear_growth": lambda base, step, total: base * _progress(step, total),  # 0 -> 1, e.g. hard labels
}


def temperature_schedule(name: str, base: float, step: int, total: int) -> float:
    """KD temperature at `step` of `total`: `constant` = base; `linear_decay` = base at 0 down to 1 at total."""
    if name not in TEMPERATURE_SCHEDULES:
        raise ValueError(f"unknown temperature schedule {name!r}; choose from {sorted(TEMPERATURE_SCHEDULES)}")
    return float(TEMPERATURE_SCHEDULES[name](base, step, total))


def weight_schedule(name: str, base: float, step: int, total: int) -> float:
    """Loss weight at `step` of `total`: `constant`, `linear_decay` (base -> 0), `linear_growth` (0 -> base)."""
    if name not in WEIGHT_SCHEDULES:
        raise ValueError(f"unknown weight schedule {name!r}; choose from {sorted(WEIGHT_SCHEDULES)}")
    return float(WEIGHT_SCHEDULES[name](base, step, total))
