"""In-batch-negatives losses vs a plain loop formula, in value and in gradients."""
from __future__ import annotations

import math

import pytest
import torch

from bertorch.losses.contrastive import (duplicate_mask, in_batch_negatives_loss,
                                         symmetric_in_batch_negatives_loss)


def loop_loss(anchors, candidates, positive_index, scale, margin, candidate_ids=None, anchor_ids=None):
    """Reference: per anchor -log(exp(s_pos) / sum_j exp(s_j)), s_j = scale * (cos_ij - margin * [j == pos]),
    j running over candidates that are not false negatives; mean over anchors."""
    total = 0.0
    for i in range(anchors.shape[0]):
        p = int(positive_index[i])
        s_pos, denom = None, 0.0
        for j in range(candidates.shape[0]):
            if candidate_ids is not None and j != p:
                if int(candidate_ids[j]) == int(candidate_ids[p]):
                    continue
                if anchor_ids is not None and int(candidate_ids[j]) == int(anchor_ids[i]):
                    continue
            cos = (anchors[i] * candidates[j]).sum() / (anchors[i].norm() * candidates[j].norm())
            s = scale * (cos - (margin if j == p else 0.0))
            if j == p:
                s_pos = s
            denom = denom + torch.exp(s)
        total = total - torch.log(torch.exp(s_pos) / denom)
    return total / anchors.shape[0]


def leaves(*shapes, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(*s, generator=g, dtype=torch.float64).requires_grad_(True) for s in shapes]


def value_and_grads(fn, tensors):
    for t in tensors:
        t.grad = None
    loss = fn()
    grads = torch.autograd.grad(loss, tensors)
    return loss.detach(), grads


def assert_same(fn, ref, tensors):
    v1, g1 = value_and_grads(fn, tensors)
    v2, g2 = value_and_grads(ref, tensors)
    assert torch.allclose(v1, v2, rtol=1e-10, atol=1e-12), (v1, v2)
    for x, y in zip(g1, g2):
        assert torch.allclose(x, y, rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize("scale,margin", [(20.0, 0.2), (1.0, 0.0), (5.0, -0.1)])
def test_square_matches_loop(scale, margin):
    a, c = leaves((6, 8), (6, 8))
    pos = torch.arange(6)
    assert_same(lambda: in_batch_negatives_loss(a, c, pos, scale, margin),
                lambda: loop_loss(a, c, pos, scale, margin), [a, c])
    # positive_index defaults to arange(N)
    assert torch.allclose(in_batch_negatives_loss(a, c, scale=scale, margin=margin),
                          in_batch_negatives_loss(a, c, pos, scale, margin))


def test_permuted_positives_match_loop():
    a, c = leaves((5, 4), (5, 4), seed=1)
    pos = torch.tensor([3, 0, 4, 1, 2])
    assert_same(lambda: in_batch_negatives_loss(a, c, pos), lambda: loop_loss(a, c, pos, 20.0, 0.2), [a, c])


@pytest.mark.parametrize("rank", [0, 1, 2])
def test_gathered_candidates_with_offset_positives(rank):
    n, world = 3, 3
    a, c = leaves((n, 8), (n * world, 8), seed=2)
    pos = torch.arange(n) + rank * n
    assert_same(lambda: in_batch_negatives_loss(a, c, pos), lambda: loop_loss(a, c, pos, 20.0, 0.2), [a, c])


def test_gathered_ranks_average_to_the_full_batch():
    """Mean of per-rank losses (local anchors vs all candidates) == one process on the whole batch."""
    n, world = 3, 3
    a, c = leaves((n * world, 8), (n * world, 8), seed=3)
    full = lambda: in_batch_negatives_loss(a, c)  # noqa: E731
    split = lambda: sum(in_batch_negatives_loss(a[r * n:(r + 1) * n], c, torch.arange(n) + r * n)  # noqa: E731
                        for r in range(world)) / world
    assert_same(split, full, [a, c])


def test_symmetric_matches_loop():
    a, b = leaves((5, 6), (5, 6), seed=4)
    pos = torch.arange(5)
    assert_same(lambda: symmetric_in_batch_negatives_loss(a, b, 20.0, 0.2),
                lambda: (loop_loss(a, b, pos, 20.0, 0.2) + loop_loss(b, a, pos, 20.0, 0.2)) / 2, [a, b])


def test_symmetric_gathered_matches_loop():
    n, world, rank = 2, 3, 1
    a_all, b_all = leaves((n * world, 6), (n * world, 6), seed=5)
    sl = slice(rank * n, rank * n + n)
    pos = torch.arange(n) + rank * n
    ids_a = torch.tensor([10, 11, 12, 13, 10, 14])
    ids_b = torch.tensor([20, 21, 22, 21, 24, 12])
    fn = lambda: symmetric_in_batch_negatives_loss(a_all[sl], b_all[sl], 20.0, 0.2, a_candidates=a_all,  # noqa
                                                   b_candidates=b_all, offset=rank * n, a_ids=ids_a, b_ids=ids_b)
    ref = lambda: (loop_loss(a_all[sl], b_all, pos, 20.0, 0.2, ids_b, ids_a[sl])  # noqa: E731
                   + loop_loss(b_all[sl], a_all, pos, 20.0, 0.2, ids_a, ids_b[sl])) / 2
    assert_same(fn, ref, [a_all, b_all])


def test_duplicate_masking_hand_checked():
    """Anchor [1,0]; candidates: positive [1,0] (cos 1), negative [0,1] (cos 0), and a copy of the
    positive's text [1,0] (cos 1).  scale 1, margin 0.2 -> logits [0.8, 0, 1]; the copy is dropped."""
    a = torch.tensor([[1.0, 0.0]], dtype=torch.float64, requires_grad=True)
    c = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 0.0]], dtype=torch.float64, requires_grad=True)
    pos = torch.tensor([0])
    unmasked = in_batch_negatives_loss(a, c, pos, scale=1.0, margin=0.2)
    assert unmasked.item() == pytest.approx(-0.8 + math.log(math.exp(0.8) + 1 + math.e), abs=1e-12)
    ids = torch.tensor([7, 8, 7])
    masked = in_batch_negatives_loss(a, c, pos, scale=1.0, margin=0.2, candidate_ids=ids)
    assert masked.item() == pytest.approx(-0.8 + math.log(math.exp(0.8) + 1), abs=1e-12)
    masked.backward()
    assert torch.all(c.grad[2] == 0)          # the false negative takes no part
    assert torch.isfinite(c.grad).all() and torch.isfinite(a.grad).all()


