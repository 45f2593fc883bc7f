"""Batching: length-grouped, shuffled, rank-sharded, resumable batches, and dynamic padding.

Examples are tokenised once before training; a batch is padded only to its own longest example, and
training batches group examples of similar length (fewer pad tokens) while the order of batches stays
random every epoch. The sampler is also how DDP shards data: it builds each *global* batch once and
gives every rank an interleaved slice of it, so N ranks with batch B see exactly the global batches
one process with batch N*B would see.
"""
from __future__ import annotations

import math
from typing import Iterator, Sequence

import torch

from bertorch.errors import UsageError

MEGABATCH_FACTOR = 50  # sort within windows of 50 global batches: most of the padding win, still random
# Under autocast, padded lengths are rounded up to a multiple of this (cli's --pad_to_multiple_of default).
# CPU bf16 matmuls run through oneDNN, which builds and caches a primitive, with its scratch memory, per
# shape; fp16/bf16 tensor cores on CUDA want multiples of 8 as well. In fp32 the extra pad tokens are only cost.
AUTOCAST_PAD_MULTIPLE = 8


class TrainBatchSampler:
    """Yields this rank's list of example indices for each step of an epoch."""

    def __init__(self, lengths: Sequence[int], batch_size: int, rank: int = 0, world_size: int = 1,
                 seed: int = 0, group_by_length: bool = True, shuffle: bool = True):
        if len(lengths) == 0:
            raise UsageError("no training examples")
        self.lengths = list(lengths)
        self.batch_size = batch_size
        self.rank, self.world_size = rank, world_size
        self.seed = seed
        self.group_by_length = group_by_length
        self.shuffle = shuffle
        self.epoch = 0
        self.start_batch = 0  # batches of the current epoch already consumed (resume)

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = epoch, start_batch

    def __len__(self) -> int:
        return math.ceil(len(self.lengths) / (self.batch_size * self.world_size))

    def global_batches(self) -> list[list[int]]:
        """The epoch's global batches, identical on every rank (same seed, same epoch)."""
        n = len(self.lengths)
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(n, generator=g).tolist() if self.shuffle else list(range(n))
        size = self.batch_size * self.world_size
        if self.group_by_length:
            mega = size * MEGABATCH_FACTOR
            order = [i for s in range(0, n, mega)
                     for i in sorted(order[s:s + mega], key=lambda j: -self.lengths[j])]
        batches = [order[s:s + size] for s in range(0, n, size)]
        if self.group_by_length and self.shuffle:
            perm = torch.randperm(len(batches), generator=g).tolist()
            batches = [batches[p] for p in perm]
        if self.group_by_length:
            batches = longest_first(batches, self.lengths)
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.global_batches()[self.start_batch:]:
            yield shard_batch(batch, self.rank, self.world_size)


def longest_first(batches: list[list[int]], lengths: Sequence[int]) -> list[list[int]]:
    """Move the batch holding the longest example to the front: grouped batches put the longest examples
    together, so that batch is the epoch's memory peak -- better to meet it (or run out of memory) in the
    first step than hours in. The other batches keep their random order."""
    first = max(range(len(batches)), key=lambda b: max(lengths[i] for i in batches[b]))
    return [batches[first]] + batches[:first] + batches[first + 1:]


def shard_batch(batch: list[int], rank: int, world_size: int) -> list[int]:
    """Rank `rank`'s interleaved share of a global batch; never empty (short batches wrap around)."""
    if len(batch) < world_size:
        batch = (batch * world_size)[:world_size]
    return batch[rank::world_size]


def eval_shard(lengths: Sequence[int], batch_size: int, rank: int = 0, world_size: int = 1) -> list[list[int]]:
    """This rank's evaluation batches: every example on exactly one rank, no padding duplicates.

    Sorting by length makes batches dense; predictions are gathered with their indices and put back in
    file order, so the shard layout never shows in the results.
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])[rank::world_size]
    return [order[s:s + batch_size] for s in range(0, len(order), batch_size)]


def pad_sequences(seqs: Sequence[Sequence[int]], value: int, length: int | None = None) -> torch.Tensor:
    """(B, length or longest) long tensor, right-padded with `value`."""
    width = length if length is not None else max(len(s) for s in seqs)
    out = torch.full((len(seqs), width), value, dtype=torch.long)
    for row, seq in enumerate(seqs):
        out[row, : len(seq)] = torch.as_tensor(seq, dtype=torch.long)
    return out


def padded_length(longest: int, multiple_of: int = 1, limit: int | None = None) -> int:
    """`longest` rounded up to a multiple of `multiple_of`, but not past `limit` (the model's input limit)
    unless `longest` already is."""
    rounded = -(-longest // multiple_of) * multiple_of
    return max(longest, min(rounded, limit)) if limit is not None else rounded


def collate_encodings(features: Sequence[dict], pad_token_id: int, pad_to: int | None = None) -> dict:
    """Pad input_ids/token_type_ids/attention_mask of tokenised features to one tensor each."""
    batch = {"input_ids": pad_sequences([f["input_ids"] for f in features], pad_token_id, pad_to)}
    batch["attention_mask"] = pad_sequences([[1] * len(f["input_ids"]) for f in features], 0, pad_to)
    if "token_type_ids" in features[0]:
        batch["token_type_ids"] = pad_sequences([f["token_type_ids"] for f in features], 0, pad_to)
    return batch
