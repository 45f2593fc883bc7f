"""What Sentence-BERT, SimCSE and batchneg share: pooling and Matryoshka flags, sentences tokenised once, the
`(batch, num_sent, len)` collate, the bi-encoder, STS evaluation (per Matryoshka prefix too) and the
in-batch-negatives set-up.

Every example is a list of sentences (SimCSE: the same sentence twice, so one forward pass gives two
dropout views; pairs: text_a, text_b). Each distinct text is tokenised once and gets an integer id, which
the no-duplicates sampler and the false-negative mask of the loss use. The saved directory is a
"sentence_embedding" model for every task, so `SentenceEncoder` loads any of them.
"""
from __future__ import annotations

import argparse
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from loguru import logger
from torch import nn

from bertorch.data.batching import collate_encodings
from bertorch.data.readers import TextExample
from bertorch.data.sentence import ContrastiveBatchSampler, read_sts
from bertorch.errors import UsageError
from bertorch.losses.cosent import prefix_cosines
from bertorch.losses.matryoshka import check_dims
from bertorch.metrics import correlation_metrics
from bertorch.models.base import load_config
from bertorch.models.biencoder import BiEncoder, ContrastiveHead
from bertorch.models.pooling import POOLING_MODES
from bertorch.tasks.base import Task
from bertorch.tasks.classification import tokenize_examples

EMBEDDING_TASK = "sentence_embedding"  # the task key of bertorch.json (predictors.base.PREDICTORS), shared by the three


def pair_cosine(embeddings: torch.Tensor, dims: Sequence[int] | None = None) -> list:
    """`(B, 2, E)` -> the B cosines between each example's two sentence vectors; with Matryoshka `dims`, per
    example the list [cosine, cosine over the first dims[0] dimensions, ...]."""
    a, b = embeddings[:, 0].float(), embeddings[:, 1].float()
    if not dims:
        return F.cosine_similarity(a, b, dim=-1).tolist()
    return prefix_cosines(a, b, (None, *dims)).tolist()


def sts_metrics(gold: Sequence[float], cosines: Sequence[float]) -> dict[str, float]:
    """Spearman / Pearson of cosine vs gold, logged as the original bertorch did."""
    metrics = correlation_metrics(gold, cosines)
    logger.info(f"spearman corr: {metrics['spearman']:.4f}, pearson corr: {metrics['pearson']:.4f}")
    return metrics


