"""run_distill.py's flow, as bertorch/onnx/command.py is export_onnx.py's: pick the distillation task from --task
(before parsing: the task builds the parser), train it with the shared `cli.run`, then on rank 0 strip the
training-only files from the saved student and write the teacher-vs-student report.

The report comes after training because the trainer writes all_results.json when it finishes and knows
nothing of teachers; `cli.run` hands this flow the task it trained (its data, models and metrics).
"""
from __future__ import annotations

import argparse
import json
import os
from typing import Sequence

from bertorch import cli
from bertorch.distill import report
from bertorch.distill.distiller import DISTILL_STATE_NAME
from bertorch.tasks.distill import DISTILL_TASKS, DistillTask
from bertorch.tasks.multitask import MultiTaskDistillTask


def task_class(argv: Sequence[str] | None) -> type[DistillTask]:
    """The distillation of --task (classification by default: its parser refuses an unknown --task), or
    MultiTaskDistillTask for --task multitask (or --task_spec without --task)."""
    peek = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    peek.add_argument("--task")
    peek.add_argument("--task_spec", nargs="*")
    known, _ = peek.parse_known_args(argv)
    if known.task == "multitask" or (known.task is None and known.task_spec is not None):
        return MultiTaskDistillTask
    return DISTILL_TASKS.get(known.task, DISTILL_TASKS["classification"])


def finish(task: DistillTask, results: dict) -> dict:
    """Rank 0: drop the match projections from the saved student (they belong to checkpoints), write
    distill_report.json and merge the report into all_results.json."""
    if not task.env.is_main:
        return results
    saved = task.args.saved_dir
    parts = list(getattr(task, "parts", {}))  # a multi-task student: one directory per task
    for directory in (saved, os.path.join(saved, "best")):
        for path in [os.path.join(directory, p, DISTILL_STATE_NAME) for p in ["", *parts]]:
            if os.path.isfile(path):
                os.remove(path)
    found = report.build_multitask_report(task) if parts else report.build_report(task)
    results = {**results, **found}
    for name, content in ((report.REPORT_FILE, found), ("all_results.json", results)):
        with open(os.path.join(saved, name), "w", encoding="utf-8") as f:
            json.dump(content, f, indent=2, ensure_ascii=False)
    return results


def run(argv: Sequence[str] | None = None, description: str | None = None) -> dict:
    """Distil with the shared CLI and trainer, then strip and report (see the module docstring)."""
    return cli.run(task_class(argv), argv, description, after=finish)
