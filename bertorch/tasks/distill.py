"""Knowledge distillation as a task: the inner task (classification or sequence labelling) supplies data,
metrics, predictions and the saved directory; this task swaps in a `Distiller` as the model.

So the saved `--saved_dir` (and `best/`) is a plain student that run_*/Predictor/ONNX load like any other
model of the inner task, and every shared flag (DDP, accumulation, AMP, resume, ...) works unchanged.
"""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from typing import Sequence

import torch
from loguru import logger

from bertorch.data.batching import TrainBatchSampler, collate_encodings
from bertorch.data.readers import DataError, TextExample, iter_lines, read_classification
from bertorch.data.tagged import encode_documents
from bertorch.distill.batches import grouped_sampler
from bertorch.distill.distiller import (Distiller, KDConfig, StepClock, cache_teacher_logits, load_teacher,
                                       stack_cached_logits)
from bertorch.distill.matches import PRESET_HELP, build_matches, describe_matches, uniform_layer_map
from bertorch.distill.report import display_parameters
from bertorch.distill.student import LAYER_SELECTIONS, prepare_student
from bertorch.errors import UsageError
from bertorch.losses.classification import LOSS_ALIASES, LOSS_TYPES
from bertorch.losses.distillation import KD_LOSSES, TEMPERATURE_SCHEDULES, WEIGHT_SCHEDULES
from bertorch.models.base import ModelError
from bertorch.tasks.base import Task
from bertorch.tasks.classification import ClassificationTask, tokenize_examples
from bertorch.tasks.ner import NerTask

INNER_TASKS = {"classification": ClassificationTask, "sequence_labeling": NerTask}
TEACHER_TASK = {"classification": "classification", "sequence_labeling": "ner"}  # as in bertorch.json


def teacher_labels(teacher) -> list[str]:
    config = teacher.backbone.config
    return [config.id2label[i] for i in range(config.num_labels)]


def read_aux(path: str, is_text_pair: bool, limit: int | None) -> list[TextExample]:
    """One text (or text_a\\ttext_b) a line; further columns, e.g. a label, are ignored."""
    examples = []
    for number, line in iter_lines(path):
        fields = line.split("\t")
        if is_text_pair and len(fields) < 2:
            raise DataError(path, number, "expected text_a\\ttext_b (--is_text_pair)", line)
        examples.append(TextExample(fields[0], fields[1] if is_text_pair else None, None, number))
        if limit and len(examples) >= limit:
            break
    if not examples:
        raise DataError(path, None, "no examples in file")
    return examples


