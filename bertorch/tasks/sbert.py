"""Sentence-BERT: text_a and text_b go through one shared encoder separately, and a softmax classifier
over (u, v, |u-v|[, u*v]) learns the label (similar / not, or 3-way NLI). The encoder alone is the
product: the saved model encodes sentences like any SimCSE/batchneg model.

`--loss cosent` trains the cosine itself instead (CoSENT, `losses/cosent.py`): no classifier, the pairs
of the (gathered) batch ranked by their 0/1 labels or graded scores (STS-B train: text_a\\ttext_b\\tscore);
dev is scored pairs too, and the best model is the best Spearman. Matryoshka prefixes train with it."""
from __future__ import annotations

import argparse

from bertorch.data.readers import read_labels
from bertorch.data.sentence import read_labelled_pairs, read_scored_pairs
from bertorch.errors import UsageError
from bertorch.metrics import classification_metrics, correlation_metrics
from bertorch.models.biencoder import CoSENTHead, PairClassifier
from bertorch.tasks.base import accuracy_stats
from bertorch.tasks.classification import add_metric_for_best
from bertorch.tasks.sentence import SentenceTask, pair_cosine

BINARY_LABELS = ["0", "1"]
LOSSES = ("softmax", "cosent")


class SentenceBertTask(SentenceTask):
    name = "sentencebert"
    metric_for_best = "accuracy"

    @classmethod
    def add_args(cls, parser: argparse.ArgumentParser) -> None:
        super().add_args(parser)
        g = parser.add_argument_group("sentence-bert")
        g.add_argument("--is_nli", action="store_true",
                       help="NLI data (entailment/neutral/contradiction from --label_file) instead of 0/1 similarity")
        g.add_argument("--concat_multiply", action="store_true",
                       help="classifier input (u, v, |u-v|, u*v) instead of (u, v, |u-v|)")
        g.add_argument("--loss", choices=LOSSES, default="softmax",
                       help="softmax: a classifier over (u, v, |u-v|) learns the label; cosent: the cosines of all "
                            "pairs are ranked as their labels or scores are (text_a\\ttext_b\\tscore, 0/1 or graded)")
        g.add_argument("--cosent_scale", type=float, default=20.0,
                       help="--loss cosent: cosines are multiplied by this (1/temperature)")
        add_metric_for_best(g, default=None)  # None: accuracy, or with --loss cosent dev Spearman

    @classmethod
    def check_args(cls, args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
        """Flags that the chosen loss would silently ignore are refused."""
        super().check_args(args, parser)
        if args.loss == "cosent":
            ignored = [flag for flag, given in (
                ("--is_nli", args.is_nli), ("--concat_multiply", args.concat_multiply),
                ("--label_file", args.label_file), ("--dropout_rate", args.dropout_rate is not None),
                ("--loss_type", args.loss_type != "cross_entropy"),
                ("--metric_for_best", args.metric_for_best is not None)) if given]
            if ignored:
                parser.error(f"--loss cosent has no classifier over labels: {', '.join(ignored)} cannot be used "
                             f"with it")
        elif args.matryoshka_dims:
            parser.error("--matryoshka_dims needs --loss cosent here: the softmax classifier reads the whole vector")

    def __init__(self, args, env):
        super().__init__(args, env)
        self.cosent = args.loss == "cosent"
        if self.cosent:
            self.metric_for_best = "spearman"
        elif getattr(args, "metric_for_best", None):  # an inner task's parser may lack it
            self.metric_for_best = args.metric_for_best

    def setup(self) -> None:
        if self.cosent:
            return self.setup_cosent()
        args = self.args
        if args.is_nli and not args.label_file:
            raise UsageError("--is_nli needs --label_file (e.g. cmnli/labels.txt: entailment, neutral, contradiction)")
        self.labels = read_labels(self.data_path(args.label_file)) if args.label_file else BINARY_LABELS
        self.tokenizer = self.load_tokenizer(args.pretrained_model_name_or_path)
        self.train_features, self.eval_features = (self.featurize(split) for split in ("train", "dev"))
        loss_fn = self.hard_label_loss()
        self.model = self.build_model(lambda size: PairClassifier(size, len(self.labels), args.concat_multiply,
                                                                  loss_fn, args.dropout_rate or 0.0))

    def setup_cosent(self) -> None:
        args, env = self.args, self.env
        if args.batch_size * env.world_size < 2:
            raise UsageError(f"--loss cosent ranks the pairs of a batch against each other: --batch_size "
                             f"{args.batch_size} on {env.world_size} process(es) leaves nothing to rank; use 2 or more")
        self.check_matryoshka()
        self.tokenizer = self.load_tokenizer(args.pretrained_model_name_or_path)
        examples = self.read_split("train", read_scored_pairs)
        self.train_features = self.pair_features(examples, "train")
        for feature, example in zip(self.train_features, examples):
            feature["label"] = example.label
        self.eval_features = self.sts_features(read_scored_pairs)
        self.model = self.build_model(lambda size: CoSENTHead(args.cosent_scale, True, args.matryoshka_dims,
                                                              args.matryoshka_weights))

    def featurize(self, split: str) -> list[dict]:
        examples = self.read_split(split, lambda path: read_labelled_pairs(path, self.labels))
        features = self.pair_features(examples, split)
        label_ids = {label: i for i, label in enumerate(self.labels)}
        for feature, example in zip(features, examples):
            feature["label"] = label_ids[example.label]
        return features

    def configure(self, config) -> None:
        # Real label names in the saved config.json, as every bertorch model directory has.
        if not self.cosent:
            config.id2label = dict(enumerate(self.labels))
            config.label2id = {label: i for i, label in enumerate(self.labels)}

    def similarity_labels(self) -> bool:
        """0/1 similarity data: the embedding cosine can also be ranked against the label."""
        return not self.args.is_nli and sorted(self.labels) == BINARY_LABELS

    def train_stats(self, batch, output):
        return {} if self.cosent else accuracy_stats(output.logits, batch["labels"])

    def predict(self, model, batch, output) -> list:
        if self.cosent:
            return super().predict(model, batch, output)
        return list(zip(output.logits.argmax(-1).tolist(), pair_cosine(output.embeddings)))

    def compute_metrics(self, predictions: list, model=None) -> dict:
        if self.cosent:
            return super().compute_metrics(predictions, model)
        gold = [f["label"] for f in self.eval_features]
        metrics = classification_metrics(gold, [p for p, _ in predictions], self.labels)
        if self.similarity_labels():
            is_similar = [int(self.labels[g]) for g in gold]
            metrics["spearman"] = correlation_metrics(is_similar, [c for _, c in predictions])["spearman"]
        return metrics

    def task_info(self) -> dict:
        if self.cosent:
            return {**super().task_info(), "loss": "cosent", "cosent_scale": self.args.cosent_scale}
        return {**super().task_info(), "loss": "softmax", "labels": self.labels, "is_nli": self.args.is_nli,
                "concat_multiply": self.args.concat_multiply}
