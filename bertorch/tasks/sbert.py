"""Sentence-BERT: text_a and text_b go through one shared encoder separately, and a softmax classifier
over (u, v, |u-v|[, u*v]) learns the label (similar / not, or 3-way NLI). The encoder alone is the
product: the saved model encodes sentences like any SimCSE/batchneg model."""
from __future__ import annotations

import argparse

from bertorch.data.readers import read_labels
from bertorch.data.sentence import read_labelled_pairs
from bertorch.errors import UsageError
from bertorch.metrics import classification_metrics, correlation_metrics
from bertorch.models.biencoder import PairClassifier
from bertorch.tasks.base import accuracy_stats
from bertorch.tasks.sentence import SentenceTask, pair_cosine

BINARY_LABELS = ["0", "1"]


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

    def setup(self) -> None:
        args = self.args
        if args.is_nli and not args.label_file:
            raise UsageError("--is_nli needs --label_file (e.g. cmnli/labels.txt: entailment, neutral, contradiction)")
        self.labels = read_labels(self.data_path(args.label_file)) if args.label_file else BINARY_LABELS
        self.tokenizer = self.load_tokenizer(args.pretrained_model_name_or_path)
        self.train_features, self.eval_features = (self.featurize(split) for split in ("train", "dev"))
        loss_fn = self.hard_label_loss()
        self.model = self.build_model(lambda size: PairClassifier(size, len(self.labels), args.concat_multiply,
                                                                  loss_fn, args.dropout_rate or 0.0))

    def featurize(self, split: str) -> list[dict]:
        examples = self.read_split(split, lambda path: read_labelled_pairs(path, self.labels))
        features = self.pair_features(examples, split)
        label_ids = {label: i for i, label in enumerate(self.labels)}
        for feature, example in zip(features, examples):
            feature["label"] = label_ids[example.label]
        return features

    def configure(self, config) -> None:
        # Real label names in the saved config.json, as every bertorch model directory has.
        config.id2label = dict(enumerate(self.labels))
        config.label2id = {label: i for i, label in enumerate(self.labels)}

    def similarity_labels(self) -> bool:
        """0/1 similarity data: the embedding cosine can also be ranked against the label."""
        return not self.args.is_nli and sorted(self.labels) == BINARY_LABELS

    def train_stats(self, batch, output):
        return accuracy_stats(output.logits, batch["labels"])

    def predict(self, model, batch, output) -> list[tuple[int, float]]:
        return list(zip(output.logits.argmax(-1).tolist(), pair_cosine(output.embeddings)))

    def compute_metrics(self, predictions: list[tuple[int, float]], model=None) -> dict:
        gold = [f["label"] for f in self.eval_features]
        metrics = classification_metrics(gold, [p for p, _ in predictions], self.labels)
        if self.similarity_labels():
            is_similar = [int(self.labels[g]) for g in gold]
            metrics["spearman"] = correlation_metrics(is_similar, [c for _, c in predictions])["spearman"]
        return metrics

    def task_info(self) -> dict:
        return {**super().task_info(), "labels": self.labels, "is_nli": self.args.is_nli,
                "concat_multiply": self.args.concat_multiply}
