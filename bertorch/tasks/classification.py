"""Single-text and text-pair classification (ChnSentiCorp, TNEWS, AFQMC, LCQMC)."""
from __future__ import annotations

import argparse
import os

import numpy as np
from loguru import logger

from bertorch.data.readers import DataError, TextExample, read_classification, read_labels
from bertorch.metrics import classification_metrics
from bertorch.model_dir import saved_label_order
from bertorch.models.classifier import SequenceClassifier
from bertorch.tasks.base import Task, accuracy_stats


TOKENIZE_CHUNK = 4096  # texts per tokenizer call: bounds the tokenizer's transient memory on big files


def tokenize_examples(tokenizer, examples: list[TextExample], max_length: int) -> tuple[list[dict], int]:
    """Tokenise every example once (batched, fast tokenizer); returns features and the truncated count.

    Token ids are kept as numpy arrays (int32 ids, int8 segment ids), not Python lists of ints: 243k
    SimCSE sentences take ~30 MB instead of ~400 MB, and chunked calls keep the tokenizer's peak small."""
    features, truncated = [], 0
    for start in range(0, len(examples), TOKENIZE_CHUNK):
        chunk = examples[start:start + TOKENIZE_CHUNK]
        texts_a = [e.text_a for e in chunk]
        texts_b = [e.text_b for e in chunk] if chunk[0].text_b is not None else None
        enc = tokenizer(texts_a, texts_b, truncation=True, max_length=max_length, return_attention_mask=False)
        at_limit = []
        for i, ids in enumerate(enc["input_ids"]):
            feature = {"input_ids": np.asarray(ids, dtype=np.int32)}
            if "token_type_ids" in enc:
                feature["token_type_ids"] = np.asarray(enc["token_type_ids"][i], dtype=np.int8)
            features.append(feature)
            if len(ids) == max_length:
                at_limit.append(i)
        # Only examples that hit the limit can have been cut: re-tokenise just those to count them. verbose=False:
        # untruncated on purpose, so transformers' "Token indices sequence length is longer than the specified
        # maximum" warning would be wrong (the texts are cut to max_length above, and the count is logged).
        if at_limit:
            full = tokenizer([texts_a[i] for i in at_limit], [texts_b[i] for i in at_limit] if texts_b else None,
                             return_attention_mask=False, return_token_type_ids=False, verbose=False)
            truncated += sum(len(ids) > max_length for ids in full["input_ids"])
    return features, truncated


def labels_of_evaluated_model(task: Task, labels: list[str], label_file: str) -> list[str]:
    """--no-do_train: a saved model predicts the ids of its own id2label, so labels.txt's labels are scored in the
    model's order (a warning says so when they differ), and a label the model lacks is an error. Training (or
    weights from a file, which has no id2label): labels.txt's order."""
    a = task.args
    if task.do_train or (a.init_from_ckpt and not os.path.isdir(a.init_from_ckpt)):
        return labels
    model = a.init_from_ckpt or a.pretrained_model_name_or_path
    order = saved_label_order(model)
    if order is None or order == labels:
        return labels
    missing = [label for label in labels if label not in order]
    if missing:
        raise DataError(label_file, None, f"label not among the {len(order)} labels of the evaluated model {model} "
                                          f"(its id2label: {order})", missing[0])
    extra = [label for label in order if label not in labels]
    logger.warning(f"{label_file} lists the labels as {labels}, the evaluated model {model} as {order} (its "
                   f"id2label): scored in the model's order, the one its predictions use"
                   + (f", with its labels {extra} that {label_file} lacks" if extra else ""))
    return order


METRICS_FOR_BEST = ("accuracy", "macro_f1")  # what classification_metrics() reports, greater is better


def add_metric_for_best(group, default: str | None = "accuracy") -> None:
    """--metric_for_best of the tasks that classify labels (classification, Sentence-BERT's softmax)."""
    group.add_argument("--metric_for_best", choices=METRICS_FOR_BEST, default=default,
                       help="the dev metric that picks best/ (--save_best_model) and the best_* results "
                            "(default: accuracy); macro_f1 where one label dominates (AFQMC: 69%% of pairs are "
                            "label 0, and the first, majority-voting model has the best accuracy)")


class ClassificationTask(Task):
    name = "classification"
    required_flags = ("label_file",)
    metric_for_best = "accuracy"
    supports_rdrop = True

    @classmethod
    def add_args(cls, parser: argparse.ArgumentParser) -> None:
        group = parser.add_argument_group("classification")
        group.add_argument("--is_text_pair", action="store_true",
                           help="text-pair data (text_a\\ttext_b\\tlabel) instead of text\\tlabel")
        add_metric_for_best(group)

    def __init__(self, args: argparse.Namespace, env) -> None:
        super().__init__(args, env)
        self.metric_for_best = getattr(args, "metric_for_best", "accuracy")  # an inner task's parser may lack it

    def setup(self) -> None:
        args = self.args
        label_file = self.data_path(args.label_file)
        self.labels = labels_of_evaluated_model(self, read_labels(label_file), label_file)
        train, dev = (self.read_split(split, lambda path: read_classification(path, self.labels, args.is_text_pair))
                      for split in ("train", "dev"))
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
        return accuracy_stats(output.logits, batch["labels"])

    def rdrop_logits(self, batch, output):
        return output.logits, None

    def predict(self, model, batch, output) -> list[int]:
        return output.logits.argmax(-1).tolist()

    def compute_metrics(self, predictions: list[int], model=None) -> dict:
        gold = [f["label"] for f in self.eval_features]
        return classification_metrics(gold, predictions, self.labels)
