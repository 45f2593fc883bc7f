"""The low-memory training path computes what stock PyTorch/transformers compute, and keeps less."""
from __future__ import annotations

import copy
import json
import os

import pytest
import torch
from transformers import AutoModelForSequenceClassification, BertConfig, BertForSequenceClassification

from bertorch.models import low_memory
from bertorch.models.low_memory import (ATTENTION_NAME, ActivationLinear, BoolMaskDropout, _ActivationLinear,
                                        _DropoutAttention, attention_keep_masks, checkpoint_large_batches,
                                        dropout_attention,
                                        use_low_memory_training)


def _qkv(dtype=torch.float64, shape=(2, 3, 5, 4)):
    torch.manual_seed(0)
    return [torch.randn(*shape, dtype=dtype, requires_grad=True) for _ in range(3)]


def _keep(shape, p: float) -> torch.Tensor:
    """The keep mask dropout_attention draws after the global RNG was seeded as it was: its chunks' masks."""
    seed = int(torch.randint(0, 2**62, (1,)).item())
    return torch.cat([keep for _, keep in attention_keep_masks(shape, p, seed)])


@pytest.mark.parametrize("scores_per_chunk", [1 << 19, 1])  # the whole batch in one chunk / an example a chunk
def test_dropout_attention_matches_softmax_dropout_reference(monkeypatch, scores_per_chunk):
    monkeypatch.setattr(low_memory, "SCORES_PER_CHUNK", scores_per_chunk)
    q, k, v = _qkv(shape=(3, 3, 5, 4))
    mask = torch.ones(3, 1, 1, 5, dtype=torch.bool)
    mask[0, ..., 3:] = False  # padding in the first example
    torch.manual_seed(7)
    out = dropout_attention(q, k, v, mask, 0.5, 0.3)
    grad = torch.randn_like(out)
    ours = torch.autograd.grad(out, (q, k, v), grad)

    torch.manual_seed(7)  # the same seed draw -> the same keep masks
    keep = _keep((3, 3, 5, 5), 0.3)
    assert len(list(attention_keep_masks((3, 3, 5, 5), 0.3, 1))) == (1 if scores_per_chunk > 75 else 3)
    if scores_per_chunk == 1:  # each chunk draws its own mask
        assert not torch.equal(keep[0], keep[1]) and not torch.equal(keep[1], keep[2])
    scores = (q @ k.transpose(-1, -2) * 0.5).masked_fill(~mask, float("-inf"))
    reference = (torch.softmax(scores, -1) * keep / 0.7) @ v
    expected = torch.autograd.grad(reference, (q, k, v), grad)
    torch.testing.assert_close(out, reference)
    for a, b in zip(ours, expected):
        torch.testing.assert_close(a, b)
    assert 0.5 < keep.float().mean() < 0.9  # it does drop


def test_dropout_attention_gradcheck_with_additive_mask():
    q, k, v = _qkv(shape=(1, 2, 4, 3))
    mask = torch.zeros(1, 1, 4, 4, dtype=torch.float64)
    mask[..., -1] = -1e9
    assert torch.autograd.gradcheck(lambda q, k, v: _DropoutAttention.apply(q, k, v, mask, 0.7, 0.25, 123),
                                    (q, k, v))


def test_activation_linear_gradcheck_and_value():
    torch.manual_seed(0)
    x = torch.randn(3, 4, 5, dtype=torch.float64, requires_grad=True)
    w = torch.randn(6, 5, dtype=torch.float64, requires_grad=True)
    b = torch.randn(6, dtype=torch.float64, requires_grad=True)
    gelu = torch.nn.GELU()
    assert torch.autograd.gradcheck(lambda x, w, b: _ActivationLinear.apply(x, w, b, gelu), (x, w, b))
    torch.testing.assert_close(_ActivationLinear.apply(x, w, b, gelu), torch.nn.functional.linear(gelu(x), w, b))


def test_bool_mask_dropout_scales_kept_values_and_their_gradient():
    layer = BoolMaskDropout(0.4).train()
    x = torch.randn(64, 32, requires_grad=True)
    y = layer(x)
    kept = y != 0
    torch.testing.assert_close(y[kept], x[kept] / 0.6)
    y.sum().backward()
    torch.testing.assert_close(x.grad, kept.float() / 0.6)
    assert 0.45 < kept.float().mean() < 0.75
    layer.eval()
    assert torch.equal(layer(x), x)


def _bert(dropout: float) -> BertForSequenceClassification:
    torch.manual_seed(0)
    config = BertConfig(vocab_size=60, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, num_labels=3, hidden_dropout_prob=dropout,
                        attention_probs_dropout_prob=dropout)
    return BertForSequenceClassification(config)


def _batch():
    ids = torch.randint(5, 60, (3, 9), generator=torch.Generator().manual_seed(1))
    mask = torch.ones(3, 9, dtype=torch.long)
    mask[0, 5:] = 0
    return {"input_ids": ids, "attention_mask": mask, "labels": torch.tensor([0, 1, 2])}


def _saved_bytes(model) -> int:
    """Bytes of the tensors autograd keeps for backward in one forward pass of `_batch()`."""
    seen = {}

    def pack(t):
        seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(**_batch())
    return sum(seen.values())


def test_switched_model_equals_stock_without_dropout():
    stock = _bert(0.0).train()
    ours = copy.deepcopy(stock)
    counts = use_low_memory_training(ours)
    assert counts == {"attention": 1, "ffn": 2, "dropout": counts["dropout"]} and counts["dropout"] > 0
    assert isinstance(ours.bert.encoder.layer[0].output.dense, ActivationLinear)
    stock(**_batch()).loss.backward()
    ours(**_batch()).loss.backward()
    for (name, a), b in zip(stock.named_parameters(), ours.parameters()):
        torch.testing.assert_close(a.grad, b.grad, msg=name)


