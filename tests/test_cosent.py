"""CoSENT: the loss against its double-loop formula (value and gradients), its gathered form under two
gloo ranks against one process on the concatenated batch, and run_sentencebert.py --loss cosent end to end."""
from __future__ import annotations

import datetime
import json
import os

import numpy as np
import pytest
import torch

from bertorch.data.readers import DataError
from bertorch.data.sentence import read_scored_pairs
from bertorch.losses.cosent import cosent_loss, pair_cosent_loss, prefix_cosines
from bertorch.models.base import load_config
from bertorch.models.biencoder import BiEncoder, CoSENTHead, ContrastiveHead
from bertorch.predictors.encoder import SentenceEncoder
from conftest import NEGATIVE, POSITIVE
from run_sentencebert import main as sbert_main
from test_gather_negatives import N_PER_RANK, TIMEOUT, WORLD, make_batch, run_ranks

TEXTS = POSITIVE + NEGATIVE


def loop_cosent(cosines, labels, scale):
    """log(1 + sum over (i, j) with label_i > label_j of exp(scale * (cos_j - cos_i))), term by term."""
    total = torch.ones((), dtype=cosines.dtype)
    for i in range(len(labels)):
        for j in range(len(labels)):
            if labels[i] > labels[j]:
                total = total + torch.exp(scale * (cosines[j] - cosines[i]))
    return torch.log(total)


def leaf(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(*shape, generator=g, dtype=torch.float64) * 2 - 1).requires_grad_(True)


@pytest.mark.parametrize("labels,scale", [([3, 0, 5, 3, 1, 1, 4, 2], 20.0),  # graded with ties (STS-B)
                                          ([1, 0, 0, 1, 1, 0, 1, 0], 20.0),  # 0/1 similarity labels
                                          ([0.2, 0.9, 0.5, 0.5, 0.1, 0.7, 0.3, 0.8], 1.0)])
def test_loss_and_gradients_equal_the_double_loop(labels, scale):
    cosines, labels = leaf(len(labels)), torch.tensor(labels, dtype=torch.float64)
    got = cosent_loss(cosines, labels, scale)
    (g1,) = torch.autograd.grad(got, cosines)
    ref = loop_cosent(cosines, labels, scale)
    (g2,) = torch.autograd.grad(ref, cosines)
    assert torch.allclose(got, ref, rtol=1e-10, atol=1e-12)
    assert torch.allclose(g1, g2, rtol=1e-8, atol=1e-12)


def test_only_the_order_of_the_labels_counts_and_one_label_value_gives_zero():
    cosines, labels = leaf(6), torch.tensor([0.0, 2, 5, 1, 3, 4])
    assert torch.allclose(cosent_loss(cosines, labels), cosent_loss(cosines, torch.exp(labels)))
    same = cosent_loss(cosines, torch.full((6,), 3.0))
    (grad,) = torch.autograd.grad(same, cosines)
    assert same.item() == 0.0 and torch.all(grad == 0)  # log(1 + 0), no nan from the masked pairs
    ordered = torch.tensor([-0.5, 0.0, 0.9, -0.2, 0.3, 0.6])  # cosines sorted as the labels are
    assert cosent_loss(ordered, labels) < cosent_loss(-ordered, labels)


def test_pair_loss_sums_weighted_matryoshka_prefixes_of_renormalised_vectors():
    emb, labels = leaf(5, 2, 8), torch.tensor([0.0, 1, 4, 2, 5])
    dims, weights = [8, 4, 2], [1.0, 0.5, 0.25]
    got = pair_cosent_loss(emb, labels, 10.0, gather=False, dims=dims, weights=weights)
    ref = 0.0
    for d, w in zip(dims, weights):
        a, b = emb[:, 0, :d], emb[:, 1, :d]
        cos = (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1))
        ref = ref + w * loop_cosent(cos, labels, 10.0)
    assert torch.allclose(got, ref, rtol=1e-10)
    assert torch.allclose(pair_cosent_loss(emb, labels, 10.0, gather=False),
                          cosent_loss(prefix_cosines(emb[:, 0], emb[:, 1])[:, 0], labels, 10.0))
    with pytest.raises(ValueError, match="2 sentences"):
        pair_cosent_loss(emb[:, :1], labels, gather=False)


