"""Sequence labelling: NER with any tag set in labels.txt, and word segmentation with B/M/E/S.

One prediction per original character, never per sub-token: characters go to the tokenizer as words
(`is_split_into_words`) and each is represented by its first sub-token; characters the tokenizer drops
(spaces, zero-width and control characters) become the unknown token first, so they keep their place.
Documents longer than one window are split into overlapping windows for training and stitched back
for evaluation, so every gold tag is scored. The Predictor builds its inputs with `encode_documents`.
"""
from __future__ import annotations

import argparse
from collections import defaultdict
from dataclasses import dataclass
from typing import Sequence

import torch
from loguru import logger

from bertorch.data.batching import collate_encodings, pad_sequences
from bertorch.data.readers import DataError, iter_lines, read_jsonl, read_labels
from bertorch.errors import UsageError
from bertorch.losses.classification import IGNORE_INDEX
from bertorch.models.tagger import Tagger, decode_document
from bertorch.tagging import (SCHEMES, count_illegal_transitions, illegal_transition_example, make_windows,
                              to_seqeval_tags, validate_tag_set, word_prf)
from bertorch.tasks.base import Task


@dataclass
class TaggedText:
    chars: list[str]
    tags: list[str] | None
    line: int


def read_tagged(path: str, labels: Sequence[str] | None) -> list[TaggedText]:
    """JSON lines `{"text": [chars], "label": [tags]}` (labels=None: text only, as for prediction).

    Hard errors name file:line:value; continuation tags that continue nothing (I- after O, common in
    upstream data) are only counted and shown, since seqeval scores them as new entities anyway.
    """
    known = set(labels) if labels is not None else None
    examples, illegal, noisy, shown = [], 0, 0, []
    for number, obj in read_jsonl(path):
        for key in ("text",) + (("label",) if known is not None else ()):
            if key not in obj:
                raise DataError(path, number, f'missing key "{key}"; keys are {sorted(obj)}')
        text = obj["text"]
        chars = list(text) if isinstance(text, str) else text
        if not isinstance(chars, list) or not all(isinstance(c, str) for c in chars):
            raise DataError(path, number, '"text" must be a list of characters (strings)', text)
        if not chars:
            raise DataError(path, number, "empty text")
        tags = None
        if known is not None:
            tags = obj["label"]
            if not isinstance(tags, list) or len(tags) != len(chars):
                size = len(tags) if isinstance(tags, list) else type(tags).__name__
                raise DataError(path, number, f"{len(chars)} characters but {size} labels", "".join(chars))
            for i, tag in enumerate(tags):
                if tag not in known:
                    raise DataError(path, number, f"tag at position {i} not in the label file", tag)
            if n := count_illegal_transitions(tags):
                illegal, noisy = illegal + n, noisy + 1
                if len(shown) < 3:
                    shown.append(f"  {path}:{number}: {illegal_transition_example(tags, chars)}")
        examples.append(TaggedText(chars, tags, number))
    if not examples:
        raise DataError(path, None, "no examples in file")
    if illegal:
        logger.warning(f"{path}: {illegal} continuation tags (e.g. I- after O) continue no entity, on {noisy} "
                       f"lines; they are kept and scored as entity starts. Examples:\n" + "\n".join(shown))
    return examples


def encode_documents(tokenizer, docs: Sequence[Sequence[str]], max_length: int, stride: int) -> list[dict]:
    """One feature per window: input_ids, token_type_ids, char_index (token of each character), doc, start.

    Each document is tokenised once, without truncation; windows are cut from its tokens by character
    (at most max_length tokens with the special ones) and overlap by `stride` characters.
    """
    if not docs:
        return []
    enc = tokenizer(list(docs), is_split_into_words=True, verbose=False)
    rows = [(enc, d) for d in range(len(docs))]
    spans = [_char_tokens(enc.word_ids(d), len(doc)) for d, doc in enumerate(docs)]
    redo = [d for d, (_, count) in enumerate(spans) if 0 in count]
    if redo:  # characters with no token at all: the unknown token keeps their place
        fixed = [[c if n else tokenizer.unk_token for c, n in zip(docs[d], spans[d][1])] for d in redo]
        again = tokenizer(fixed, is_split_into_words=True, verbose=False)
        for row, d in enumerate(redo):
            rows[d], spans[d] = (again, row), _char_tokens(again.word_ids(row), len(docs[d]))
    features = []
    for d, doc in enumerate(docs):
        (src, row), (first, count) = rows[d], spans[d]
        ids = src["input_ids"][row]
        types = src["token_type_ids"][row] if "token_type_ids" in src else None
        body_start, body_end = first[0], first[-1] + count[-1]
        budget = max_length - (len(ids) - (body_end - body_start))
        if body_end - body_start <= budget:
            windows = [(0, len(doc))]
        else:
            windows = make_windows(len(doc), budget, stride, count)
        for start, end in windows:
            lo = first[start]
            hi = min(first[end - 1] + count[end - 1], lo + budget)
            take = list(range(body_start)) + list(range(lo, hi)) + list(range(body_end, len(ids)))
            feature = {"input_ids": [ids[t] for t in take], "doc": d, "start": start,
                       "char_index": [body_start + first[c] - lo for c in range(start, end)]}
            if types is not None:
                feature["token_type_ids"] = [types[t] for t in take]
            features.append(feature)
    return features


