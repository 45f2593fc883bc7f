"""Task metrics from well-kept libraries: scikit-learn (classification), seqeval (NER), scipy.stats (STS)."""
from __future__ import annotations

from typing import Sequence

import numpy as np


def classification_metrics(gold: Sequence[int], pred: Sequence[int], labels: Sequence[str]) -> dict:
    """accuracy, macro-F1 and sklearn's text classification_report (for the log)."""
    from sklearn.metrics import accuracy_score, classification_report, f1_score

    ids = list(range(len(labels)))
    return {
        "accuracy": float(accuracy_score(gold, pred)),
        "macro_f1": float(f1_score(gold, pred, labels=ids, average="macro", zero_division=0)),
        "report": classification_report(gold, pred, labels=ids, target_names=list(labels), digits=4,
                                        zero_division=0),
    }


def correlation_metrics(gold: Sequence[float], pred: Sequence[float]) -> dict:
    """Spearman and Pearson correlation of predicted similarity against gold scores."""
    from scipy.stats import pearsonr, spearmanr

    gold_arr, pred_arr = np.asarray(gold, dtype=np.float64), np.asarray(pred, dtype=np.float64)
    return {"spearman": float(spearmanr(gold_arr, pred_arr).statistic),
            "pearson": float(pearsonr(gold_arr, pred_arr).statistic)}


def sequence_metrics(gold: list[list[str]], pred: list[list[str]], scheme: str) -> dict:
    """seqeval entity P/R/F1 (default mode, see tagging.py) + report; word P/R/F1 for B/M/E/S."""
    from seqeval.metrics import accuracy_score, classification_report, f1_score, precision_score, recall_score

    from bertorch.tagging import to_seqeval_tags, word_prf

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


def span_metrics(gold: Sequence, pred: Sequence, types: Sequence[str] | None = None) -> dict:
    """Exact-span P/R/F1, micro over all types and per type; gold[i], pred[i]: the (type, start, end) of one
    document. A prediction counts when type, start and end all match a gold entity, which is seqeval's
    entity match, so on flat data this is seqeval's F1 (tests/test_global_pointer.py checks it)."""
    if len(gold) != len(pred):
        raise ValueError(f"{len(gold)} gold documents but {len(pred)} predicted")
    counts: dict = {}  # type -> [correct, predicted, gold]
    for g, p in zip(gold, pred):
        g, p = set(map(tuple, g)), set(map(tuple, p))
        for span in g | p:
            c = counts.setdefault(span[0], [0, 0, 0])
            c[0] += span in g and span in p
            c[1] += span in p
            c[2] += span in g
    names = list(types) if types is not None else sorted(counts, key=str)
    per_type = {t: _prf(*counts.get(t, (0, 0, 0))) for t in names}
    total = [sum(c[i] for c in counts.values()) for i in range(3)]
    out = {k: v for k, v in _prf(*total).items() if k != "support"}
    lines = [f"{'':>12} {'precision':>9} {'recall':>9} {'f1':>9} {'support':>9}"]
    for name, m in [*per_type.items(), ("micro avg", _prf(*total))]:
        lines.append(f"{str(name):>12} {m['precision']:>9.4f} {m['recall']:>9.4f} {m['f1']:>9.4f} {m['support']:>9}")
    return {**out, "per_type": per_type, "report": "\n".join(lines)}


def _prf(correct: int, predicted: int, gold: int) -> dict:
    precision = correct / predicted if predicted else 0.0
    recall = correct / gold if gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "support": gold}
