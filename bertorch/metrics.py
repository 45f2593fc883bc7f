"""Task metrics from well-kept libraries: scikit-learn (classification), scipy.stats (STS)."""
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
