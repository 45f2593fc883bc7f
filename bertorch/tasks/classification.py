"""Single-text and text-pair classification (ChnSentiCorp, TNEWS, AFQMC, LCQMC)."""
from __future__ import annotations

import argparse

import torch
from loguru import logger

from bertorch.data.readers import TextExample, read_classification, read_labels
from bertorch.metrics import classification_metrics
from bertorch.models.classifier import SequenceClassifier
from bertorch.tasks.base import Task


def tokenize_examples(tokenizer, examples: list[TextExample], max_length: int) -> tuple[list[dict], int]:
    """Tokenise every example once (batched, fast tokenizer); returns features and the truncated count."""
    if not examples:
        return [], 0
    texts_a = [e.text_a for e in examples]
    texts_b = [e.text_b for e in examples] if examples and examples[0].text_b is not None else None
    enc = tokenizer(texts_a, texts_b, truncation=True, max_length=max_length)
    features, at_limit = [], []
    for i in range(len(examples)):
        feature = {key: enc[key][i] for key in ("input_ids", "token_type_ids") if key in enc}
        features.append(feature)
        if len(feature["input_ids"]) == max_length:
            at_limit.append(i)
    # Only examples that hit the limit can have been cut: re-tokenise just those to count them.
    truncated = 0
    if at_limit:
        full = tokenizer([texts_a[i] for i in at_limit], [texts_b[i] for i in at_limit] if texts_b else None)
        truncated = sum(len(ids) > max_length for ids in full["input_ids"])
    return features, truncated


class ClassificationTask(Task):
    name = "classification"
    required_flags = ("label_file",)
    metric_for_best = "accuracy"

    @classmethod
    def add_args(cls, parser: argparse.ArgumentParser) -> None:
        group = parser.add_argument_group("classification")
        group.add_argument("--is_text_pair", action="store_true",
                           help="text-pair data (text_a\\ttext_b\\tlabel) instead of text\\tlabel")

    def setup(self) -> None:
        args = self.args
        self.labels = read_labels(self.data_path(args.label_file))
        train = self.take(read_classification(self.data_path(args.train_data_file), self.labels,
                                              args.is_text_pair), "train")
        dev = self.take(read_classification(self.data_path(args.dev_data_file), self.labels, args.is_text_pair)
                        if args.dev_data_file else [], "dev")
        self.tokenizer = self.load_tokenizer(args.pretrained_model_name_or_path)
        self.train_features = self.featurize(train, "train")
        self.eval_features = self.featurize(dev, "dev")
        self.model = self.build_model()
        self.init_weights(self.model)

    def featurize(self, examples: list[TextExample], split: str) -> list[dict]:
        features, truncated = tokenize_examples(self.tokenizer, examples, self.args.max_seq_length)
        label_ids = {label: i for i, label in enumerate(self.labels)}
        for feature, example in zip(features, examples):
            feature["label"] = label_ids[example.label]
        if truncated:
            logger.info(f"{split}: {truncated} of {len(examples)} examples truncated to "
                        f"--max_seq_length {self.args.max_seq_length}")
        return features

    def build_model(self) -> SequenceClassifier:
        return SequenceClassifier.from_pretrained(self.args.pretrained_model_name_or_path, self.labelled_config(),
                                                  self.hard_label_loss())

    def task_info(self) -> dict:
        return {**super().task_info(), "is_text_pair": self.args.is_text_pair}

    def train_stats(self, batch, output):
        correct = (output.logits.argmax(-1) == batch["labels"]).sum()
        return {"accuracy": (correct, batch["labels"].numel())}

    def predict(self, model, batch, output) -> list[int]:
        return output.logits.argmax(-1).tolist()

    def compute_metrics(self, predictions: list[int]) -> dict:
        gold = [f["label"] for f in self.eval_features]
        return classification_metrics(gold, predictions, self.labels)
