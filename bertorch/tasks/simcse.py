"""Unsupervised SimCSE: every sentence is encoded twice with dropout; the two views are positives and
the other sentences of the (gathered) batch are negatives. Dev: STS-B Spearman/Pearson of cosine."""
from __future__ import annotations

import argparse

from loguru import logger

from bertorch.data.readers import TextExample
from bertorch.data.sentence import read_sentences
from bertorch.errors import UsageError
from bertorch.tasks.sentence import ContrastiveTask

# Dropout attributes of the common encoder configs (BERT/RoBERTa/ELECTRA/ALBERT; DistilBERT).
DROPOUT_ATTRIBUTES = ("hidden_dropout_prob", "attention_probs_dropout_prob", "dropout", "attention_dropout")


class SimCSETask(ContrastiveTask):
    name = "simcse"

    @classmethod
    def add_args(cls, parser: argparse.ArgumentParser) -> None:
        super().add_args(parser)
        parser.add_argument_group("simcse").add_argument(
            "--dropout", type=float, default=0.1,
            help="encoder hidden and attention dropout: the only difference between the two views")

    def read_train(self, path: str) -> list[TextExample]:
        return read_sentences(path)

    def configure(self, config) -> None:
        rate = self.args.dropout
        if not 0.0 <= rate < 1.0:
            raise UsageError(f"--dropout must be in [0, 1), got {rate}")
        names = [n for n in DROPOUT_ATTRIBUTES if hasattr(config, n)]
        if not names:
            logger.warning(f"{config.model_type} config has no known dropout attribute; --dropout ignored")
        for name in names:
            setattr(config, name, rate)
        if rate == 0.0:
            logger.warning("--dropout 0: both views are identical, SimCSE learns nothing useful")
