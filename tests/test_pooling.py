"""Sentence pooling: exact padding handling, mode semantics, projection and save/load."""
from __future__ import annotations

import json
import os

import pytest
import torch

from bertorch.models.pooling import (POOLING_CONFIG_NAME, POOLING_MODES, POOLING_WEIGHTS_NAME, SentencePooler,
                                     pool)


def test_modes_are_the_original_ones():
    assert POOLING_MODES == ("linear", "cls", "mean")
    with pytest.raises(ValueError, match="unknown pooling mode"):
        pool("max", torch.randn(1, 2, 3), torch.ones(1, 2))


def test_mean_ignores_padding_exactly():
    torch.manual_seed(0)
    lengths = [3, 5, 1]
    hidden = [torch.randn(n, 4) for n in lengths]
    unpadded = torch.stack([h.mean(0) for h in hidden])
    L = 9
    states = torch.full((3, L, 4), float("nan"))          # garbage where the mask is 0, even nan
    states[1, 6:] = 1e30
    mask = torch.zeros(3, L, dtype=torch.long)
    for i, h in enumerate(hidden):
        states[i, :len(h)] = h
        mask[i, :len(h)] = 1
    out = pool("mean", states, mask)
    assert out.shape == (3, 4)
    assert torch.allclose(out, unpadded, atol=1e-6, rtol=0)
    # one sentence alone, no padding at all, gives the same vector as inside the padded batch
    alone = pool("mean", hidden[1].unsqueeze(0), torch.ones(1, 5))
    assert torch.allclose(alone[0], out[1], atol=1e-6, rtol=0)


def test_mean_is_differentiable_and_padding_gets_no_gradient():
    states = torch.randn(2, 4, 3, requires_grad=True)
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])
    pool("mean", states, mask).sum().backward()
    assert torch.all(states.grad[0, 2:] == 0)
    assert torch.allclose(states.grad[0, :2], torch.full((2, 3), 0.5))
    assert torch.allclose(states.grad[1], torch.full((4, 3), 0.25))


def test_cls_picks_position_zero_and_linear_uses_pooler_output():
    states = torch.randn(2, 5, 4)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    assert torch.equal(pool("cls", states, mask), states[:, 0])
    pooled = torch.randn(2, 4)
    assert torch.equal(pool("linear", states, mask, pooled), pooled)
    with pytest.raises(ValueError, match="pooler"):
        pool("linear", states, mask, None)


def test_linear_with_a_real_bert(tiny_bert):
    from transformers import BertModel

    model = BertModel.from_pretrained(tiny_bert).eval()
    ids = torch.tensor([[2, 7, 8, 9, 3], [2, 10, 3, 0, 0]])
    mask = (ids != 0).long()
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask)
        expected = torch.tanh(model.pooler.dense(out.last_hidden_state[:, 0]))
        got = SentencePooler("linear").pool_outputs(out, mask)
    assert torch.allclose(got, expected, atol=1e-6)
    no_pooler = BertModel(model.config, add_pooling_layer=False).eval()
    with torch.no_grad(), pytest.raises(ValueError, match="pooler"):
        SentencePooler("linear").pool_outputs(no_pooler(input_ids=ids, attention_mask=mask), mask)


@pytest.mark.parametrize("mode", POOLING_MODES)
def test_projection_shape_and_normalize(mode):
    pooler = SentencePooler(mode, hidden_size=16, output_emb_size=8)
    states, mask, pooled = torch.randn(3, 6, 16), torch.ones(3, 6), torch.randn(3, 16)
    out = pooler(states, mask, pooled)
    assert out.shape == (3, 8) and pooler.embedding_size == 8
    unit = pooler(states, mask, pooled, normalize=True)
    assert torch.allclose(unit.norm(dim=-1), torch.ones(3), atol=1e-6)
    assert torch.allclose(unit, torch.nn.functional.normalize(out, dim=-1))
    for size in (None, 0):
        plain = SentencePooler(mode, hidden_size=16, output_emb_size=size)
        assert plain.projection is None and plain(states, mask, pooled).shape == (3, 16)
    with pytest.raises(ValueError, match="hidden_size"):
        SentencePooler(mode, output_emb_size=8)


@pytest.mark.parametrize("emb_size", [None, 8])
def test_save_load_roundtrip(tmp_path, emb_size):
    torch.manual_seed(1)
    pooler = SentencePooler("mean", hidden_size=16, output_emb_size=emb_size)
    pooler.save(str(tmp_path))
    with open(tmp_path / POOLING_CONFIG_NAME, encoding="utf-8") as f:
        assert json.load(f) == {"pooling_mode": "mean", "hidden_size": 16, "output_emb_size": emb_size}
    assert os.path.exists(tmp_path / POOLING_WEIGHTS_NAME) == (emb_size is not None)
    loaded = SentencePooler.load(str(tmp_path))
    assert loaded.config_dict() == pooler.config_dict() and SentencePooler.exists(str(tmp_path))
    states, mask = torch.randn(2, 5, 16), torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    assert torch.equal(loaded(states, mask), pooler(states, mask))


def test_load_without_weights_fails_loudly(tmp_path):
    SentencePooler("cls", hidden_size=16, output_emb_size=8).save(str(tmp_path))
    os.remove(tmp_path / POOLING_WEIGHTS_NAME)
    with pytest.raises(FileNotFoundError, match="projection"):
        SentencePooler.load(str(tmp_path))
    with pytest.raises(FileNotFoundError):
        SentencePooler.load(str(tmp_path / "nowhere"))
    with pytest.raises(ValueError, match="unknown keys"):
        SentencePooler.from_config_dict({"pooling_mode": "cls", "pooling": "x"})


def test_resave_without_projection_removes_stale_weights(tmp_path):
    SentencePooler("cls", hidden_size=16, output_emb_size=8).save(str(tmp_path))
    SentencePooler("cls", hidden_size=16).save(str(tmp_path))
    assert not os.path.exists(tmp_path / POOLING_WEIGHTS_NAME)
    assert SentencePooler.load(str(tmp_path)).projection is None