def test_duplicate_mask_matches_loop():
    a, c = leaves((4, 5), (8, 5), seed=6)
    pos = torch.tensor([4, 5, 6, 7])
    cand_ids = torch.tensor([1, 2, 3, 4, 1, 5, 5, 9])   # candidate 0 repeats positive 4; 5 and 6 share text
    anchor_ids = torch.tensor([2, 0, 3, 0])             # anchor 0's own text is candidate 1, anchor 2's is 2
    mask = duplicate_mask(pos, cand_ids, anchor_ids)
    expected = torch.zeros(4, 8, dtype=torch.bool)
    expected[0, [0, 1]] = True
    expected[1, 6] = True
    expected[2, [2, 5]] = True
    assert torch.equal(mask, expected)
    assert_same(lambda: in_batch_negatives_loss(a, c, pos, candidate_ids=cand_ids, anchor_ids=anchor_ids),
                lambda: loop_loss(a, c, pos, 20.0, 0.2, cand_ids, anchor_ids), [a, c])
    # unique ids change nothing
    uniq = torch.arange(8)
    assert torch.allclose(in_batch_negatives_loss(a, c, pos, candidate_ids=uniq), in_batch_negatives_loss(a, c, pos))


def test_simcse_duplicate_sentences():
    """SimCSE: the same sentence twice in a batch must not be its own negative."""
    a, c = leaves((4, 6), (4, 6), seed=7)
    ids = torch.tensor([0, 1, 0, 2])
    assert_same(lambda: in_batch_negatives_loss(a, c, candidate_ids=ids, anchor_ids=ids),
                lambda: loop_loss(a, c, torch.arange(4), 20.0, 0.2, ids, ids), [a, c])


def test_float32_and_bad_inputs():
    a, c = torch.randn(4, 8), torch.randn(4, 8)
    loss = in_batch_negatives_loss(a, c)
    assert loss.dtype == torch.float32 and loss.dim() == 0 and torch.isfinite(loss)
    with pytest.raises(ValueError):
        in_batch_negatives_loss(a, c, torch.tensor([0, 1, 2, 4]))
    with pytest.raises(ValueError):
        in_batch_negatives_loss(a, c, torch.tensor([0, 1]))
    with pytest.raises(ValueError):
        in_batch_negatives_loss(a, torch.randn(4, 7))
    with pytest.raises(ValueError):
        in_batch_negatives_loss(a, c, anchor_ids=torch.arange(4))
