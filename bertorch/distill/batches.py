"""Training batches that never mix groups of examples: labelled and unlabelled (--aux_data_file) ones, or the
tasks of a multi-task run. Each group is batched (and sharded over ranks) by the ordinary sampler; the
batches of all groups are then shuffled together, so groups appear in proportion to their sizes.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Callable, Hashable, Sequence

import torch

from bertorch.data.batching import TrainBatchSampler


class SplitBatchSampler(TrainBatchSampler):
    """The examples of each part (a list of indices) in batches of their own, shuffled together.

    E.g. a batch either has hard labels or has none, so the student's own loss (CE, focal, CRF) applies to
    whole batches unchanged and unlabelled batches skip it; DDP shards each global batch as usual.
    """

    def __init__(self, parts: list[list[int]], lengths: Sequence[int], batch_size: int, rank: int,
                 world_size: int, seed: int, group_by_length: bool):
        super().__init__(lengths, batch_size, rank, world_size, seed, group_by_length)
        self.parts = [(idx, TrainBatchSampler([lengths[i] for i in idx], batch_size, rank, world_size, seed + k,
                                              group_by_length)) for k, idx in enumerate(parts) if idx]

    def __len__(self) -> int:
        return sum(len(sampler) for _, sampler in self.parts)

    def global_batches(self) -> list[list[int]]:
        batches = []
        for idx, sampler in self.parts:
            sampler.set_epoch(self.epoch)
            batches += [[idx[i] for i in batch] for batch in sampler.global_batches()]
        order = torch.randperm(len(batches), generator=torch.Generator().manual_seed(self.seed + self.epoch))
        return [batches[i] for i in order.tolist()]


def grouped_sampler(features: Sequence[dict], lengths: Sequence[int], group: Callable[[dict], Hashable], args,
                    env) -> TrainBatchSampler:
    """Training batches that never mix features of different `group(feature)` (labelled / unlabelled, or
    one task / another); with one group, the plain sampler."""
    groups = defaultdict(list)
    for i, feature in enumerate(features):
        groups[group(feature)].append(i)
    if len(groups) == 1:
        return TrainBatchSampler(lengths, args.batch_size, env.rank, env.world_size, args.seed, args.group_by_length)
    return SplitBatchSampler(list(groups.values()), lengths, args.batch_size, env.rank, env.world_size, args.seed,
                             args.group_by_length)
