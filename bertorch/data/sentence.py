"""Data for sentence embeddings: unlabelled sentences, STS / scored pairs, (labelled) sentence pairs,
and the training sampler of the in-batch-negatives tasks.

Readers check every line before training starts and report problems as file:line: message: value.
"""
from __future__ import annotations

import math
from collections import deque
from typing import Sequence

from bertorch.data.batching import TrainBatchSampler
from bertorch.data.readers import DataError, TextExample, iter_lines, read_columns
from bertorch.errors import UsageError

PAIR_HINT = " (Sentence-BERT reads text_a\\ttext_b\\tlabel; a single-sentence file cannot train it)"


def read_sentences(path: str) -> list[TextExample]:
    """One sentence a line (SimCSE training data, files to encode). A tab means a pair file was given."""
    examples = []
    for number, line in iter_lines(path):
        if "\t" in line:
            raise DataError(path, number, f"expected one sentence a line, found {line.count(chr(9)) + 1} "
                                          f"tab-separated columns (a pair file? run_batchneg.py reads pairs)", line)
        examples.append(TextExample(line.strip(), line=number))
    if not examples:
        raise DataError(path, None, "no sentences in file")
    return examples


def read_sts(path: str, low: float = 0.0, high: float = 5.0) -> list[TextExample]:
    """STS `a\\tb\\tscore`; the score must be a number in [low, high] (STS-B: 0..5)."""
    examples = []
    for number, (a, b, raw) in read_columns(path, 3, " (STS data is sentence1\\tsentence2\\tscore)"):
        try:
            score = float(raw)
        except ValueError:
            raise DataError(path, number, "score is not a number", raw) from None
        if not math.isfinite(score):
            raise DataError(path, number, "score is not a finite number", raw)
        if not low <= score <= high:
            raise DataError(path, number, f"score outside the declared range {low:g}..{high:g}", raw)
        examples.append(TextExample(a, b, score, number))
    if not examples:
        raise DataError(path, None, "no examples in file")
    return examples


def read_scored_pairs(path: str) -> list[TextExample]:
    """`text_a\\ttext_b\\tscore` with any finite score: 0/1 labels (LCQMC, AFQMC) or graded ones (STS-B's
    0..5). CoSENT ranks by the scores, so only their order matters, not their range."""
    return read_sts(path, -math.inf, math.inf)


def read_labelled_pairs(path: str, labels: Sequence[str]) -> list[TextExample]:
    """`text_a\\ttext_b\\tlabel` with the label among `labels` (Sentence-BERT, NLI)."""
    known = set(labels)
    examples = []
    for number, (a, b, label) in read_columns(path, 3, PAIR_HINT):
        label = label.strip()
        if label not in known:
            raise DataError(path, number, f"label not among {sorted(known)}", label)
        examples.append(TextExample(a, b, label, number))
    if not examples:
        raise DataError(path, None, "no examples in file")
    return examples


def read_pairs(path: str) -> tuple[list[TextExample], int]:
    """Similar pairs `text_a\\ttext_b`, optionally `\\tlabel`: only label-1 rows are kept (a 0 row is not
    a positive pair). Returns the kept pairs and how many label-0 rows were dropped."""
    examples, dropped = [], 0
    for number, line in iter_lines(path):
        fields = line.split("\t")
        if len(fields) not in (2, 3):
            raise DataError(path, number, f"expected text_a\\ttext_b or text_a\\ttext_b\\tlabel, found "
                                          f"{len(fields)} column{'s' if len(fields) > 1 else ''}", line)
        for i, field in enumerate(fields[:2]):
            if not field.strip():
                raise DataError(path, number, f"column {i + 1} is empty", line)
        if len(fields) == 3:
            label = fields[2].strip()
            if label not in ("0", "1"):
                raise DataError(path, number, "the label column must be 0 or 1 (only 1 rows are used)", label)
            if label == "0":
                dropped += 1
                continue
        examples.append(TextExample(fields[0], fields[1], None, number))
    if not examples:
        raise DataError(path, None, "no similar pairs in file (every row has label 0?)")
    return examples, dropped


class ContrastiveBatchSampler(TrainBatchSampler):
    """Training batches for in-batch negatives.

    * A global batch of a single example has no negative (its loss would be a silent 0), and one smaller
      than the world size is wrapped around, repeating texts across ranks: such a trailing batch is
      folded into another batch.
    * With `keys` (the text ids of each example), batches are refilled so that no text appears twice in
      one global batch: a duplicate is a false negative. Examples that clash are deferred to the next
      batch; the number of batches never changes (the trainer plans steps from len()), so in the rare
      case where nothing else is left, a duplicate still goes in and the loss masks it.
    """

    MAX_DEFERRED = 16  # per batch slot: bounds the scan when one text is extremely frequent

    def __init__(self, *args, keys: Sequence[Sequence[int]] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.keys = [frozenset(k) for k in keys] if keys is not None else None
        if len(self.lengths) < 2:
            raise UsageError("in-batch negatives need at least 2 training examples")

    def _size(self) -> int:
        return self.batch_size * self.world_size

    def _min_size(self) -> int:
        return max(2, self.world_size)

    def __len__(self) -> int:
        n, size = len(self.lengths), self._size()
        return math.ceil(n / size) - (1 if 0 < n % size < self._min_size() and n > size else 0)

    def global_batches(self) -> list[list[int]]:
        batches = super().global_batches()
        if self.keys is not None:
            batches = self._without_duplicates([i for b in batches for i in b])
        short = [b for b in batches if len(b) < self._min_size()]
        if short and len(batches) > 1:
            batches = [b for b in batches if len(b) >= self._min_size()]
            batches[-1] = batches[-1] + short[0]
        return batches

    def _without_duplicates(self, order: list[int]) -> list[list[int]]:
        size, pending, batches = self._size(), deque(order), []
        while pending:
            batch, seen, deferred = [], set(), []
            while pending and len(batch) < size and len(deferred) < self.MAX_DEFERRED * size:
                i = pending.popleft()
                if seen.isdisjoint(self.keys[i]):
                    batch.append(i)
                    seen |= self.keys[i]
                else:
                    deferred.append(i)
            while len(batch) < size and deferred:  # nothing clash-free left: fill up, the loss masks it
                batch.append(deferred.pop(0))
            while len(batch) < size and pending:
                batch.append(pending.popleft())
            pending.extendleft(reversed(deferred))
            batches.append(batch)
        return batches
