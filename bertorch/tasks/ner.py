"""Sequence labelling: NER with any tag set in labels.txt, and word segmentation with B/M/E/S.

One prediction per original character, never per sub-token, and documents longer than one window split
into overlapping windows for training and stitched back for evaluation, so every gold tag is scored: the
encoding is `bertorch.data.tagged.encode_documents`, the one the Predictor builds its inputs with.
"""
from __future__ import annotations

import argparse
from collections import defaultdict
from typing import Sequence

import torch
from loguru import logger

from bertorch.data.batching import collate_encodings, pad_sequences
from bertorch.data.readers import read_labels
from bertorch.data.spans import check_label_scheme
from bertorch.data.tagged import TaggedText, encode_documents, read_tagged
from bertorch.losses.classification import IGNORE_INDEX
from bertorch.metrics import sequence_metrics
from bertorch.models.tagger import Tagger, decode_document
from bertorch.model_dir import SPAN_HEADS
from bertorch.tagging import DECODINGS, SCHEMES, decoding_constraints
from bertorch.tasks.base import Task
from bertorch.tasks.classification import labels_of_evaluated_model
from bertorch.tasks.span_ner import SpanNerTask, add_head_args, check_doc_stride, check_head_args, head_of


def decoding_of(args: argparse.Namespace) -> str:
    """How the tagger's scores become tags: "crf" with a CRF, else --decoding (default constrained)."""
    if getattr(args, "use_crf", False):
        return "crf"
    return getattr(args, "decoding", None) or "constrained"


