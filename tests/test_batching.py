"""The training sampler: every example once per epoch, ranks disjoint, same global batches at any world
size, fewer pad tokens with length grouping, resumable mid-epoch; eval shards cover the set once."""
import random

from bertorch.data.batching import TrainBatchSampler, eval_shard, pad_sequences, padded_length

_rng = random.Random(0)
LENGTHS = [_rng.randint(3, 120) for _ in range(203)]


def epoch_batches(world, batch, epoch=0, **kw):
    per_rank = []
    for rank in range(world):
        s = TrainBatchSampler(LENGTHS, batch, rank, world, seed=5, **kw)
        s.set_epoch(epoch)
        per_rank.append(list(s))
    return per_rank


def test_every_example_once_and_ranks_disjoint():
    ranks = epoch_batches(world=2, batch=8)
    assert len(ranks[0]) == len(ranks[1])  # equal step counts, or DDP would hang
    seen = [i for rank in ranks for b in rank for i in b]
    assert sorted(set(seen)) == list(range(len(LENGTHS)))
    # only the last global batch may wrap around to fill an empty rank
    assert len(seen) - len(set(seen)) <= 1


def test_two_ranks_see_the_global_batches_of_one_process():
    one = epoch_batches(world=1, batch=16)[0]
    two = epoch_batches(world=2, batch=8)
    for step, batch in enumerate(one):
        merged = set(two[0][step]) | set(two[1][step])
        assert merged == set(batch)


def test_length_grouping_cuts_padding_and_epochs_differ():
    def padded(batches):
        return sum(max(LENGTHS[i] for i in b) * len(b) for b in batches)
    grouped = epoch_batches(1, 16)[0]
    plain = epoch_batches(1, 16, group_by_length=False)[0]
    assert padded(grouped) < 0.8 * padded(plain)
    assert epoch_batches(1, 16, epoch=1)[0] != grouped


def test_resume_skips_consumed_batches():
    s = TrainBatchSampler(LENGTHS, 8, seed=5)
    s.set_epoch(3)
    full = list(s)
    s.set_epoch(3, start_batch=5)
    assert list(s) == full[5:]


def test_eval_shards_cover_everything_once():
    shards = [i for rank in range(3) for b in eval_shard(LENGTHS, 7, rank, 3) for i in b]
    assert sorted(shards) == list(range(len(LENGTHS)))


def test_pad_sequences():
    assert pad_sequences([[1, 2], [3]], 0).tolist() == [[1, 2], [3, 0]]
    assert pad_sequences([[1]], 9, length=3).tolist() == [[1, 9, 9]]


def test_the_longest_example_comes_first_with_grouping_only():
    longest = max(range(len(LENGTHS)), key=LENGTHS.__getitem__)
    for epoch in range(3):
        assert longest in epoch_batches(1, 16, epoch=epoch)[0][0]  # the epoch's memory peak, met at step 1
    plain = [epoch_batches(1, 16, epoch=e, group_by_length=False)[0][0] for e in range(3)]
    assert not all(longest in b for b in plain)  # the baseline's order stays purely random


def test_padded_length_rounds_up_but_not_past_the_limit():
    assert [padded_length(n, 8, 128) for n in (1, 8, 9, 121, 127, 128)] == [8, 8, 16, 128, 128, 128]
    assert padded_length(130, 8, 128) == 130  # already past the limit (a window's specials): unchanged
    assert padded_length(45, 8, 50) == 48 and padded_length(49, 8, 50) == 50
    assert [padded_length(n, 1, 128) for n in (1, 77)] == [1, 77]
