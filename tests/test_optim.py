"""Schedulers' shapes, weight-decay grouping, layer-wise LR decay."""
import pytest
import torch
from torch import nn

from bertorch.optim import SCHEDULERS, build_param_groups, build_scheduler


def lrs(name, total=10, warmup=0.2):
    p = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=1.0)
    sched = build_scheduler(name, opt, total, warmup)
    out = []
    for _ in range(total):
        out.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    return out + [sched.get_last_lr()[0]]


def test_warmup_is_linear_then_each_schedule_has_its_shape():
    for name in SCHEDULERS:
        curve = lrs(name)
        if name == "constant":
            assert curve == [1.0] * 11
            continue
        assert curve[:3] == pytest.approx([0.0, 0.5, 1.0]), name
    assert lrs("linear")[2:] == pytest.approx([1 - i / 8 for i in range(9)])
    cosine = lrs("cosine")
    assert cosine[6] == pytest.approx(0.5) and cosine[-1] == pytest.approx(0.0, abs=1e-12)
    assert lrs("cosine_with_restarts") == pytest.approx(cosine)  # one cycle by default
    assert lrs("constant_with_warmup")[2:] == [1.0] * 9
    poly = lrs("polynomial")
    assert poly[-1] == pytest.approx(1e-7) and all(a >= b for a, b in zip(poly[2:], poly[3:]))


def test_bad_scheduler_options_are_refused():
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    with pytest.raises(ValueError, match="warmup_proportion"):
        build_scheduler("linear", opt, 10, 1.5)
    with pytest.raises(ValueError, match="scheduler"):
        build_scheduler("exponential", opt, 10, 0.0)


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.embeddings = nn.Module()
        self.embeddings.word = nn.Embedding(5, 4)
        self.embeddings.LayerNorm = nn.LayerNorm(4)
        self.encoder = nn.Module()
        self.encoder.layer = nn.ModuleList([nn.Linear(4, 4) for _ in range(2)])
        self.classifier = nn.Linear(4, 2)
        self.crf = nn.Module()
        self.crf.transitions = nn.Parameter(torch.zeros(2, 2))


def group_of(groups, param):
    return next(g for g in groups if any(p is param for p in g["params"]))


def test_weight_decay_skips_biases_and_layernorm():
    m = Tiny()
    groups = build_param_groups(m, 1e-3, 0.01)
    assert group_of(groups, m.classifier.weight)["weight_decay"] == 0.01
    assert group_of(groups, m.classifier.bias)["weight_decay"] == 0.0
    assert group_of(groups, m.embeddings.LayerNorm.weight)["weight_decay"] == 0.0
    assert group_of(groups, m.encoder.layer[0].weight)["weight_decay"] == 0.01
    assert sum(len(g["params"]) for g in groups) == len(list(m.parameters()))


def test_layerwise_decay_and_overrides():
    m = Tiny()
    groups = build_param_groups(m, 1.0, 0.0, layerwise_lr_decay=0.5, num_layers=2,
                                lr_overrides={"crf.": 10.0})
    assert group_of(groups, m.classifier.weight)["lr"] == 1.0
    assert group_of(groups, m.encoder.layer[1].weight)["lr"] == 0.5
    assert group_of(groups, m.encoder.layer[0].weight)["lr"] == 0.25
    assert group_of(groups, m.embeddings.word.weight)["lr"] == 0.125
    assert group_of(groups, m.crf.transitions)["lr"] == 10.0
    with pytest.raises(ValueError, match="layerwise_lr_decay"):
        build_param_groups(m, 1.0, 0.0, layerwise_lr_decay=0.0)
