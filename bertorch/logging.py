"""Logging as bertorch users know it: loguru lines and a tqdm bar on rank 0 only, plus metric files.

Every log or evaluation step appends one JSON object to `metrics.jsonl`; TensorBoard scalars are written
when tensorboard is installed; at the end `training_curves.png` plots loss and dev metric against step.
"""
from __future__ import annotations

import json
import os
import sys

from loguru import logger
from tqdm.auto import tqdm

METRICS_FILE = "metrics.jsonl"
CURVES_FILE = "training_curves.png"


def setup_logging(is_main: bool) -> None:
    """INFO on rank 0 (through tqdm.write, so lines never tear the progress bar); errors only elsewhere."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # per-file "Loading weights" bars drown the training log
    logger.remove()
    if is_main:
        logger.add(lambda msg: tqdm.write(msg, end="", file=sys.stderr), level="INFO", colorize=False,
                   format="{time:YYYY-MM-DD HH:mm:ss.SSS} | {level: <8} | {name}:{function}:{line} - {message}")
    else:
        logger.add(sys.stderr, level="ERROR")


def progress_bar(total: int, initial: int, is_main: bool):
    # disable=None turns the bar off when stderr is not a terminal (CI logs, nohup files).
    return tqdm(total=total, initial=initial, disable=None if is_main else True, desc="train",
                dynamic_ncols=True, leave=False)


def format_metrics(values: dict) -> str:
    return ", ".join(f"{k}: {v:.5f}" if isinstance(v, float) else f"{k}: {v}" for k, v in values.items())


class MetricsWriter:
    """metrics.jsonl (+ TensorBoard) in the output directory; a no-op on ranks other than 0."""

    def __init__(self, output_dir: str, enabled: bool):
        self.enabled = enabled
        self.path = os.path.join(output_dir, METRICS_FILE)
        self.tb = None
        if enabled:
            os.makedirs(output_dir, exist_ok=True)
            try:
                from torch.utils.tensorboard import SummaryWriter
                self.tb = SummaryWriter(os.path.join(output_dir, "runs"))
            except ImportError:  # tensorboard is optional
                self.tb = None

    def start(self, resumed_step: int = 0) -> None:
        """Begin this run's rows: a fresh run drops what an earlier run left in the file (--overwrite_output_dir
        keeps the directory, and appending mixed two runs' curves); a resumed one keeps the rows up to its
        checkpoint's step and drops those the interrupted run logged after it (they are logged again)."""
        if not self.enabled or not os.path.exists(self.path):
            return
        kept = []
        if resumed_step > 0:
            with open(self.path, encoding="utf-8") as f:
                for line in f:
                    try:
                        if json.loads(line).get("step", 0) <= resumed_step:
                            kept.append(line if line.endswith("\n") else line + "\n")
                    except ValueError:  # a line cut short by a crash
                        continue
        tmp = self.path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.writelines(kept)
        os.replace(tmp, self.path)

    def write(self, kind: str, step: int, values: dict) -> None:
        if not self.enabled:
            return
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"kind": kind, "step": step, **values}, ensure_ascii=False) + "\n")
        if self.tb is not None:
            for key, value in values.items():
                if isinstance(value, (int, float)):
                    self.tb.add_scalar(f"{kind}/{key}", value, step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def plot_curves(output_dir: str, metric: str) -> str | None:
    """training_curves.png from metrics.jsonl: train/eval loss and the dev metric against step."""
    path = os.path.join(output_dir, METRICS_FILE)
    if not os.path.exists(path):
        return None
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in open(path, encoding="utf-8")]
    train = [(r["step"], r["loss"]) for r in rows if r["kind"] == "train" and "loss" in r]
    evals = [r for r in rows if r["kind"] == "eval"]
    fig, (ax_loss, ax_metric) = plt.subplots(1, 2, figsize=(10, 4))
    if train:
        ax_loss.plot(*zip(*train), label="train loss")
    eval_loss = [(r["step"], r["loss"]) for r in evals if "loss" in r]
    if eval_loss:
        ax_loss.plot(*zip(*eval_loss), marker="o", label="dev loss")
    ax_loss.set(xlabel="step", ylabel="loss", title="loss")
    if ax_loss.get_legend_handles_labels()[0]:
        ax_loss.legend()
    points = [(r["step"], r[metric]) for r in evals if metric in r]
    if points:
        ax_metric.plot(*zip(*points), marker="o", color="tab:green")
    ax_metric.set(xlabel="step", ylabel=metric, title=f"dev {metric}")
    fig.tight_layout()
    out = os.path.join(output_dir, CURVES_FILE)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
