"""Multi-task distillation (TextBrewer's MultiTaskDistiller): teachers of different tasks -- say a ChnSentiCorp
classifier and a Resume NER tagger, each with its own data -- distilled into ONE student encoder with one
head per task.

    python run_distill.py --task multitask --student_layers 2 \\
        --task_spec name=senti teacher=out/senti train=chnsenticorp/train.tsv dev=chnsenticorp/dev.tsv \\
        --task_spec name=resume teacher=out/resume train=ner/resume/train.json dev=ner/resume/dev.json

Each task is an ordinary single-task `DistillTask` (data, teachers, label and vocabulary checks, KD +
hard-label loss, matches, aux data, cached logits, metrics, saved directory) whose flags come from its
`--task_spec` and its teacher's directory; this task makes their students share one encoder
(`MultiTaskDistiller`), deals training batches out one task at a time, and prefixes batches, metrics and
saved directories with the task's name. --saved_dir (and best/, checkpoint-*/) holds:

    config.json, model.safetensors, tokenizer   the shared student encoder (AutoModel; fine-tune it further)
    multitask.json                              task name -> kind, directory, metric, teachers
    <name>/                                     that task's student: a normal model directory that
                                                Predictor / AutoModelFor*.from_pretrained load
                                                (bertorch.predict.load_predictors: all of them)
"""
from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import tempfile
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Sequence

import torch
from loguru import logger

from bertorch.distill.batches import grouped_sampler
from bertorch.distill.distiller import StepClock
from bertorch.distill.multihead import ROWS, SEP, MultiTaskDistiller, split_batch
from bertorch.distill.student import copy_teacher_layers, prepare_student
from bertorch.errors import ModelError, UsageError
from bertorch.jsonfile import read_json_file
from bertorch.model_dir import is_span_model, read_task_info, write_multitask_manifest
from bertorch.tasks.distill import DISTILL_TASKS, ClassificationDistillTask, DistillTask, NerDistillTask
from bertorch.tasks.ner import NerTask

MEAN_METRIC = "mean_score"
PER_TASK = "per task (--task_spec)"  # --train_data_file under --task multitask
KEYS = {"name": "name", "teacher": "teachers", "teacher_model_dir": "teachers", "train": "train",
        "train_data_file": "train", "dev": "dev", "dev_data_file": "dev", "labels": "labels", "label_file": "labels",
        "aux": "aux", "aux_data_file": "aux"}
RESERVED = ("best", "runs")  # other entries of --saved_dir
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
BY_TEACHER = {cls.teacher_task: cls for cls in DISTILL_TASKS.values()}  # bertorch.json task -> its distillation


@dataclass
class TaskSpec:
    name: str
    teachers: list[str] = field(default_factory=list)
    train: str | None = None
    dev: str | None = None
    labels: str | None = None
    aux: str | None = None


def parse_task_specs(values: Sequence[Sequence[str]]) -> list[TaskSpec]:
    """--task_spec words (KEY=VALUE ..., once per task) or JSON files (a list of {KEY: VALUE} objects)."""
    raw: list[tuple[str, dict]] = []
    for words in values:
        if len(words) == 1 and "=" not in words[0]:
            raw += [(f"{words[0]} #{i + 1}", obj) for i, obj in enumerate(_read_json(words[0]))]
            continue
        obj: dict = {}
        for word in words:
            key, eq, value = word.partition("=")
            if not eq:
                raise UsageError(f"--task_spec {' '.join(words)}: {word!r} is not KEY=VALUE")
            obj.setdefault(key, []).append(value)
        raw.append((f"--task_spec {' '.join(words)}", {k: v if k in ("teacher", "teacher_model_dir") else v[-1]
                                                       for k, v in obj.items()}))
    specs = [_spec(where, obj) for where, obj in raw]
    names = [s.name for s in specs]
    if not specs:
        raise UsageError("--task multitask needs --task_spec, once per task")
    if len(set(names)) < len(names):
        raise UsageError(f"--task_spec: task names must differ, got {names}")
    with_dev = [s.name for s in specs if s.dev]
    if with_dev and len(with_dev) < len(specs):
        raise UsageError(f"--task_spec: tasks {[n for n in names if n not in with_dev]} have no dev= but {with_dev} "
                         f"do; give every task a dev file (the mean of their metrics picks the best model) or none")
    return specs


