"""What distillation bought, measured in one run: teacher vs student dev metric, parameters, size on disk and
dev-set throughput (same batch size, same device, same process), written to distill_report.json and merged
into all_results.json by run_distill.py's flow (bertorch/distill_command.py); plus TextBrewer's
`display_parameters` per-module table the distillation task prints at start.
"""
from __future__ import annotations

import os
import time
from typing import Callable, Sequence

import torch
from loguru import logger
from torch import nn

from bertorch.data.batching import eval_shard

REPORT_FILE = "distill_report.json"


def _table(rows: list[tuple[str, ...]], right: bool = True) -> str:
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) if c == 0 or not right else cell.rjust(w)
                               for c, (cell, w) in enumerate(zip(row, widths))).rstrip() for row in rows)


def display_parameters(model: nn.Module, max_level: int = 5, name: str = "model") -> str:
    """Parameters and memory per module down to `max_level` (TextBrewer's utils.display_parameters)."""
    total = sum(p.numel() for p in model.parameters()) or 1
    rows = [("LAYER NAME", "#PARAMS", "RATIO", "MEM(MB)")]

    def visit(module: nn.Module, label: str, level: int) -> None:
        params = list(module.parameters())
        n = sum(p.numel() for p in params)
        if n == 0:
            return
        mb = sum(p.numel() * p.element_size() for p in params) / 2 ** 20
        rows.append(("  " * level + f"--{label}:", f"{n:,}", f"{100 * n / total:.2f}%", f"{mb:.2f}"))
        if level < max_level:
            for child_name, child in module.named_children():
                visit(child, child_name, level + 1)

    visit(model, name, 0)
    return _table(rows)


def weights_mb(directory: str) -> float:
    """Size on disk of the weight files of a saved model directory."""
    names = [n for n in os.listdir(directory) if n.endswith((".safetensors", ".bin")) and "state" not in n]
    return sum(os.path.getsize(os.path.join(directory, n)) for n in names) / 2 ** 20


@torch.inference_mode()
def timed_predictions(jobs: Sequence[tuple[nn.Module, Sequence[dict], Callable]], predict: Callable,
                      batch_size: int, device: torch.device) -> list[tuple[list, float]]:
    """For each (model, features, collate): predictions in feature order and examples per second.

    The models take turns batch by batch (teacher's batch i, student's batch i, ...), so a busy moment on
    the machine slows them alike and the speed-up is a side-by-side ratio, not two runs minutes apart.
    Batches are sorted by length, as the trainer's evaluation."""
    plans = []
    for model, features, collate in jobs:
        model.eval()
        plans.append((model, features, collate, eval_shard([len(f["input_ids"]) for f in features], batch_size)))

    def run(model, features, collate, idx):
        batch = {k: v.to(device) for k, v in collate([features[i] for i in idx]).items() if k != "labels"}
        return predict(model, batch, model(**batch))

    for model, features, collate, batches in plans:
        run(model, features, collate, batches[0])  # warm-up (allocator, kernel selection) outside the clock
    found, seconds = [[] for _ in plans], [0.0] * len(plans)
    for step in range(max((len(p[3]) for p in plans), default=0)):  # no dev file: nothing to time
        for k, (model, features, collate, batches) in enumerate(plans):
            if step < len(batches):
                tic = time.perf_counter()
                found[k].extend(zip(batches[step], run(model, features, collate, batches[step])))
                seconds[k] += time.perf_counter() - tic
    return [([p for _, p in sorted(f, key=lambda x: x[0])], len(plan[1]) / t)
            for f, plan, t in zip(found, plans, seconds)]


def _sdpa(model: nn.Module) -> None:
    """Time every model with its fast attention kernel, whatever the matches needed during training."""
    try:
        model.backbone.set_attn_implementation("sdpa")
    except (ValueError, ImportError):
        pass


