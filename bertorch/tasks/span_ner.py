"""Span NER: `run_ner.py --head global_pointer` (or efficient_global_pointer). Same flags as the tagger, another
model (`models/global_pointer.py`), data (`data/spans.py`: span JSON lines, CLUENER, or the taggers' tag files)
and metric (exact-span P/R/F1, `metrics.span_metrics`).

`NerTask` (tasks/ner.py) reads the flags defined here and becomes this task when the head scores spans; this
module does not import it, so the two never import each other.
"""
from __future__ import annotations

import argparse
import os
from collections import defaultdict
from typing import Sequence

import torch
from loguru import logger

from bertorch.data.batching import collate_encodings, pad_sequences
from bertorch.data.spans import SpanText, read_span_labels, read_spans, types_of
from bertorch.data.tagged import encode_documents
from bertorch.errors import UsageError
from bertorch.metrics import span_metrics
from bertorch.model_dir import SPAN_HEADS, TASK_FILE, read_task_info
from bertorch.models.base import load_config
from bertorch.models.global_pointer import DEFAULT_HEAD_SIZE, SpanNer
from bertorch.tagging import merge_window_spans
from bertorch.tasks.base import Task

HEADS = ("linear", "crf", *SPAN_HEADS)


def add_head_args(g) -> None:
    """--head and the span head's size (the tagger's --use_crf stays: it is --head crf)."""
    g.add_argument("--head", choices=HEADS, default=None,
                   help="linear: a tag per character (argmax); crf: tags with a CRF (same as --use_crf); "
                        "global_pointer: a score for every (start, end, type), so entities may nest; "
                        "efficient_global_pointer: the same with one shared projection plus a per-type bias "
                        "(far fewer parameters); their entity types come from --label_file (types or tags, one "
                        "a line), else from the training data. Span heads hold a float per span and type: "
                        "--max_seq_length L with K types costs L x L x K x 4 B per example (128 x 128 x 8 x 4 B "
                        "= 0.5 MB; 512 tokens: 8 MB), a few such tensors while training (loss and gradient), on "
                        "top of the encoder (default: linear, or crf with --use_crf)")
    g.add_argument("--gp_head_size", type=int, default=DEFAULT_HEAD_SIZE,
                   help="span heads: size of each start/end vector (RoPE-rotated, so even)")


def head_of(args: argparse.Namespace) -> str:
    """The head a namespace asks for: --head, else crf with --use_crf, else linear."""
    head = getattr(args, "head", None)
    return head or ("crf" if getattr(args, "use_crf", False) else "linear")


