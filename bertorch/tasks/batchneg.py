"""Supervised in-batch negatives on similar pairs: each text_a must pick its own text_b among all text_b
of the (gathered) batch; `--mean_loss` also trains b -> a. Continue from a SimCSE or batchneg model with
--init_from_ckpt (domain fine-tuning). Dev: STS-B Spearman/Pearson of cosine."""
from __future__ import annotations

import argparse

from loguru import logger

from bertorch.data.readers import TextExample
from bertorch.data.sentence import read_pairs
from bertorch.tasks.sentence import ContrastiveTask


class BatchNegTask(ContrastiveTask):
    name = "batchneg"

    @classmethod
    def add_args(cls, parser: argparse.ArgumentParser) -> None:
        super().add_args(parser)
        parser.add_argument_group("batchneg").add_argument(
            "--mean_loss", action="store_true", help="average the a->b and b->a losses (both directions learn)")

    @property
    def symmetric(self) -> bool:
        return self.args.mean_loss

    def read_train(self, path: str) -> list[TextExample]:
        examples, dropped = read_pairs(path)
        if dropped:
            logger.info(f"{path}: kept {len(examples)} label-1 pairs, dropped {dropped} label-0 pairs")
        return examples

    def task_info(self) -> dict:
        return {**super().task_info(), "mean_loss": self.args.mean_loss}