# -- two gloo ranks: the gathered loss is the loss of one process on the concatenated batch ----------------
SCORES = [3.0, 0.0, 5.0, 1.0, 3.0, 4.0]  # the global batch's gold scores; ties across the two ranks
CASES = {"cosent": lambda: CoSENTHead(scale=5.0),
         "cosent_matryoshka": lambda: CoSENTHead(scale=5.0, dims=[8, 4, 2], weights=[1.0, 0.5, 0.5]),
         "simcse_matryoshka": lambda: ContrastiveHead(scale=5.0, margin=0.2, dims=[8, 3])}


def make_model(model_dir: str, case: str):
    torch.manual_seed(0)  # the same projection on every rank and in the reference
    return BiEncoder.from_pretrained(model_dir, load_config(model_dir), "mean", 8,
                                     lambda size: CASES[case]()).double().train()


def loss_and_grads(model, batch):
    model.zero_grad()
    loss = model(**batch).loss
    loss.backward()
    inner = getattr(model, "module", model)
    return loss.detach(), {k: p.grad.clone() for k, p in inner.named_parameters() if p.grad is not None}


def global_batch(vocab_size: int) -> dict:
    return {**make_batch(vocab_size, None), "labels": torch.tensor(SCORES, dtype=torch.float64)}


def _worker(rank: int, init_file: str, model_dir: str, out_dir: str) -> None:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD,
                            timeout=datetime.timedelta(seconds=TIMEOUT))
    try:
        results = {}
        for case in CASES:
            model = DDP(make_model(model_dir, case))
            rows = slice(rank * N_PER_RANK, (rank + 1) * N_PER_RANK)
            batch = {k: v[rows] for k, v in global_batch(model.module.backbone.config.vocab_size).items()}
            results[case] = loss_and_grads(model, batch)
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_two_ranks_equal_one_process_on_the_concatenated_batch(tiny_bert, tmp_path):
    per_rank = run_ranks(_worker, tiny_bert, tmp_path)
    for case in CASES:
        model = make_model(tiny_bert, case)
        ref_loss, ref_grads = loss_and_grads(model, global_batch(model.backbone.config.vocab_size))
        losses = [r[case][0] for r in per_rank]
        if case.startswith("cosent"):  # one ranking of all the pairs: every rank holds the whole loss
            assert all(torch.allclose(loss, ref_loss, rtol=1e-10) for loss in losses), (case, losses, ref_loss)
        else:  # in-batch negatives: each rank's loss is the mean over its own anchors
            assert torch.allclose(sum(losses) / WORLD, ref_loss, rtol=1e-10), case
        for rank, result in enumerate(per_rank):
            grads = result[case][1]
            assert grads.keys() == ref_grads.keys(), case
            for name, g in grads.items():
                assert torch.allclose(g, ref_grads[name], rtol=1e-8, atol=1e-11), (case, rank, name)


# -- run_sentencebert.py --loss cosent -------------------------------------------------------------------
def write(path, lines) -> str:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return str(path)


@pytest.fixture
def scored(tmp_path):
    shifted = TEXTS[1:] + TEXTS[:1]
    return write(tmp_path / "sts.txt", [f"{a}\t{b}\t{i % 6}" for i, (a, b) in enumerate(zip(TEXTS, shifted))])


def cosent_args(model, out, data, *extra):
    return ["--pretrained_model_name_or_path", model, "--saved_dir", str(out), "--max_steps", "3", "--batch_size",
            "4", "--logging_steps", "1", "--save_steps", "0", "--train_data_file", data, "--dev_data_file", data,
            "--loss", "cosent", "--pooling_mode", "mean", "--learning_rate", "1e-3", *extra]