def _read_json(path: str) -> list[dict]:
    found = read_json_file(path, "--task_spec")
    found = found.get("tasks", found) if isinstance(found, dict) else found
    if not isinstance(found, list) or not all(isinstance(x, dict) for x in found):
        raise UsageError(f"--task_spec {path}: expected a JSON list of task objects (name, teacher, train, dev, ...)")
    return found


def _spec(where: str, obj: dict) -> TaskSpec:
    unknown = sorted(set(obj) - set(KEYS))
    if unknown:
        raise UsageError(f"{where}: unknown key(s) {unknown}; known: {', '.join(KEYS)}")
    values = {KEYS[k]: v for k, v in obj.items()}
    teachers = values.pop("teachers", [])
    spec = TaskSpec(teachers=[teachers] if isinstance(teachers, str) else list(teachers), **values)
    if not isinstance(spec.name, str) or not _NAME.fullmatch(spec.name) or spec.name in RESERVED:
        raise UsageError(f"{where}: name={spec.name} must be a letter then letters, digits or _ (it names a "
                         f"directory and prefixes metrics), and not {' or '.join(RESERVED)}")
    for key, missing in (("teacher", not spec.teachers), ("train", not spec.train)):
        if missing:
            raise UsageError(f"{where}: task {spec.name!r} has no {key}=; every task needs its teacher directory "
                             f"and its training data")
    return spec


@contextlib.contextmanager
def about_task(name: str):
    """Errors raised while one task is set up name the task."""
    try:
        yield
    except UsageError as e:  # DataError and ModelError too; cli.run reports them
        e.args = (f"task {name!r}: {e}",) + e.args[1:]
        raise


