"""A linear-chain CRF head over per-character emissions, plus a numpy Viterbi for ONNX inference.

The CRF itself is pytorch-crf's; this module only adds what a BERT tagger needs around it:
fp32 maths under autocast, label masks that tolerate -100, sub-token -> character compaction, and
a torch-free Viterbi decoder, which every prediction path uses: evaluation, the Predictor and ONNX (the
CRF stays outside the exported graph; its transitions are saved in head.safetensors with the model).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torchcrf import CRF

from bertorch.losses.classification import IGNORE_INDEX


def gather_char_positions(token_tensor: torch.Tensor, first_token_index: torch.Tensor,
                          char_mask: torch.Tensor) -> torch.Tensor:
    """(B, T, ...) over sub-tokens -> (B, C, ...) over original characters.

    `first_token_index[b, c]` is the token that represents character c (its first sub-token), so the
    tagger makes exactly one prediction per character. Where `char_mask` is False (padding) the index
    may hold anything; those rows take token 0's values and must be ignored by the caller.
    """
    index = first_token_index.long().masked_fill(~char_mask.bool(), 0)
    trailing = token_tensor.shape[2:]
    index = index.view(*index.shape, *([1] * len(trailing))).expand(*index.shape, *trailing)
    return token_tensor.gather(1, index)


def _check_prefix_mask(mask: torch.Tensor) -> None:
    """pytorch-crf needs every sequence to be a left-aligned run starting at position 0 (both conditions are
    read back from the device together: one host sync per call, not one per condition)."""
    if not mask.size(1):
        return
    first_off, holes = torch.stack(((~mask[:, 0]).any(), (mask[:, 1:] & ~mask[:, :-1]).any())).tolist()
    if first_off:
        raise ValueError("CRF mask must be on at position 0 for every sequence (empty sequence, or "
                         "emissions not compacted to characters with gather_char_positions?)")
    if holes:
        raise ValueError("CRF mask has holes: labels of -100 are only allowed after the last character; "
                         "compact emissions/labels to one position per character first")


class CRFHead(nn.Module):
    """pytorch-crf's `CRF(batch_first=True)`, always computed in fp32.

    Inputs are per *character*, not per sub-token: compact emissions and labels with
    `gather_char_positions` first, so that position 0 is a real character (pytorch-crf requires
    `mask[:, 0]` to be all on) and padding only ever follows the last character.
    """

    def __init__(self, num_tags: int):
        super().__init__()
        self.crf = CRF(num_tags, batch_first=True)

    @property
    def num_tags(self) -> int:
        return self.crf.num_tags

    def nll(self, emissions: torch.Tensor, tags: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Mean negative log-likelihood over sequences; (B, C, K), (B, C) with -100 allowed, (B, C).

        Positions where `tags == -100` are masked out as well; they must trail the real characters.
        """
        mask = mask.bool() & (tags != IGNORE_INDEX)
        _check_prefix_mask(mask)
        # pytorch-crf indexes emissions with every tag, masked or not, so -100 must become a valid id.
        tags = tags.masked_fill(~mask, 0).long()
        # Under bf16/fp16 autocast the forward algorithm's logsumexp loses too much precision.
        with torch.autocast(device_type=emissions.device.type, enabled=False):
            return -self.crf(emissions.float(), tags, mask=mask, reduction="mean")


def viterbi_decode_numpy(emissions: np.ndarray, start: np.ndarray, end: np.ndarray,
                         transitions: np.ndarray) -> list[int]:
    """Best path for one sequence of (L, K) emissions, vectorised over tags.

    Same scoring as pytorch-crf: `transitions[i, j]` is the score of moving from tag i to tag j.
    Lets the ONNX predictor decode without torch (load the arrays with `safetensors.numpy`).
    """
    length = emissions.shape[0]
    if length == 0:
        return []
    score = start + emissions[0]
    backpointers = np.empty((length - 1, emissions.shape[1]), dtype=np.int64)
    for t in range(1, length):
        # candidates[i, j]: best score ending in tag i at t-1, then moving to tag j.
        candidates = score[:, None] + transitions
        backpointers[t - 1] = candidates.argmax(axis=0)
        score = candidates.max(axis=0) + emissions[t]
    best = [int((score + end).argmax())]
    for pointers in backpointers[::-1]:
        best.append(int(pointers[best[-1]]))
    return best[::-1]
