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