class MultiTaskDistillTask(DistillTask):
    name = "distill multitask"
    kind = "multitask"
    required_flags = ()
    hard_label_losses = NerDistillTask.hard_label_losses
    metric_for_best = MEAN_METRIC
    greater_is_better = True

    @classmethod
    def add_args(cls, parser: argparse.ArgumentParser) -> None:
        super().add_args(parser)
        # Each task's data come from --task_spec; the shared CLI, which wants a training file, sees this.
        parser.set_defaults(train_data_file=PER_TASK)

    @classmethod
    def add_inner_args(cls, parser: argparse.ArgumentParser) -> None:
        """The taggers' flags; their tag schemes and the classifiers' --is_text_pair come from each teacher."""
        NerTask.add_tagger_args(parser.add_argument_group("sequence labelling tasks"))

    @classmethod
    def add_kind_args(cls, group) -> None:
        ClassificationDistillTask.add_kind_args(group)

    def setup(self) -> None:
        a = self.args
        given = [f"--{k}" for k in ("teacher_model_dir", "dev_data_file", "label_file") if getattr(a, k)]
        given += ["--train_data_file"] if a.train_data_file not in (None, PER_TASK) else []
        if given:
            raise UsageError(f"--task multitask reads each task's teacher and data from --task_spec (teacher= train= "
                             f"dev= labels=); drop {' '.join(given)}")
        specs = parse_task_specs(a.task_spec or [])
        infos = [self.teacher_info(s) for s in specs]
        workdir = tempfile.mkdtemp(prefix="bertorch-multitask-")
        try:
            student_dirs, what = self.prepare_students(specs, workdir)
            self.parts: dict[str, DistillTask] = {}
            for spec, info, student_dir in zip(specs, infos, student_dirs):
                part = BY_TEACHER[info["task"]](self.part_args(spec, info, student_dir), self.env)
                part.student_what = what
                with about_task(spec.name):
                    part.setup()
                self.parts[spec.name] = part
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        for name, part in self.parts.items():
            for feature in part.train_features + part.eval_features:
                feature["task"] = name
        self.tokenizer = self.parts[specs[0].name].tokenizer
        self.train_features = [f for p in self.parts.values() for f in p.train_features]
        self.eval_features = [f for p in self.parts.values() for f in p.eval_features]
        self.model = MultiTaskDistiller({name: part.model for name, part in self.parts.items()})
        clock = StepClock.for_run(len(self.train_sampler()), a.gradient_accumulation_steps, a.epochs, a.max_steps)
        for part in self.parts.values():  # one step count for every task's schedules
            part.model.clock = clock
        sizes = {name: len(p.train_features) for name, p in self.parts.items()}
        logger.info(f"multi-task student: {what}; encoder shared by {', '.join(self.parts)}; training features "
                    f"{sizes}, one task a batch, in proportion; best model by {MEAN_METRIC} of "
                    + ", ".join(f"{n}_{p.metric_for_best}" for n, p in self.parts.items()))

    def trainer_args(self) -> argparse.Namespace:
        """Under DDP, find_unused_parameters: a batch of one task leaves the other heads (and projections)
        without gradient."""
        if not self.env.is_distributed or self.args.find_unused_parameters:
            return self.args
        return argparse.Namespace(**{**vars(self.args), "find_unused_parameters": True})

    def teacher_info(self, spec: TaskSpec) -> dict:
        """The first teacher's bertorch.json: which kind of task, text pairs, tag scheme, CRF."""
        with about_task(spec.name):
            if not os.path.isdir(spec.teachers[0]):
                raise ModelError(f"teacher {spec.teachers[0]}: no such directory")
            info = read_task_info(spec.teachers[0])
            if info["task"] not in BY_TEACHER:
                raise ModelError(f"teacher {spec.teachers[0]} holds a {info['task']!r} model; multi-task "
                                 f"distillation takes classifiers (run_classifier.py) and taggers (run_ner.py)")
            if is_span_model(info):
                raise ModelError(f"teacher {spec.teachers[0]} is a span NER model (--head {info['head']}); a multi-task "
                                 f"student has classifier and tagger heads: distil it on its own with run_distill.py "
                                 f"--task sequence_labeling")
        return info

    def prepare_students(self, specs: list[TaskSpec], workdir: str) -> tuple[list[str], str]:
        """One student directory per task, all with the first one's tokenizer. --student_layers copies each
        task's own teacher (its head and CRF are a warm start); the first task's encoder is then shared."""
        a = self.args
        if a.student_hidden_size is not None:  # each task's head would be cut along other dimensions
            raise UsageError("--student_hidden_size narrows one teacher; with --task multitask give --student_layers "
                             "or a --student_model (a config JSON for a narrower random student)")
        source = a.student_model or a.pretrained_model_name_or_path
        first_teacher = specs[0].teachers[0]
        first, what = prepare_student(source, a.student_layers, a.student_layer_selection, first_teacher,
                                      os.path.join(workdir, "0"), a.seed)
        if a.student_layers is None:
            tokenizer = first_teacher if str(source).endswith(".json") else source
            return [first] * len(specs), f"{what} (tokenizer of {tokenizer})"
        dirs = [first]
        for i, spec in enumerate(specs[1:], 1):
            dirs.append(os.path.join(workdir, str(i)))
            copy_teacher_layers(spec.teachers[0], a.student_layers, a.student_layer_selection, dirs[-1], first)
        return dirs, (f"{what}, encoder and tokenizer of teacher {first_teacher}, each head from its own teacher")

    def part_args(self, spec: TaskSpec, info: dict, student_dir: str) -> argparse.Namespace:
        a = self.args
        ner = info["task"] == "ner"
        # A tagger student has a CRF when its teacher has one, unless --hard_label_loss names another loss.
        crf = ner and bool(a.use_crf or a.hard_label_loss == "crf"
                           or (a.hard_label_loss is None and info.get("use_crf")))
        ckpt = a.init_from_ckpt
        if ckpt and os.path.isdir(os.path.join(ckpt, spec.name)):  # a multi-task directory: this task's part
            ckpt = os.path.join(ckpt, spec.name)
        return argparse.Namespace(**{
            **vars(a), "task": BY_TEACHER[info["task"]].kind, "task_spec": None, "teacher_model_dir": spec.teachers,
            "train_data_file": spec.train, "dev_data_file": spec.dev, "label_file": spec.labels,
            "aux_data_file": spec.aux or a.aux_data_file, "is_text_pair": bool(info.get("is_text_pair")),
            "tag": info.get("tag"), "use_crf": crf,
            "hard_label_loss": "crf" if crf else None if a.hard_label_loss == "crf" else a.hard_label_loss,
            "student_model": student_dir, "student_layers": None, "init_from_ckpt": ckpt,
            "saved_dir": os.path.join(a.saved_dir, spec.name)})

    # -- batches: "<task>/<input>" keys; a training batch holds one task ---------------------------------
    def train_sampler(self):
        lengths = [self.feature_length(f) for f in self.train_features]
        return grouped_sampler(self.train_features, lengths, lambda f: (f["task"], bool(f.get("aux"))), self.args,
                               self.env)

    def feature_length(self, feature: dict) -> int:
        return self.parts[feature["task"]].feature_length(feature)

    def collate(self, features: Sequence[dict]) -> dict[str, torch.Tensor]:
        rows = defaultdict(list)
        for i, feature in enumerate(features):
            rows[feature["task"]].append(i)
        batch = {}
        for name, idx in rows.items():
            own = self.parts[name].collate([features[i] for i in idx])
            batch.update({f"{name}{SEP}{k}": v for k, v in own.items()})
            batch[f"{name}{SEP}{ROWS}"] = torch.tensor(idx)
        return batch

    def train_stats(self, batch, output) -> dict:
        inputs = split_batch(batch)
        return {f"{name}_{k}": v for name, out in output.tasks.items()
                for k, v in self.parts[name].train_stats(inputs[name], out).items()}

    def predict(self, model, batch, output) -> list:
        inputs, found = split_batch(batch), []
        for name, out in output.tasks.items():
            predictions = self.parts[name].predict(model.tasks[name], inputs[name], out)
            found += zip(inputs[name][ROWS].tolist(), predictions)
        return [p for _, p in sorted(found, key=lambda x: x[0])]

    def compute_metrics(self, predictions: list, model=None) -> dict:
        """Each task's metrics on its share of the dev set, prefixed with its name, and their mean (each task
        decodes with its own student: `model` is not used)."""
        metrics, reports, scores, start = {}, [], [], 0
        for name, part in self.parts.items():
            found = part.compute_metrics(predictions[start:start + len(part.eval_features)])
            start += len(part.eval_features)
            report = found.pop("report", None)
            if report:
                reports.append(f"{name}:\n{report}")
            scores.append(found[part.metric_for_best])
            metrics.update({f"{name}_{k}": v for k, v in found.items()})
        metrics[MEAN_METRIC] = sum(scores) / len(scores)
        return {**metrics, "report": "\n".join(reports)} if reports else metrics

    def lr_overrides(self) -> dict[str, float]:
        return {f"tasks.{name}.{k}": v for name, part in self.parts.items() for k, v in part.lr_overrides().items()}

    # -- saving ---------------------------------------------------------------------------------------------
    def save(self, model: MultiTaskDistiller, directory: str) -> None:
        model.save_encoder(directory)
        self.tokenizer.save_pretrained(directory)
        manifest = {"metric_for_best": MEAN_METRIC, "tasks": {
            name: {"task": part.inner.name, "directory": name, "metric": part.metric_for_best,
                   "teachers": part.args.teacher_model_dir} for name, part in self.parts.items()}}
        write_multitask_manifest(directory, manifest)
        for name, part in self.parts.items():
            part.save(model.tasks[name], os.path.join(directory, name))