class DistillTask(Task):
    name = "distill"
    required_flags = ("label_file",)
    student_what: str | None = None  # where the student comes from, for messages (set by a multi-task run)

    @classmethod
    def add_args(cls, parser: argparse.ArgumentParser) -> None:
        # The inner tasks' own flags (--label_file, --is_text_pair, --tag, --use_crf, ...), defined once there.
        handler, parser.conflict_handler = parser.conflict_handler, "resolve"
        for inner in INNER_TASKS.values():
            inner.add_args(parser)
        parser.conflict_handler = handler
        # The student is --student_model; --pretrained_model_name_or_path is accepted as its alias.
        parser.set_defaults(pretrained_model_name_or_path=None)
        g = parser.add_argument_group("distillation")
        g.add_argument("--task", choices=tuple(INNER_TASKS) + ("multitask",), default="classification",
                       help="the teacher's task; multitask: several teachers of different tasks, see --task_spec")
        g.add_argument("--teacher_model_dir", action="append", default=None,
                       help="a directory saved by run_classifier.py/run_ner.py; repeat for several teachers")
        g.add_argument("--task_spec", action="append", nargs="+", metavar="KEY=VALUE", default=None,
                       help="--task multitask (implied): one task of one student encoder with a head per task, as "
                            "name=NAME teacher=DIR train=FILE [dev=FILE] [labels=FILE] [aux=FILE] (teacher= again: "
                            "averaged soft labels); repeat the flag for each task, or give one JSON file listing "
                            "such objects. Task kind, labels, --is_text_pair and CRF come from each teacher; all "
                            "other flags are shared. A training batch holds one task, batches drawn in proportion to "
                            "each task's data (an epoch passes over all of it); dev metrics are prefixed name_, and "
                            "their mean_score picks --save_best_model. Saved: the shared encoder in --saved_dir, and "
                            "<saved_dir>/NAME/, a model directory of that task (Predictor, AutoModelFor*)")
        g.add_argument("--teacher_weights", type=float, nargs="+", default=None,
                       help="one weight per teacher for averaging their soft labels (None: equal weights)")
        g.add_argument("--student_model", default=None,
                       help="a pretrained model directory, or a config JSON (the teacher's config with these "
                            "fields overridden) for a randomly initialised student")
        g.add_argument("--student_layers", type=int, default=None,
                       help="build the student from N of the teacher's layers (warm start)")
        g.add_argument("--student_layer_selection", choices=LAYER_SELECTIONS, default="uniform",
                       help="which teacher layers --student_layers copies: evenly spaced or the first N")
        g.add_argument("--student_hidden_size", type=int, default=None,
                       help="build the student from the teacher (its --student_layers, or all layers) narrowed to "
                            "this hidden size: the largest residual dimensions, heads and FFN neurons are kept "
                            "(a multiple of the teacher's head size)")
        g.add_argument("--hard_label_loss", choices=LOSS_TYPES + tuple(LOSS_ALIASES) + ("crf",), default=None,
                       help="student's loss on gold labels (None: crf with --use_crf or a CRF teacher, else "
                            "--loss_type)")
        g.add_argument("--hard_label_weight", type=float, default=1.0, help="weight of the hard-label loss")
        g.add_argument("--hard_label_weight_schedule", choices=tuple(WEIGHT_SCHEDULES), default="constant")
        g.add_argument("--kd_loss_type", choices=tuple(KD_LOSSES), default="ce", help="soft-label loss")
        g.add_argument("--temperature", type=float, default=4.0, help="KD temperature")
        g.add_argument("--temperature_schedule", choices=tuple(TEMPERATURE_SCHEDULES), default="constant")
        g.add_argument("--kd_loss_weight", type=float, default=1.2, help="weight of the soft-label loss")
        g.add_argument("--kd_loss_weight_schedule", choices=tuple(WEIGHT_SCHEDULES), default="constant")
        g.add_argument("--matches", nargs="+", default=[], help="intermediate matches: " + PRESET_HELP)
        g.add_argument("--teacher_cached", action="store_true",
                       help="compute teacher logits once per training example and reuse them every epoch")
        g.add_argument("--aux_data_file", default=None,
                       help="unlabelled texts, one a line: KD (and matches) only, no hard-label loss")
        g.add_argument("--max_aux_examples", type=int, default=None, help="read at most N lines of it")
        g.add_argument("--allow_different_tokenizers", action="store_true",
                       help="classification KD only: tokenise every text for the teacher and the student")

    @classmethod
    def check_args(cls, args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
        if not args.do_train:
            parser.error("run_distill.py has no --no-do_train mode: the distilled student is a plain model directory, "
                         "so evaluate it with run_classifier.py or run_ner.py --no-do_train "
                         "--pretrained_model_name_or_path STUDENT_DIR")
        super().check_args(args, parser)

    # -- set-up ---------------------------------------------------------------------------------------
    def setup(self) -> None:
        a = self.args
        if a.task == "multitask" or a.task_spec:
            raise UsageError("--task multitask and --task_spec are run by MultiTaskDistillTask (bertorch/tasks/multitask.py)")
        if not a.teacher_model_dir:
            raise UsageError("the following arguments are required: --teacher_model_dir")
        if (a.hard_label_loss == "crf" or a.use_crf) and a.task != "sequence_labeling":
            raise UsageError("--hard_label_loss crf needs --task sequence_labeling")
        if a.temperature <= 0:
            raise UsageError(f"--temperature must be positive, got {a.temperature}")
        if a.teacher_cached and a.matches:
            raise UsageError("--teacher_cached keeps teacher logits only; intermediate --matches need the teacher's "
                             "hidden states at every step: drop one of them")
        if a.matches and len(a.teacher_model_dir) > 1:
            raise UsageError("intermediate --matches need a single --teacher_model_dir (several teachers are "
                             "combined through their soft labels only)")
        self.teachers, infos = zip(*(load_teacher(d) for d in a.teacher_model_dir))
        for d, info in zip(a.teacher_model_dir, infos):
            if info["task"] != TEACHER_TASK[a.task]:
                raise ModelError(f"--teacher_model_dir {d} holds a {info['task']!r} model, not one for --task {a.task}")
        # A CRF teacher gives a CRF student unless --hard_label_loss names another loss (as multi-task does).
        crf_teacher = a.task == "sequence_labeling" and bool(infos[0].get("use_crf"))
        self.hard_loss = a.hard_label_loss or ("crf" if a.use_crf or crf_teacher else a.loss_type)
        if crf_teacher and a.hard_label_loss is None:
            logger.info("the teacher has a CRF, so the student gets one (--hard_label_loss crf); "
                        "--hard_label_loss cross_entropy trains a Linear head instead")
        workdir = tempfile.mkdtemp(prefix="bertorch-student-")
        try:
            student_dir, what = prepare_student(a.student_model or a.pretrained_model_name_or_path, a.student_layers,
                                                a.student_layer_selection, a.teacher_model_dir[0], workdir, a.seed,
                                                a.student_hidden_size)
            self.student_what = self.student_what or what
            logger.info(f"student: {self.student_what}")
            crf = self.hard_loss == "crf"
            label_file = a.label_file or self.write_teacher_labels(workdir)
            inner_args = argparse.Namespace(**{**vars(a), "pretrained_model_name_or_path": student_dir, "use_crf": crf,
                                               "loss_type": "cross_entropy" if crf else self.hard_loss,
                                               "label_file": label_file})
            self.inner = INNER_TASKS[a.task](inner_args, self.env)
            self.inner.setup()
            if crf and not a.init_from_ckpt:  # a CRF copied with the teacher's layers
                self.inner.model.load_weights(student_dir, strict=False)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        self.name, self.metric_for_best = f"distill {a.task}", self.inner.metric_for_best
        self.greater_is_better = self.inner.greater_is_better
        self.tokenizer, student = self.inner.tokenizer, self.inner.model
        self.check_labels()
        self.teacher_tokenizer = self.check_tokenizers()
        matches = self.build_matches(student) if a.matches else []
        if any(m.feature == "attention" for m in matches):  # sdpa kernels return no attention probabilities
            for model in (student, self.teachers[0]):
                model.backbone.set_attn_implementation("eager")
        self.train_features, self.eval_features = self.inner.train_features, self.inner.eval_features
        self.teacher_eval_features = self.eval_features
        if self.teacher_tokenizer is not None:
            self.add_teacher_inputs()
        if a.aux_data_file:
            self.train_features = self.train_features + self.aux_features()
        clock = StepClock.for_run(len(self.train_sampler()), a.gradient_accumulation_steps, a.epochs, a.max_steps)
        config = KDConfig(a.kd_loss_type, a.temperature, a.temperature_schedule, a.kd_loss_weight,
                          a.kd_loss_weight_schedule, a.hard_label_weight, a.hard_label_weight_schedule,
                          tuple(a.teacher_weights) if a.teacher_weights else None,
                          "char_mask" if a.task == "sequence_labeling" else None)
        self.model = Distiller(student, list(self.teachers), matches, config, clock)
        if a.teacher_cached:
            cache_teacher_logits(self.model.to(self.env.device), self.train_features, self.collate,
                                 self.feature_length, a.eval_batch_size, self.env)
            logger.info(f"teacher logits cached for {len(self.train_features)} training features")
        for d, teacher in zip(a.teacher_model_dir, self.teachers):
            logger.info(f"teacher {d} parameters:\n{display_parameters(teacher)}")
        logger.info(f"student parameters:\n{display_parameters(student)}")

    def write_teacher_labels(self, workdir: str) -> str:
        """No label file given (multi-task): the first teacher's id2label, as a labels.txt for the inner task."""
        path = os.path.join(workdir, "teacher_labels.txt")
        with open(path, "w", encoding="utf-8") as f:
            f.writelines(label + "\n" for label in teacher_labels(self.teachers[0]))
        return path

    def check_labels(self) -> None:
        a = self.args
        for d, teacher in zip(a.teacher_model_dir, self.teachers):
            theirs = teacher_labels(teacher)
            if theirs == self.inner.labels:
                continue
            if not a.label_file:
                raise ModelError(f"teachers {a.teacher_model_dir[0]} and {d} have different labels "
                                 f"({self.inner.labels} vs {theirs}); several teachers of one task share its labels")
            raise DataError(self.data_path(a.label_file), None,
                            f"labels {self.inner.labels} differ from the id2label of teacher {d}: {theirs}; "
                            f"use the teacher's label file (same labels, same order)")

    def check_tokenizers(self):
        """None when every model shares the student's vocabulary; else the teachers' tokenizer (if allowed)."""
        a = self.args
        vocabs = [self.load_tokenizer(d) for d in a.teacher_model_dir]
        if any(t.get_vocab() != vocabs[0].get_vocab() for t in vocabs[1:]):
            raise ModelError("the --teacher_model_dir models have different vocabularies; teachers must share one")
        if vocabs[0].get_vocab() == self.tokenizer.get_vocab():
            return None
        why = ("sequence labelling" if a.task == "sequence_labeling" else "intermediate --matches" if a.matches
               else None)
        sizes = (f"student: {self.student_what}, {len(self.tokenizer)} tokens; teacher {a.teacher_model_dir[0]}: "
                 f"{len(vocabs[0])} tokens")
        if why:
            raise ModelError(f"the student's vocabulary differs from the teacher's ({sizes}): {why} needs aligned "
                             f"tokens, so both must use the same tokenizer (a student built from the teacher, by "
                             f"--student_layers N or a config JSON, shares its tokenizer)")
        if not a.allow_different_tokenizers:
            raise ModelError(f"the student's vocabulary differs from the teacher's ({sizes}); pass "
                             f"--allow_different_tokenizers to tokenise every text for each model")
        logger.warning(f"different tokenizers ({sizes}): every text is tokenised for the teacher and the student")
        return vocabs[0]

    def build_matches(self, student):
        t_config, s_config = self.teachers[0].backbone.config, student.backbone.config
        matches = build_matches(self.args.matches, t_config.num_hidden_layers, s_config.num_hidden_layers,
                                t_config.hidden_size, s_config.hidden_size)
        for i, m in enumerate(matches):
            if m.proj and m.proj != (s_config.hidden_size, t_config.hidden_size):
                raise UsageError(f"match #{i} {m}: declares a projection {m.proj[0]}->{m.proj[1]} but the student's "
                                 f"hidden size is {s_config.hidden_size} and the teacher's {t_config.hidden_size}")
            if m.feature == "attention" and s_config.num_attention_heads != t_config.num_attention_heads:
                raise UsageError(f"match #{i} {m}: attention matching needs as many heads in the student "
                                 f"({s_config.num_attention_heads}) as in the teacher ({t_config.num_attention_heads})")
        n_t, n_s = t_config.num_hidden_layers, s_config.num_hidden_layers
        if n_s <= n_t:
            layer_map = " ".join(f"{t}<-{s}" for t, s in uniform_layer_map(n_t, n_s))
            logger.info(f"generated layer map, teacher <- student hidden states ({n_t} -> {n_s} layers): {layer_map}")
        logger.info("intermediate matches:\n" + describe_matches(matches))
        return matches

    # -- extra training data -------------------------------------------------------------------------
    def add_teacher_inputs(self) -> None:
        """Classification with different tokenizers: the teacher's own tokenisation of every text."""
        a = self.args

        def examples(path: str) -> list[TextExample]:
            return read_classification(self.data_path(path), self.inner.labels, a.is_text_pair)

        self.attach_teacher_inputs(self.train_features, examples(a.train_data_file))
        if a.dev_data_file:
            self.teacher_eval_features, _ = tokenize_examples(self.teacher_tokenizer, examples(a.dev_data_file),
                                                              a.max_seq_length)

    def attach_teacher_inputs(self, features: list[dict], examples: list[TextExample]) -> None:
        encoded, _ = tokenize_examples(self.teacher_tokenizer, examples, self.args.max_seq_length)
        for feature, enc in zip(features, encoded):
            feature.update({f"teacher_{k}": v for k, v in enc.items()})

    def aux_features(self) -> list[dict]:
        a = self.args
        examples = read_aux(self.data_path(a.aux_data_file), a.is_text_pair, a.max_aux_examples)
        if a.task == "sequence_labeling":
            features = encode_documents(self.tokenizer, [list(e.text_a) for e in examples], a.max_seq_length,
                                        a.doc_stride)
        else:
            features, _ = tokenize_examples(self.tokenizer, examples, a.max_seq_length)
            if self.teacher_tokenizer is not None:
                self.attach_teacher_inputs(features, examples)
        logger.info(f"{len(examples)} unlabelled examples from {a.aux_data_file} ({len(features)} features): KD only")
        return [{**f, "aux": True} for f in features]

    # -- batches, metrics, saving: the inner task's ----------------------------------------------------
    def train_sampler(self) -> TrainBatchSampler:
        lengths = [self.feature_length(f) for f in self.train_features]
        return grouped_sampler(self.train_features, lengths, lambda f: bool(f.get("aux")), self.args, self.env)

    def collate(self, features: Sequence[dict]) -> dict[str, torch.Tensor]:
        batch = self.inner.collate(features)
        first = features[0]
        if "teacher_input_ids" in first:
            own = collate_encodings([{k[len("teacher_"):]: v for k, v in f.items() if k.startswith("teacher_")}
                                     for f in features], self.teacher_tokenizer.pad_token_id)
            batch.update({f"teacher_{k}" if k != "attention_mask" else "teacher_input_mask": v for k, v in own.items()})
        if "teacher_logits" in first:
            batch["teacher_logits"] = stack_cached_logits([f["teacher_logits"] for f in features])
        return batch

    def feature_length(self, feature: dict) -> int:
        return self.inner.feature_length(feature)

    def train_stats(self, batch, output) -> dict:
        stats = self.inner.train_stats(batch, output) if "labels" in batch else {}
        parts = ("hard_loss", "kd_loss", "match_loss") if "labels" in batch else ("kd_loss", "match_loss")
        return {**stats, **{p: (getattr(output, p), 1) for p in parts
                            if getattr(output, p, None) is not None and (p != "match_loss" or self.model.matches)}}

    def predict(self, model, batch, output) -> list:
        return self.inner.predict(model, batch, output)

    def compute_metrics(self, predictions: list, model=None) -> dict:
        """The inner task's metrics, of the student's predictions or (`model`) a teacher's."""
        return self.inner.compute_metrics(predictions, model)

    def teacher_collate(self, features: Sequence[dict]) -> dict:
        if self.teacher_tokenizer is None:
            return self.inner.collate(features)
        return collate_encodings(features, self.teacher_tokenizer.pad_token_id)

    def lr_overrides(self) -> dict[str, float]:
        return {f"student.{k}": v for k, v in self.inner.lr_overrides().items()}

    def task_info(self) -> dict:
        return self.inner.task_info()

    def save(self, model, directory: str) -> None:
        self.inner.save(model, directory)  # calls Distiller.save_pretrained: the student + distill_state
