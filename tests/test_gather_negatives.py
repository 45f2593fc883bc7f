"""Gathered negatives: two gloo ranks under DDP give the loss and gradients of one process on the
concatenated batch (SimCSE and batchneg --mean_loss, with repeated texts masked as false negatives).

The ranks are forked so they inherit the imported modules: about 3 s, where spawn re-imports torch and
transformers in each child (20+ s on a busy 2-core machine). GATHER_TEST_START=spawn checks that path.
"""
from __future__ import annotations

import datetime
import os
import time

import pytest
import torch

from bertorch.models.base import load_config
from bertorch.models.biencoder import BiEncoder, ContrastiveHead

N_PER_RANK, LENGTH, WORLD = 3, 7, 2
START_METHOD = os.environ.get("GATHER_TEST_START", "fork")
TIMEOUT = 120  # seconds; a hung collective fails the test instead of blocking the suite
# case -> (symmetric loss, text ids with repeats: rows 0/4 and 2/3 are the same texts, across ranks)
CASES = {"simcse": (False, None),
         "simcse_repeated": (False, [[0, 0], [1, 1], [2, 2], [2, 2], [0, 0], [5, 5]]),
         "batchneg_mean_repeated": (True, [[0, 10], [1, 11], [2, 12], [2, 12], [0, 10], [5, 11]])}


def make_model(model_dir: str):
    torch.manual_seed(0)  # the same projection on every rank and in the reference
    model = BiEncoder.from_pretrained(model_dir, load_config(model_dir), "mean", 8,
                                      lambda size: ContrastiveHead(scale=5.0, margin=0.2, symmetric=False))
    return model.double().train()


def make_batch(vocab_size: int, text_ids) -> dict:
    """The global batch (2N, 2, L); rows with equal text ids get equal token ids; some rows padded."""
    g = torch.Generator().manual_seed(1)
    n = N_PER_RANK * WORLD
    ids = torch.randint(5, vocab_size, (n, 2, LENGTH), generator=g)
    lengths = torch.randint(3, LENGTH + 1, (n, 2), generator=g)
    if text_ids is not None:
        text_ids = torch.tensor(text_ids)
        seen: dict[int, tuple] = {}
        for row in range(n):
            for col in range(2):
                key = int(text_ids[row, col])
                if key in seen:
                    r, c = seen[key]
                    ids[row, col], lengths[row, col] = ids[r, c], lengths[r, c]
                else:
                    seen[key] = (row, col)
    mask = (torch.arange(LENGTH).view(1, 1, -1) < lengths.unsqueeze(-1)).long()
    batch = {"input_ids": ids.masked_fill(mask == 0, 0), "attention_mask": mask}
    if text_ids is not None:
        batch["text_ids"] = text_ids
    return batch


def loss_and_grads(model, batch, symmetric: bool):
    inner = getattr(model, "module", model)  # DDP-wrapped on the ranks
    inner.head.symmetric = symmetric
    model.zero_grad()
    loss = model(**batch).loss
    loss.backward()
    return loss.detach(), {k: p.grad.clone() for k, p in inner.named_parameters() if p.grad is not None}


def _worker(rank: int, init_file: str, model_dir: str, out_dir: str) -> None:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    torch.set_num_threads(1)  # also keeps a forked child off the parent's OpenMP pool
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD,
                            timeout=datetime.timedelta(seconds=TIMEOUT))
    try:
        model = DDP(make_model(model_dir))
        vocab = model.module.backbone.config.vocab_size
        rows = slice(rank * N_PER_RANK, (rank + 1) * N_PER_RANK)
        results = {}
        for case, (symmetric, text_ids) in CASES.items():
            batch = {k: v[rows] for k, v in make_batch(vocab, text_ids).items()}
            results[case] = loss_and_grads(model, batch, symmetric)
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def run_ranks(worker, tiny_bert: str, tmp_path) -> list:
    """`worker(rank, rendezvous, tiny_bert, out_dir)` on WORLD forked gloo ranks; each saves rank<r>.pt in
    out_dir, returned in rank order. A rank that hangs fails the test after TIMEOUT s instead of the suite."""
    import torch.multiprocessing as mp

    context = mp.start_processes(worker, args=(str(tmp_path / "rendezvous"), tiny_bert, str(tmp_path)),
                                 nprocs=WORLD, join=False, start_method=START_METHOD)
    deadline = time.monotonic() + TIMEOUT
    while not context.join(timeout=1):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail(f"the {WORLD} ranks did not finish within {TIMEOUT} s")
    return [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]


def test_gathered_negatives_equal_one_process_on_concatenated_batch(tiny_bert, tmp_path):
    per_rank = run_ranks(_worker, tiny_bert, tmp_path)
    model = make_model(tiny_bert)
    vocab = model.backbone.config.vocab_size
    for case, (symmetric, text_ids) in CASES.items():
        ref_loss, ref_grads = loss_and_grads(model, make_batch(vocab, text_ids), symmetric)
        # each rank's loss is the mean over its own anchors; DDP averages the gradients over ranks
        mean_loss = sum(r[case][0] for r in per_rank) / WORLD
        assert torch.allclose(mean_loss, ref_loss, rtol=1e-10, atol=1e-12), (case, mean_loss, ref_loss)
        for rank, result in enumerate(per_rank):
            grads = result[case][1]
            assert grads.keys() == ref_grads.keys(), case
            for name, g in grads.items():
                assert torch.allclose(g, ref_grads[name], rtol=1e-8, atol=1e-11), (case, rank, name)


def test_masking_changes_the_loss_when_texts_repeat(tiny_bert):
    """Guards the test above against vacuous cases: the repeats really are masked false negatives."""
    model = make_model(tiny_bert)
    vocab = model.backbone.config.vocab_size
    batch = make_batch(vocab, CASES["simcse_repeated"][1])
    masked = model(**batch).loss
    unmasked = model(**{k: v for k, v in batch.items() if k != "text_ids"}).loss
    assert masked < unmasked - 1e-6


def test_single_example_batch_is_an_error_not_a_zero_loss(tiny_bert):
    model = make_model(tiny_bert)
    batch = {k: v[:1] for k, v in make_batch(model.backbone.config.vocab_size, None).items()}
    with pytest.raises(ValueError, match="single example"):
        model(**batch)
    model.eval()
    assert model(**batch).loss is None  # no in-batch loss on dev data