def build_report(task) -> dict:
    """One row per teacher and the student; the summary compares the student with the first teacher."""
    a, device = task.args, task.env.device
    metric = task.metric_for_best
    student = task.model.student
    models = [(f"teacher {d}", t, d, task.teacher_eval_features, task.teacher_collate,
               lambda preds, t=t: task.compute_metrics(preds, t)) for d, t in zip(a.teacher_model_dir, task.teachers)]
    models.append(("student", student, a.saved_dir, task.eval_features, task.inner.collate, task.compute_metrics))
    for _, model, *_ in models:
        _sdpa(model)
    timed = iter(timed_predictions([(model, features, collate) for _, model, _, features, collate, _ in models
                                    if features], task.predict, a.eval_batch_size, device))
    rows = []
    for name, model, directory, features, collate, score in models:
        row = {"model": name, "parameters": sum(p.numel() for p in model.parameters()),
               "size_mb": round(weights_mb(directory), 3)}
        if features:
            predictions, speed = next(timed)
            row = {**row, metric: score(predictions)[metric], "examples_per_s": round(speed, 2)}
        rows.append(row)
    teacher, mine = rows[0], rows[-1]
    summary = {f"{who}_{key}": row.get(key) for who, row in (("teacher", teacher), ("student", mine))
               for key in (metric, "parameters", "size_mb", "examples_per_s")}
    summary["parameter_ratio"] = mine["parameters"] / teacher["parameters"]
    summary["size_ratio"] = mine["size_mb"] / max(teacher["size_mb"], 1e-9)
    if metric in mine:
        summary["metric_retained"] = mine[metric] / teacher[metric] if teacher[metric] else None
        summary["speedup"] = mine["examples_per_s"] / teacher["examples_per_s"]
    cols = ("model", metric, "parameters", "size_mb", "examples_per_s")
    table = [cols] + [tuple(_fmt(r.get(c), c) for c in cols) for r in rows]
    ratios = ("metric_retained", "parameter_ratio", "size_ratio", "speedup")
    table.append(("student / first teacher",) + tuple(_fmt(summary.get(k), k) for k in ratios))
    logger.info(f"distillation report (dev set, batch size {a.eval_batch_size}, {device}):\n{_table(table)}")
    return {**summary, "distill_models": rows}


def build_multitask_report(task) -> dict:
    """build_report for each task of a multi-task run (keys prefixed with the task's name), and what the one
    student weighs against all the teachers it replaces."""
    students = task.model.students()
    for student in students.values():  # the shared layers read the first task's config: switch them all
        _sdpa(student)
    summary, rows = {}, []
    for name, part in task.parts.items():
        logger.info(f"task {name}:")
        found = build_report(part)
        rows += [{"task": name, **row} for row in found.pop("distill_models")]
        summary.update({f"{name}_{k}": v for k, v in found.items()})
    student = {id(p): p.numel() for s in students.values() for p in s.parameters()}  # the encoder counted once
    teachers = {id(t): t for part in task.parts.values() for t in part.teachers}
    summary["student_parameters"] = sum(student.values())
    summary["teacher_parameters"] = sum(p.numel() for t in teachers.values() for p in t.parameters())
    summary["parameter_ratio"] = summary["student_parameters"] / summary["teacher_parameters"]
    logger.info(f"one student of {summary['student_parameters']:,} parameters serves {len(students)} tasks; their "
                f"{len(teachers)} teachers have {summary['teacher_parameters']:,} "
                f"({_fmt(summary['parameter_ratio'], 'parameter_ratio')})")
    return {**summary, "distill_models": rows}


def _fmt(value, column: str) -> str:
    if value is None:
        return "-"
    if column == "speedup":
        return f"{value:.2f}x"
    if column.endswith(("_ratio", "_retained")):
        return f"{100 * value:.1f}%"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.{1 if column == 'examples_per_s' else 4}f}" if isinstance(value, float) else str(value)
