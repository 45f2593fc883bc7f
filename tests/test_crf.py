"""CRF head: Viterbi and likelihood against brute force, fp32 under autocast, compaction, reading saved
transitions."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from bertorch.errors import ModelError
from bertorch.model_dir import CRF_WEIGHTS_NAME, HEAD_WEIGHTS_NAME
from bertorch.models.crf import CRFHead, gather_char_positions, viterbi_decode_numpy
from bertorch.models.tagger import load_crf_arrays


def random_head(num_tags, seed):
    torch.manual_seed(seed)
    head = CRFHead(num_tags)
    with torch.no_grad():  # pytorch-crf initialises in ±0.1; spread them so transitions matter
        for p in head.parameters():
            p.normal_(0, 1.0)
    return head


def path_score(em, start, end, trans, path):
    score = start[path[0]] + end[path[-1]] + sum(em[i, t] for i, t in enumerate(path))
    return score + sum(trans[a, b] for a, b in zip(path, path[1:]))


def brute_force(em, start, end, trans):
    """Best path and log partition function by enumerating all K**L paths."""
    paths = list(itertools.product(range(em.shape[1]), repeat=em.shape[0]))
    scores = np.array([path_score(em, start, end, trans, p) for p in paths])
    return list(paths[int(scores.argmax())]), float(np.logaddexp.reduce(scores))


def params(head):
    crf = head.crf
    return [x.detach().double().numpy() for x in (crf.start_transitions, crf.end_transitions, crf.transitions)]


@pytest.mark.parametrize("num_tags", [3, 4])
@pytest.mark.parametrize("seed", range(4))
def test_viterbi_and_nll_match_brute_force_with_varying_lengths(num_tags, seed):
    head = random_head(num_tags, seed)
    start, end, trans = params(head)
    lengths = [5, 1, 3, 4, 2]
    emissions = torch.randn(len(lengths), max(lengths), num_tags)
    mask = torch.arange(max(lengths))[None, :] < torch.tensor(lengths)[:, None]
    tags = torch.randint(0, num_tags, mask.shape).masked_fill(~mask, -100)

    em = emissions.double().numpy()
    truth = [brute_force(em[b, :n], start, end, trans) for b, n in enumerate(lengths)]
    expected_paths = [path for path, _ in truth]

    assert head.crf.decode(emissions, mask=mask) == expected_paths  # pytorch-crf's own Viterbi, the reference
    for b, n in enumerate(lengths):
        assert viterbi_decode_numpy(em[b, :n], start, end, trans) == expected_paths[b]

    gold_scores = [path_score(em[b, :n], start, end, trans, tags[b, :n].tolist()) for b, n in enumerate(lengths)]
    expected_nll = np.mean([log_z - gold for (_, log_z), gold in zip(truth, gold_scores)])
    assert head.nll(emissions, tags, mask).item() == pytest.approx(expected_nll, rel=1e-5)


def test_numpy_viterbi_empty_sequence():
    k = 3
    assert viterbi_decode_numpy(np.zeros((0, k)), np.zeros(k), np.zeros(k), np.zeros((k, k))) == []


def test_minus_100_labels_are_masked_even_if_attention_says_otherwise():
    head = random_head(3, 0)
    emissions = torch.randn(2, 4, 3)
    tags = torch.tensor([[0, 1, 2, -100], [2, -100, -100, -100]])
    full_mask = torch.ones(2, 4, dtype=torch.bool)
    assert head.nll(emissions, tags, full_mask).item() == pytest.approx(head.nll(emissions, tags, tags != -100).item())


def test_mask_with_holes_or_empty_first_position_is_rejected():
    head = random_head(3, 0)
    emissions = torch.randn(1, 4, 3)
    with pytest.raises(ValueError, match="holes"):
        head.nll(emissions, torch.tensor([[0, -100, 1, 2]]), torch.ones(1, 4))
    with pytest.raises(ValueError, match="position 0"):
        head.nll(emissions, torch.tensor([[0, 1, 2, 0]]), torch.tensor([[0, 1, 1, 1]]))


def test_crf_runs_in_fp32_under_bf16_autocast_and_gradients_flow():
    torch.manual_seed(0)
    encoder, head = torch.nn.Linear(8, 5), CRFHead(5)
    hidden = torch.randn(2, 6, 8)
    mask = torch.tensor([[1] * 6, [1] * 4 + [0] * 2], dtype=torch.bool)
    tags = torch.randint(0, 5, (2, 6)).masked_fill(~mask, -100)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        emissions = encoder(hidden)
        assert emissions.dtype == torch.bfloat16
        loss = head.nll(emissions, tags, mask)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    for p in [*encoder.parameters(), *head.parameters()]:
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0


def test_gather_char_positions_picks_the_first_sub_token_of_each_character():
    # Tokens: [CLS] 张 三 in ##g 。 [SEP]  -> characters 张 三 ing 。 (ing is one item of the char list)
    hidden = torch.arange(2 * 7 * 3, dtype=torch.float).view(2, 7, 3)
    first = torch.tensor([[1, 2, 3, 5], [1, 2, 99, 99]])  # padding indices are garbage on purpose
    char_mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]], dtype=torch.bool)
    out = gather_char_positions(hidden, first, char_mask)
    assert out.shape == (2, 4, 3)
    assert torch.equal(out[0], hidden[0, [1, 2, 3, 5]])
    assert torch.equal(out[1, :2], hidden[1, [1, 2]])
    labels = torch.arange(14).view(2, 7)
    assert gather_char_positions(labels, first, char_mask)[0].tolist() == [1, 2, 3, 5]


def test_gather_char_positions_keeps_gradients():
    hidden = torch.randn(1, 5, 4, requires_grad=True)
    out = gather_char_positions(hidden, torch.tensor([[1, 3]]), torch.ones(1, 2, dtype=torch.bool))
    out.sum().backward()
    assert hidden.grad[0, :, 0].tolist() == [0, 1, 0, 1, 0]


def test_transitions_saved_on_their_own_decode_in_numpy_like_pytorch_crf(tmp_path):
    """crf.safetensors (pytorch-crf's parameter names) is read with numpy only, as the ONNX predictor does."""
    head = random_head(4, 3)
    save_file({k: v.contiguous() for k, v in head.crf.state_dict().items()}, str(tmp_path / CRF_WEIGHTS_NAME))
    start, end, trans = load_crf_arrays(str(tmp_path))
    emissions = torch.randn(3, 5, 4)
    mask = torch.tensor([[1] * 5, [1] * 2 + [0] * 3, [1] * 4 + [0]], dtype=torch.bool)
    expected = head.crf.decode(emissions, mask=mask)
    got = [viterbi_decode_numpy(emissions[b, :n].numpy(), start, end, trans) for b, n in enumerate(mask.sum(1).tolist())]
    assert got == expected


def test_a_directory_without_crf_transitions_is_a_clear_error(tmp_path):
    save_file({"classifier.weight": torch.zeros(2, 2)}, str(tmp_path / HEAD_WEIGHTS_NAME))
    with pytest.raises(ModelError, match="no CRF transitions found"):
        load_crf_arrays(str(tmp_path))