class SentenceTask(Task):
    name = "sentence"
    metric_for_best = "spearman"

    @classmethod
    def add_args(cls, parser: argparse.ArgumentParser) -> None:
        g = parser.add_argument_group("sentence embedding")
        g.add_argument("--pooling_mode", choices=POOLING_MODES, default="linear",
                       help="sentence vector: linear = [CLS] through the model's pooler (dense+tanh), cls = raw "
                            "[CLS] state, mean = mean of the token states")
        g.add_argument("--output_emb_size", type=int, default=None,
                       help="project sentence vectors to this size; None keeps the model's hidden size")
        g.add_argument("--matryoshka_dims", type=int, nargs="+", default=None,
                       help="Matryoshka: also train these prefixes of the vector (e.g. 512 256 128 64; each at most "
                            "the vector size), the loss summed over them; dev Spearman is reported per prefix")
        g.add_argument("--matryoshka_weights", type=float, nargs="+", default=None,
                       help="the weight of each --matryoshka_dims prefix in the summed loss (default: 1 each)")

    @classmethod
    def check_args(cls, args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
        super().check_args(args, parser)
        try:
            check_dims(args.matryoshka_dims, args.matryoshka_weights)
        except UsageError as e:
            parser.error(str(e))

    def __init__(self, args, env):
        super().__init__(args, env)
        self.text_index: dict[str, int] = {}  # text -> id
        self.token_ids: list[list[int]] = []  # id -> token ids

    # -- data -----------------------------------------------------------------------------------------
    def sentence_ids(self, texts: Sequence[str], split: str) -> list[int]:
        """Ids of `texts` (identical texts share one); texts not seen before are tokenised once."""
        new = [t for t in dict.fromkeys(texts) if t not in self.text_index]
        if new:
            features, truncated = tokenize_examples(self.tokenizer, [TextExample(t) for t in new],
                                                    self.args.max_seq_length)
            for text, feature in zip(new, features):
                self.text_index[text] = len(self.token_ids)
                self.token_ids.append(feature["input_ids"])
            if truncated:
                logger.info(f"{split}: {truncated} of {len(new)} distinct sentences truncated to "
                            f"--max_seq_length {self.args.max_seq_length}")
        return [self.text_index[t] for t in texts]

    def pair_features(self, examples: Sequence[TextExample], split: str) -> list[dict]:
        """`{"sentences": [ids_a, ids_b], "text_ids": [a, b]}` per example; a single text is used twice."""
        n = len(examples)
        ids = self.sentence_ids([e.text_a for e in examples] +
                                [e.text_a if e.text_b is None else e.text_b for e in examples], split)
        return [{"sentences": [self.token_ids[i], self.token_ids[j]], "text_ids": [i, j]}
                for i, j in zip(ids[:n], ids[n:])]

    def sts_features(self, read: Callable[[str], list[TextExample]] = read_sts) -> list[dict]:
        """STS dev data (`a\\tb\\tscore`, 0..5 unless `read` says otherwise) as pair features carrying their
        gold score."""
        examples = self.read_split("dev", read)
        features = self.pair_features(examples, "dev")
        for feature, example in zip(features, examples):
            feature["score"] = example.label
        return features

    # -- batches --------------------------------------------------------------------------------------
    def feature_length(self, feature: dict) -> int:
        return max(len(ids) for ids in feature["sentences"])

    def collate(self, features: Sequence[dict]) -> dict[str, torch.Tensor]:
        """All sentences padded to one length, laid out `(batch, num_sent, len)`."""
        rows = [{"input_ids": ids} for f in features for ids in f["sentences"]]
        flat = collate_encodings(rows, self.tokenizer.pad_token_id, self.pad_to(rows))
        batch = {k: v.view(len(features), -1, v.shape[-1]) for k, v in flat.items()}
        if "label" in features[0]:
            batch["labels"] = torch.tensor([f["label"] for f in features])
        if getattr(self.args, "no_duplicates", False):
            batch["text_ids"] = torch.tensor([f["text_ids"] for f in features])
        return batch

    # -- model ----------------------------------------------------------------------------------------
    def configure(self, config) -> None:
        """Hook: adjust the backbone config before the weights are loaded (dropout, label names)."""

    def check_matryoshka(self) -> None:
        """--matryoshka_dims against the vector size (--output_emb_size, else the model's hidden size), before
        any data is read."""
        if self.args.matryoshka_dims:
            size = self.args.output_emb_size or load_config(self.args.pretrained_model_name_or_path).hidden_size
            check_dims(self.args.matryoshka_dims, self.args.matryoshka_weights, size)

    def build_model(self, make_head: Callable[[int], nn.Module]) -> BiEncoder:
        args = self.args
        config = load_config(args.pretrained_model_name_or_path)
        self.configure(config)
        model = BiEncoder.from_pretrained(args.pretrained_model_name_or_path, config, args.pooling_mode,
                                          args.output_emb_size, make_head)
        self.init_weights(model)
        return model

    def task_info(self) -> dict:
        return {**super().task_info(), "task": EMBEDDING_TASK, "trained_with": self.name,
                "pooling_mode": self.args.pooling_mode, "output_emb_size": self.args.output_emb_size,
                "matryoshka_dims": self.args.matryoshka_dims}  # the prefixes a server may offer

    # -- evaluation (STS by default) ------------------------------------------------------------------
    def predict(self, model, batch, output) -> list:
        return pair_cosine(output.embeddings, self.args.matryoshka_dims)

    def compute_metrics(self, predictions: list, model=None) -> dict[str, float]:
        return self.sts_report([f["score"] for f in self.eval_features], predictions)

    def sts_report(self, gold: Sequence[float], predictions: list) -> dict[str, float]:
        """sts_metrics of the cosines `pair_cosine` gave, and with --matryoshka_dims spearman@<dim> per prefix."""
        dims = self.args.matryoshka_dims
        if not dims:
            return sts_metrics(gold, predictions)
        metrics = sts_metrics(gold, [p[0] for p in predictions])
        for k, dim in enumerate(dims, 1):
            metrics[f"spearman@{dim}"] = correlation_metrics(gold, [p[k] for p in predictions])["spearman"]
        logger.info(", ".join(f"spearman@{dim}: {metrics[f'spearman@{dim}']:.4f}" for dim in dims))
        return metrics


class ContrastiveTask(SentenceTask):
    """In-batch negatives (SimCSE, batchneg): subclasses say how to read the training file."""

    label_head = False  # no labels, no classifier: --label_file, --dropout_rate, --loss_type are not offered
    symmetric = False  # batchneg --mean_loss: average the a->b and b->a losses

    @classmethod
    def add_args(cls, parser: argparse.ArgumentParser) -> None:
        super().add_args(parser)
        g = parser.add_argument_group("in-batch negatives")
        g.add_argument("--margin", type=float, default=0.2,
                       help="subtracted from the positive's cosine: it must beat the negatives by this much")
        g.add_argument("--scale", type=float, default=20.0, help="cosines are multiplied by this (1/temperature)")
        g.add_argument("--gather_negatives", action=argparse.BooleanOptionalAction, default=True,
                       help="under DDP, use the sentences of every rank as negatives (N ranks: N x negatives)")
        g.add_argument("--no_duplicates", action="store_true",
                       help="keep identical texts out of one batch, and mask any left in the loss (false negatives)")

    def read_train(self, path: str) -> list[TextExample]:
        """The training file's examples (its format is the task's)."""
        raise NotImplementedError

    def negatives_per_anchor(self) -> int:
        a, e = self.args, self.env
        return a.batch_size * (e.world_size if a.gather_negatives else 1) - 1

    def setup(self) -> None:
        args = self.args
        if self.negatives_per_anchor() < 1:
            raise UsageError(f"--batch_size {args.batch_size} leaves no in-batch negatives (the other examples "
                             f"of the batch are the negatives); use --batch_size 2 or more")
        self.check_matryoshka()
        self.tokenizer = self.load_tokenizer(args.pretrained_model_name_or_path)
        self.train_features = self.pair_features(self.read_split("train", self.read_train), "train")
        self.eval_features = self.sts_features()
        self.model = self.build_model(lambda size: ContrastiveHead(
            args.scale, args.margin, self.symmetric, args.gather_negatives, args.matryoshka_dims,
            args.matryoshka_weights))
        gathered = args.gather_negatives and self.env.is_distributed
        logger.info(f"negatives per anchor = {self.negatives_per_anchor()} (per-device batch {args.batch_size}"
                    f"{f' x {self.env.world_size} ranks, gathered' if gathered else ''}"
                    f"{', duplicate texts kept out of batches' if args.no_duplicates else ''})")

    def train_sampler(self) -> ContrastiveBatchSampler:
        a, e = self.args, self.env
        keys = [f["text_ids"] for f in self.train_features] if a.no_duplicates else None
        return ContrastiveBatchSampler([self.feature_length(f) for f in self.train_features], a.batch_size,
                                       e.rank, e.world_size, a.seed, a.group_by_length, keys=keys)

    def task_info(self) -> dict:
        return {**super().task_info(), "margin": self.args.margin, "scale": self.args.scale}