def test_sentencebert_cosent_end_to_end_with_matryoshka(tiny_bert, scored, tmp_path, capsys):
    out = tmp_path / "cosent"
    results = sbert_main(cosent_args(tiny_bert, out, scored, "--matryoshka_dims", "32", "16", "8",
                                     "--cosent_scale", "10"))
    log = capsys.readouterr().err
    assert "spearman@16: " in log and "spearman@8: " in log
    for key in ("final_spearman", "final_spearman@32", "final_spearman@16", "final_spearman@8"):
        assert np.isfinite(results[key]), key
    assert results["final_spearman@32"] == pytest.approx(results["final_spearman"])  # 32: the whole vector
    assert "best_spearman" in results and "final_accuracy" not in results
    assert not os.path.exists(out / "head.safetensors")  # no classifier
    info = json.load(open(out / "bertorch.json"))
    assert info["loss"] == "cosent" and info["matryoshka_dims"] == [32, 16, 8] and "labels" not in info
    assert SentenceEncoder.from_pretrained(str(out)).encode(TEXTS[:2], dimensions=8).shape == (2, 8)


def test_cosent_trains_the_ranking(tiny_bert, tmp_path):
    """A few full-batch steps on 0/1 pairs raise the dev Spearman of the cosine (here the train pairs)."""
    pairs = write(tmp_path / "pairs.txt", [f"{a}\t{b}\t1" for a, b in zip(POSITIVE, POSITIVE[1:] + POSITIVE[:1])]
                  + [f"{a}\t{b}\t0" for a, b in zip(POSITIVE, NEGATIVE)])
    before = sbert_main(cosent_args(tiny_bert, tmp_path / "before", pairs, "--no-do_train"))["final_spearman"]
    after = sbert_main(cosent_args(tiny_bert, tmp_path / "after", pairs, "--batch_size", "16", "--max_steps", "8",
                                   "--learning_rate", "3e-3"))["final_spearman"]
    assert after > before + 0.2, (before, after)


@pytest.mark.parametrize("extra,message", [
    (["--is_nli"], "--loss cosent has no classifier over labels: --is_nli"),
    (["--concat_multiply", "--loss_type", "focal"], "--concat_multiply, --loss_type cannot be used"),
    (["--metric_for_best", "macro_f1"], "--loss cosent has no classifier over labels: --metric_for_best cannot"),
    (["--loss", "softmax", "--matryoshka_dims", "16"], "--matryoshka_dims needs --loss cosent"),
    (["--matryoshka_dims", "16", "16"], "--matryoshka_dims 16 16: give distinct positive sizes"),
    (["--matryoshka_dims", "16", "8", "--matryoshka_weights", "1"], "gives 1 weights for 2 --matryoshka_dims"),
    (["--matryoshka_dims", "64", "16"], "--matryoshka_dims 64 is over the embedding size 32"),
    (["--batch_size", "1"], "--batch_size 1 on 1 process(es) leaves nothing to rank"),
])
def test_flags_that_cannot_work_are_one_line_errors(tiny_bert, scored, tmp_path, extra, message, capsys):
    with pytest.raises(SystemExit) as e:
        sbert_main(cosent_args(tiny_bert, tmp_path / "bad", scored, *extra))
    text = str(e.value) + capsys.readouterr().err
    assert message in text and "Traceback" not in text


def test_scored_pairs_take_any_finite_score_and_name_the_bad_line(tmp_path):
    examples = read_scored_pairs(write(tmp_path / "ok.txt", ["甲\t乙\t-1.5", "丙\t丁\t12"]))
    assert [e.label for e in examples] == [-1.5, 12.0]
    for raw in ("nan", "inf"):
        with pytest.raises(DataError, match=rf"bad.txt:2: score is not a finite number: '{raw}'"):
            read_scored_pairs(write(tmp_path / "bad.txt", ["甲\t乙\t1", f"丙\t丁\t{raw}"]))