def test_switched_model_with_dropout_is_seeded_and_eval_is_unchanged(tmp_path):
    stock = _bert(0.1)
    ours = copy.deepcopy(stock)
    use_low_memory_training(ours)
    ours.train()
    losses = []
    for _ in range(2):
        torch.manual_seed(3)
        losses.append(ours(**_batch()).loss)
    torch.manual_seed(4)
    other = ours(**_batch()).loss
    assert losses[0].item() == losses[1].item() and other.item() != losses[0].item()
    losses[0].backward()
    assert all(p.grad is not None for p in ours.bert.encoder.parameters())

    stock.eval(), ours.eval()
    with torch.no_grad():
        torch.testing.assert_close(stock(**_batch()).logits, ours(**_batch()).logits)
    ours.save_pretrained(tmp_path)  # the switch is not saved: plain transformers loads the directory
    config = json.load(open(os.path.join(tmp_path, "config.json")))
    assert ATTENTION_NAME not in json.dumps(config)
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**_batch()).logits, ours(**_batch()).logits)


@pytest.mark.parametrize("dropout", [0.0, 0.1])
def test_switched_model_keeps_less_for_backward(dropout):
    stock = _bert(dropout).train()
    ours = copy.deepcopy(stock)
    use_low_memory_training(ours)
    assert _saved_bytes(ours) < _saved_bytes(stock)


@pytest.mark.parametrize("budget, checkpointed", [(0, True), (3 * 9 - 1, True), (3 * 9, False)])
def test_batches_above_the_token_budget_are_checkpointed_with_the_same_gradients(budget, checkpointed):
    plain = _bert(0.1)
    use_low_memory_training(plain)
    ours = copy.deepcopy(plain)
    assert checkpoint_large_batches(ours, budget) == 2
    grads = []
    for model in (plain, ours):
        model.train()
        torch.manual_seed(3)  # dropout seeds come from torch's RNG, which the checkpoint replays
        model(**_batch()).loss.backward()
        grads.append([p.grad for p in model.parameters()])
    assert all(layer.gradient_checkpointing == checkpointed for layer in ours.bert.encoder.layer)
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)
    assert (_saved_bytes(ours) < _saved_bytes(plain)) == checkpointed


def test_dropout_attention_in_bf16_computes_in_fp32_and_keeps_bf16():
    """Under --bf16 q/k/v arrive in bf16: the maths is fp32 (as stock CPU SDPA upcasts), the output and the
    gradients are bf16, and what is kept for backward is the bf16 inputs, not fp32 copies."""
    q, k, v = [t.detach().bfloat16().requires_grad_() for t in _qkv(torch.float32, (2, 3, 6, 4))]
    mask = torch.ones(2, 1, 1, 6, dtype=torch.bool)
    mask[1, ..., 4:] = False
    kept = []

    def pack(t):
        kept.append(t.dtype)
        return t
    torch.manual_seed(5)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), torch.autocast("cpu", dtype=torch.bfloat16):
        out = dropout_attention(q, k, v, mask, 0.5, 0.2)
    grad = torch.randn(out.shape).bfloat16()
    ours = torch.autograd.grad(out, (q, k, v), grad)

    torch.manual_seed(5)
    keep = _keep((2, 3, 6, 6), 0.2)
    q32, k32, v32 = [t.detach().float().requires_grad_() for t in (q, k, v)]
    scores = (q32 @ k32.transpose(-1, -2) * 0.5).masked_fill(~mask, float("-inf"))
    reference = (torch.softmax(scores, -1) * keep / 0.8) @ v32
    expected = torch.autograd.grad(reference, (q32, k32, v32), grad.float())
    assert out.dtype == torch.bfloat16 and all(g.dtype == torch.bfloat16 for g in ours)
    assert kept[:3] == [torch.bfloat16] * 3
    torch.testing.assert_close(out, reference.bfloat16())  # fp32 maths, rounded once at the end
    for a, b in zip(ours, expected):
        torch.testing.assert_close(a, b.bfloat16())


def test_switched_model_under_bf16_autocast_equals_stock_without_dropout_and_keeps_less():
    stock = _bert(0.0).train()
    ours = copy.deepcopy(stock)
    use_low_memory_training(ours)
    for model in (stock, ours):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            model(**_batch()).loss.backward()
    for (name, a), b in zip(stock.named_parameters(), ours.parameters()):
        assert b.grad.dtype == torch.float32
        torch.testing.assert_close(a.grad, b.grad, msg=name, rtol=2e-2, atol=1e-3)

    with_dropout = _bert(0.1).train()
    switched = copy.deepcopy(with_dropout)
    use_low_memory_training(switched)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert _saved_bytes(switched) < 0.8 * _saved_bytes(with_dropout)
        torch.manual_seed(3)
        switched(**_batch()).loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in switched.bert.encoder.parameters())


def test_large_batches_are_checkpointed_under_bf16_autocast_with_the_same_gradients():
    plain = _bert(0.1)
    use_low_memory_training(plain)
    ours = copy.deepcopy(plain)
    checkpoint_large_batches(ours, 10)  # 3 x 9 tokens: above the budget
    grads = []
    for model in (plain, ours):
        model.train()
        torch.manual_seed(3)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(**_batch()).loss
        loss.backward()
        grads.append([p.grad for p in model.parameters()])
    assert all(layer.gradient_checkpointing for layer in ours.bert.encoder.layer)
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)