def check_head_args(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """Conflicting head flags are one error; afterwards `args.head` is set and `args.use_crf` is `head == crf`.
    Evaluating a saved span model (--no-do_train), its head and head size are the saved ones."""
    saved = saved_span_info(args)
    if saved and getattr(args, "head", None) is None and not getattr(args, "use_crf", False):
        args.head = saved["head"]
    head = head_of(args)
    if getattr(args, "use_crf", False) and head != "crf":
        parser.error(f"--use_crf is --head crf: it cannot go with --head {head}")
    if saved and head != saved["head"]:
        parser.error(f"--head {head}: the model evaluated was trained with --head {saved['head']}")
    if saved:
        args.gp_head_size = int(saved.get("gp_head_size", DEFAULT_HEAD_SIZE))
    if head in SPAN_HEADS:
        if args.gp_head_size < 2 or args.gp_head_size % 2:
            parser.error(f"--gp_head_size must be an even number >= 2 (RoPE rotates pairs), got {args.gp_head_size}")
        if getattr(args, "rdrop_alpha", 0.0):
            parser.error(f"--rdrop_alpha compares per-character distributions; --head {head} scores spans with "
                         f"independent logits and has none")
    args.head, args.use_crf = head, head == "crf"


def saved_span_info(args: argparse.Namespace) -> dict:
    """bertorch.json of the span model an evaluation-only run evaluates; {} when training or for other models."""
    source = getattr(args, "init_from_ckpt", None) or args.pretrained_model_name_or_path
    if getattr(args, "do_train", True) or not os.path.isfile(os.path.join(source, TASK_FILE)):
        return {}
    info = read_task_info(source)
    return info if info.get("head") in SPAN_HEADS else {}


def check_doc_stride(args: argparse.Namespace) -> None:
    """Windows must move forward: the characters two windows share are fewer than one window holds."""
    if not 0 <= args.doc_stride < args.max_seq_length - 2:
        raise UsageError(f"--doc_stride must be in [0, --max_seq_length - 2 = {args.max_seq_length - 2}), "
                         f"got {args.doc_stride}")


class SpanNerTask(Task):
    name = "ner"
    metric_for_best = "f1"

    def setup(self) -> None:
        a = self.args
        check_doc_stride(a)
        self.labels, tags, scheme = self.entity_types()
        read = lambda path: read_spans(path, self.labels, tags, scheme)  # noqa: E731
        train = self.read_split("train", read)
        if self.labels is None:  # the types of the training data; dev entities must be among them
            self.labels = types_of(train)
            logger.info(f"entity types from {a.train_data_file} (no --label_file): {', '.join(self.labels)}")
            read = lambda path: read_spans(path, self.labels, None, a.tag)  # noqa: E731
        dev = self.read_split("dev", read)
        if not self.labels:
            raise UsageError(f"no entities in {a.train_data_file}: give --label_file with the entity types")
        self.tokenizer = self.load_tokenizer(a.pretrained_model_name_or_path)
        self.train_features = self.featurize(train, "train")
        self.eval_features = self.featurize(dev, "dev")
        self.dev_spans = [[(t, s, e) for s, e, t in d.entities] for d in dev]
        self.dev_lengths = [len(d.chars) for d in dev]
        self.model = self.build_model()
        self.init_weights(self.model)

    def entity_types(self):
        """(types, tags, scheme): from --label_file (entity types, or tags), else from the saved model being
        evaluated, else None (the training data's types, sorted)."""
        a = self.args
        if a.label_file:
            types, tags, scheme = read_span_labels(self.data_path(a.label_file), a.tag)
            logger.info(f"entity types from {a.label_file}: {', '.join(types)}")
            return types, tags, scheme
        if saved_span_info(a):
            config = load_config(a.init_from_ckpt or a.pretrained_model_name_or_path)
            return [config.id2label[i] for i in range(len(config.id2label))], None, a.tag
        return None, None, a.tag

    def featurize(self, examples: list[SpanText], split: str) -> list[dict]:
        a = self.args
        features = encode_documents(self.tokenizer, [e.chars for e in examples], a.max_seq_length, a.doc_stride)
        ids = {t: i for i, t in enumerate(self.labels)}
        held = set()
        for f in features:
            start, end = f["start"], f["start"] + len(f["char_index"])
            inside = [(s, e, t) for s, e, t in examples[f["doc"]].entities if start <= s and e <= end]
            f["spans"] = [(ids[t], s - start, e - 1 - start) for s, e, t in inside]
            held.update((f["doc"], span) for span in inside)
        total = sum(len(e.entities) for e in examples)
        if len(features) > len(examples):
            logger.info(f"{split}: {len({f['doc'] for f in features if f['start'] > 0})} of {len(examples)} examples "
                        f"longer than --max_seq_length {a.max_seq_length} split into overlapping windows "
                        f"(--doc_stride {a.doc_stride}): {len(features)} windows in all")
        if len(held) < total:
            logger.warning(f"{split}: {total - len(held)} of {total} entities are in no window whole (longer than "
                           f"--doc_stride allows): {'not trained on' if split == 'train' else 'scored as missed'}")
        return features

    def build_model(self) -> SpanNer:
        a = self.args
        if a.loss_type != "cross_entropy":
            logger.warning(f"--loss_type {a.loss_type} is ignored with --head {a.head}: span heads train on the "
                           f"multilabel categorical cross-entropy")
        return SpanNer.from_pretrained(a.pretrained_model_name_or_path, self.labelled_config(), a.head,
                                       a.gp_head_size)

    def task_info(self) -> dict:
        a = self.args
        return {**super().task_info(), "doc_stride": a.doc_stride, "head": a.head, "gp_head_size": a.gp_head_size,
                "use_crf": False}

    def collate(self, features: Sequence[dict]) -> dict[str, torch.Tensor]:
        batch = collate_encodings(features, self.tokenizer.pad_token_id, self.pad_to(features))
        batch["char_index"] = pad_sequences([f["char_index"] for f in features], 0)
        batch["char_mask"] = pad_sequences([[1] * len(f["char_index"]) for f in features], 0).bool()
        if "spans" in features[0]:
            chars = batch["char_index"].shape[1]
            labels = torch.zeros(len(features), len(self.labels), chars, chars, dtype=torch.uint8)
            for row, f in enumerate(features):
                for type_, start, last in f["spans"]:
                    labels[row, type_, start, last] = 1
            batch["labels"] = labels
        return batch

    def predict(self, model, batch, output) -> list:
        """Per window: the (type, start, end inclusive) scored above 0, in the window's character positions."""
        hits = (output.logits > 0).nonzero().cpu().numpy()
        return [hits[hits[:, 0] == row, 1:] for row in range(output.logits.shape[0])]

    def compute_metrics(self, predictions: list, model=None) -> dict:
        """Windows merged into documents (each span judged by its most central window), scored exactly."""
        windows = defaultdict(list)
        for feature, spans in zip(self.eval_features, predictions):
            windows[feature["doc"]].append(((feature["start"], feature["start"] + len(feature["char_index"])), spans))
        pred = [merge_window_spans(n, [w for w, _ in windows[d]], [s for _, s in windows[d]])
                for d, n in enumerate(self.dev_lengths)]
        pred = [[(self.labels[t], s, e) for t, s, e in doc] for doc in pred]
        metrics = span_metrics(self.dev_spans, pred, self.labels)
        metrics.pop("per_type")  # in the report; the logged metrics stay numbers
        return metrics