def _char_tokens(word_ids: list[int | None], num_chars: int) -> tuple[list[int], list[int]]:
    """First token position and token count of every character."""
    first, count = [-1] * num_chars, [0] * num_chars
    for pos, w in enumerate(word_ids):
        if w is not None:
            if count[w] == 0:
                first[w] = pos
            count[w] += 1
    return first, count


def sequence_metrics(gold: list[list[str]], pred: list[list[str]], scheme: str) -> dict:
    """seqeval entity P/R/F1 (default mode, see tagging.py) + report; word P/R/F1 for B/M/E/S."""
    from seqeval.metrics import accuracy_score, classification_report, f1_score, precision_score, recall_score

    g = [to_seqeval_tags(t, scheme) for t in gold]
    p = [to_seqeval_tags(t, scheme) for t in pred]
    out = {"precision": float(precision_score(g, p, zero_division=0)),
           "recall": float(recall_score(g, p, zero_division=0)),
           "f1": float(f1_score(g, p, zero_division=0)),
           "accuracy": float(accuracy_score(g, p))}
    if scheme == "bmes":
        out.update({f"word_{k}": v for k, v in word_prf(gold, pred).items()})
    out["report"] = classification_report(g, p, digits=4, zero_division=0)
    return out


class NerTask(Task):
    name = "ner"
    required_flags = ("label_file",)
    metric_for_best = "f1"

    @classmethod
    def add_args(cls, parser: argparse.ArgumentParser) -> None:
        g = parser.add_argument_group("sequence labelling")
        g.add_argument("--tag", choices=SCHEMES, default=None,
                       help="tag scheme labels.txt must follow (None: detected from labels.txt)")
        g.add_argument("--use_crf", action="store_true", help="a CRF over the per-character scores")
        g.add_argument("--crf_learning_rate", type=float, default=None,
                       help="learning rate of the CRF (None: 10x --learning_rate)")
        g.add_argument("--doc_stride", type=int, default=32,
                       help="characters shared by consecutive windows of a document longer than one window")

    def setup(self) -> None:
        a = self.args
        label_file = self.data_path(a.label_file)
        self.labels = read_labels(label_file)
        self.scheme = self.check_scheme(label_file)
        if not 0 <= a.doc_stride < a.max_seq_length - 2:
            raise UsageError(f"--doc_stride must be in [0, --max_seq_length - 2 = {a.max_seq_length - 2}), "
                             f"got {a.doc_stride}")
        train = self.take(read_tagged(self.data_path(a.train_data_file), self.labels), "train")
        dev = self.take(read_tagged(self.data_path(a.dev_data_file), self.labels) if a.dev_data_file else [], "dev")
        self.tokenizer = self.load_tokenizer(a.pretrained_model_name_or_path)
        self.train_features = self.featurize(train, "train")
        self.eval_features = self.featurize(dev, "dev")
        self.dev_tags = [e.tags for e in dev]
        self.model = self.build_model()
        self.init_weights(self.model)

    def check_scheme(self, label_file: str) -> str:
        """--tag against labels.txt; the error names the first label that does not fit, with its line."""
        try:
            scheme = validate_tag_set(self.labels, self.args.tag)
        except ValueError as e:
            for (number, _), label in zip(iter_lines(label_file), self.labels):
                try:
                    validate_tag_set([label], self.args.tag)
                except ValueError:
                    raise DataError(label_file, number, str(e), label) from None
            raise DataError(label_file, None, str(e)) from None
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
        return {**super().task_info(), "doc_stride": a.doc_stride, "tag": self.scheme, "use_crf": a.use_crf}

    def collate(self, features: Sequence[dict]) -> dict[str, torch.Tensor]:
        batch = collate_encodings(features, self.tokenizer.pad_token_id, self.pad_to())
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

    def predict(self, model, batch, output) -> list:
        """Per-window emission scores; decoding waits until windows are stitched into documents."""
        emissions = output.logits.float().cpu().numpy()
        return [emissions[b, :n].copy() for b, n in enumerate(batch["char_mask"].sum(1).tolist())]

    def compute_metrics(self, predictions: list) -> dict:
        windows = defaultdict(list)
        for feature, scores in zip(self.eval_features, predictions):
            windows[feature["doc"]].append(((feature["start"], feature["start"] + len(scores)), scores))
        crf = self.model.crf_arrays()
        pred = []
        for d, gold in enumerate(self.dev_tags):
            parts = windows[d]
            ids = decode_document(len(gold), [w for w, _ in parts], [s for _, s in parts], crf)
            pred.append([self.labels[i] for i in ids])
        return sequence_metrics(self.dev_tags, pred, self.scheme)