class NerTask(Task):
    name = "ner"
    required_flags = ("label_file",)
    metric_for_best = "f1"
    supports_rdrop = True

    def __new__(cls, args: argparse.Namespace | None = None, env=None):
        """With a span head (--head global_pointer) the task is SpanNerTask: same flags, another model and metric."""
        if cls is NerTask and args is not None and head_of(args) in SPAN_HEADS:
            return SpanNerTask(args, env)
        return super().__new__(cls)

    @classmethod
    def add_args(cls, parser: argparse.ArgumentParser) -> None:
        add_head_args(cls.add_labelling_args(parser))

    @classmethod
    def add_labelling_args(cls, parser: argparse.ArgumentParser):
        """--tag and the tagger's flags, not --head: what a sequence-labelling distillation offers too."""
        g = parser.add_argument_group("sequence labelling")
        g.add_argument("--tag", choices=SCHEMES, default=None,
                       help="tag scheme labels.txt must follow (None: detected from labels.txt)")
        cls.add_tagger_args(g)
        return g

    @classmethod
    def check_args(cls, args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
        """--head against --use_crf; span heads take their entity types from the data when no --label_file."""
        check_head_args(args, parser)
        if args.decoding is not None and args.head != "linear":
            parser.error(f"--decoding {args.decoding} is for the Linear head; --head {args.head} decodes its own way")
        if args.head not in SPAN_HEADS:
            super().check_args(args, parser)

    @classmethod
    def add_tagger_args(cls, g) -> None:
        """The tagger's flags besides --tag (multi-task distillation reads each task's scheme from its teacher)."""
        g.add_argument("--use_crf", action="store_true", help="a CRF over the per-character scores")
        g.add_argument("--crf_learning_rate", type=float, default=None,
                       help="learning rate of the CRF (None: 10x --learning_rate)")
        g.add_argument("--decoding", choices=DECODINGS, default=None,
                       help="tags of a Linear head from its per-character scores: constrained (default), the most "
                            "probable sequence the tag scheme allows (no I-X after O); argmax, each character's "
                            "own best tag. A CRF decodes with its own Viterbi")
        g.add_argument("--doc_stride", type=int, default=32,
                       help="characters shared by consecutive windows of a document longer than one window")

    def setup(self) -> None:
        a = self.args
        label_file = self.data_path(a.label_file)
        self.labels = read_labels(label_file)
        self.scheme = self.check_scheme(label_file)
        self.labels = labels_of_evaluated_model(self, self.labels, label_file)
        check_doc_stride(a)
        train, dev = (self.read_split(split, lambda path: read_tagged(path, self.labels)) for split in ("train", "dev"))
        self.tokenizer = self.load_tokenizer(a.pretrained_model_name_or_path)
        self.train_features = self.featurize(train, "train")
        self.eval_features = self.featurize(dev, "dev")
        self.dev_tags = [e.tags for e in dev]
        self.model = self.build_model()
        self.init_weights(self.model)

    def check_scheme(self, label_file: str) -> str:
        """--tag against labels.txt; the error names the first label that does not fit, with its line."""
        scheme = check_label_scheme(label_file, self.labels, self.args.tag)
        logger.info(f"tag scheme: {scheme} ({len(self.labels)} labels)")
        return scheme

    def featurize(self, examples: list[TaggedText], split: str) -> list[dict]:
        a = self.args
        features = encode_documents(self.tokenizer, [e.chars for e in examples], a.max_seq_length, a.doc_stride)
        ids = {label: i for i, label in enumerate(self.labels)}
        label_ids = [[ids[t] for t in e.tags] for e in examples]
        for f in features:
            f["labels"] = label_ids[f["doc"]][f["start"]:f["start"] + len(f["char_index"])]
        if len(features) > len(examples):
            split_docs = len({f["doc"] for f in features if f["start"] > 0})
            logger.info(f"{split}: {split_docs} of {len(examples)} examples longer than --max_seq_length "
                        f"{a.max_seq_length} split into overlapping windows (--doc_stride {a.doc_stride}): "
                        f"{len(features)} windows in all")
        return features

    def build_model(self) -> Tagger:
        a = self.args
        config, loss_fn = self.labelled_config(), self.hard_label_loss()
        if a.use_crf:
            if a.loss_type != "cross_entropy":
                logger.warning(f"--loss_type {a.loss_type} is ignored with --use_crf: the CRF trains on its "
                               f"own negative log-likelihood")
            logger.info(f"CRF learning rate: {self.crf_learning_rate()}")
        return Tagger.from_pretrained(a.pretrained_model_name_or_path, config, loss_fn, a.use_crf)

    def crf_learning_rate(self) -> float:
        a = self.args
        return a.crf_learning_rate if a.crf_learning_rate is not None else 10 * a.learning_rate

    def lr_overrides(self) -> dict[str, float]:
        return {"crf.": self.crf_learning_rate()} if self.args.use_crf else {}

    def task_info(self) -> dict:
        a = self.args
        return {**super().task_info(), "doc_stride": a.doc_stride, "tag": self.scheme, "use_crf": a.use_crf,
                "head": head_of(a), "decoding": decoding_of(a)}

    def collate(self, features: Sequence[dict]) -> dict[str, torch.Tensor]:
        batch = collate_encodings(features, self.tokenizer.pad_token_id, self.pad_to(features))
        batch["char_index"] = pad_sequences([f["char_index"] for f in features], 0)
        batch["char_mask"] = pad_sequences([[1] * len(f["char_index"]) for f in features], 0).bool()
        if "labels" in features[0]:
            batch["labels"] = pad_sequences([f["labels"] for f in features], IGNORE_INDEX)
        return batch

    def train_stats(self, batch, output):
        if self.args.use_crf:  # the emissions' argmax is not what a CRF predicts
            return {}
        labels = batch["labels"]
        known = labels != IGNORE_INDEX
        return {"accuracy": (((output.logits.argmax(-1) == labels) & known).sum(), known.sum())}

    def rdrop_logits(self, batch, output):
        """Per-character emissions (before the CRF, if any), over the real characters."""
        return output.logits, batch["char_mask"]

    def predict(self, model, batch, output) -> list:
        """Per-window emission scores; decoding waits until windows are stitched into documents."""
        emissions = output.logits.float().cpu().numpy()
        return [emissions[b, :n].copy() for b, n in enumerate(batch["char_mask"].sum(1).tolist())]

    def compute_metrics(self, predictions: list, model: Tagger | None = None) -> dict:
        """Windows stitched into documents, each decoded with the CRF transitions of the model that made
        the predictions (without one, as --decoding says), scored against the gold tags."""
        windows = defaultdict(list)
        for feature, scores in zip(self.eval_features, predictions):
            windows[feature["doc"]].append(((feature["start"], feature["start"] + len(scores)), scores))
        crf = (model or self.model).crf_arrays()
        constraints = decoding_constraints(self.labels, self.scheme, decoding_of(self.args))
        pred = []
        for d, gold in enumerate(self.dev_tags):
            parts = windows[d]
            ids = decode_document(len(gold), [w for w, _ in parts], [s for _, s in parts], crf, constraints)
            pred.append([self.labels[i] for i in ids])
        return sequence_metrics(self.dev_tags, pred, self.scheme)
