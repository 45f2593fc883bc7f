"""Knowledge distillation as a task: the inner task (classification or sequence labelling) supplies data,
metrics, predictions and the saved directory; this task swaps in a `Distiller` as the model.

So the saved `--saved_dir` (and `best/`) is a plain student that run_*/Predictor/ONNX load like any other
model of the inner task, and every shared flag (DDP, accumulation, AMP, resume, ...) works unchanged. One
class per inner task (`--task`: DISTILL_TASKS), so each offers its inner task's flags and no other's.
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
from bertorch.data.readers import DataError, TextExample, read_classification, read_texts
from bertorch.data.tagged import encode_documents
from bertorch.distill.batches import grouped_sampler
from bertorch.distill.distiller import (Distiller, KDConfig, StepClock, cache_teacher_logits, load_teacher,
                                       stack_cached_logits)
from bertorch.distill.matches import PRESET_HELP, matches_for_models
from bertorch.distill.report import display_parameters
from bertorch.distill.student import LAYER_SELECTIONS, prepare_student
from bertorch.errors import ModelError, UsageError
from bertorch.losses.classification import LOSS_ALIASES, LOSS_TYPES
from bertorch.losses.distillation import KD_LOSSES, TEMPERATURE_SCHEDULES, WEIGHT_SCHEDULES
from bertorch.model_dir import TASK_FILE, is_span_model
from bertorch.models.global_pointer import DEFAULT_HEAD_SIZE
from bertorch.tasks.base import Task
from bertorch.tasks.classification import ClassificationTask, tokenize_examples
from bertorch.tasks.ner import NerTask

KINDS = ("classification", "sequence_labeling")  # --task values of the single-task distillations


def teacher_labels(teacher) -> list[str]:
    config = teacher.backbone.config
    return [config.id2label[i] for i in range(config.num_labels)]


class DistillTask(Task):
    """What every distillation shares; a subclass per inner task says which one and what differs."""

    name = "distill"
    kind = ""  # the --task value
    inner_task: type[Task] = Task
    teacher_task = ""  # the teachers' task, as their bertorch.json says
    required_flags = ("label_file",)
    hard_label_losses = LOSS_TYPES + tuple(LOSS_ALIASES)
    logits_mask: str | None = None  # batch key masking token-level logits for the KD loss
    student_what: str | None = None  # where the student comes from, for messages (set by a multi-task run)

    @classmethod
    def add_args(cls, parser: argparse.ArgumentParser) -> None:
        cls.add_inner_args(parser)
        # The student is --student_model; --pretrained_model_name_or_path is accepted as its alias.
        parser.set_defaults(pretrained_model_name_or_path=None)
        g = parser.add_argument_group("distillation")
        g.add_argument("--task", choices=KINDS + ("multitask",), default=cls.kind or None,
                       help="the teacher's task (each has its own flags: --task sequence_labeling --help); multitask: "
                            "several teachers of different tasks, see --task_spec")
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
        g.add_argument("--hard_label_loss", choices=cls.hard_label_losses, default=None,
                       help="student's loss on gold labels (None: --loss_type" +
                            (", or crf with --use_crf or a CRF teacher)" if "crf" in cls.hard_label_losses else ")"))
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
        cls.add_kind_args(g)

    @classmethod
    def add_inner_args(cls, parser: argparse.ArgumentParser) -> None:
        """The inner task's own flags (--is_text_pair; --tag, --use_crf, ...), defined once there."""
        cls.inner_task.add_args(parser)

    @classmethod
    def add_kind_args(cls, group) -> None:
        """Distillation flags only this kind of distillation reads."""

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
        self.check_flags()
        self.teachers, infos = zip(*(load_teacher(d) for d in a.teacher_model_dir))
        for d, info in zip(a.teacher_model_dir, infos):
            if info["task"] != self.teacher_task:
                raise ModelError(f"--teacher_model_dir {d} holds a {info['task']!r} model, "
                                 f"not one for --task {self.kind}")
            self.check_teacher_inputs(d, info)
        self.first_teacher = infos[0]
        self.hard_loss = self.student_loss(infos[0])
        self.inner = self.build_inner()
        self.name, self.metric_for_best = f"distill {self.kind}", self.inner.metric_for_best
        self.greater_is_better = self.inner.greater_is_better
        self.tokenizer, student = self.inner.tokenizer, self.inner.model
        self.check_labels()
        self.teacher_tokenizer = self.check_tokenizers()
        matches = matches_for_models(a.matches, self.teachers[0].backbone.config, student.backbone.config)
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
                          None if self.span_teacher else self.logits_mask, self.span_teacher)
        self.model = Distiller(student, list(self.teachers), matches, config, clock)
        if a.teacher_cached:
            cache_teacher_logits(self.model.to(self.env.device), self.train_features, self.collate,
                                 self.feature_length, a.eval_batch_size, self.env)
            logger.info(f"teacher logits cached for {len(self.train_features)} training features")
        for d, teacher in zip(a.teacher_model_dir, self.teachers):
            logger.info(f"teacher {d} parameters:\n{display_parameters(teacher)}")
        logger.info(f"student parameters:\n{display_parameters(student)}")

    def check_flags(self) -> None:
        """Flag combinations that cannot work, refused before any model is loaded."""
        a = self.args
        if a.task_spec:
            raise UsageError("--task_spec is multi-task distillation: give --task multitask, or no --task")
        if not a.teacher_model_dir:
            raise UsageError("the following arguments are required: --teacher_model_dir")
        if a.temperature <= 0:
            raise UsageError(f"--temperature must be positive, got {a.temperature}")
        if a.teacher_cached and a.matches:
            raise UsageError("--teacher_cached keeps teacher logits only; intermediate --matches need the teacher's "
                             "hidden states at every step: drop one of them")
        if a.matches and len(a.teacher_model_dir) > 1:
            raise UsageError("intermediate --matches need a single --teacher_model_dir (several teachers are "
                             "combined through their soft labels only)")

    def check_teacher_inputs(self, directory: str, info: dict) -> None:
        """Refuse, at start-up, a teacher trained on other inputs than this run feeds it (bertorch.json says)."""

    @property
    def span_teacher(self) -> bool:
        """The teacher scores spans (GlobalPointer): KD on its span scores, and the student gets its head."""
        return is_span_model(getattr(self, "first_teacher", {}))

    def student_head(self) -> dict:
        """Flags of the inner task that follow the teacher's head (a span teacher's head and head size)."""
        return {}

    def student_loss(self, teacher_info: dict) -> str:
        """The student's hard-label loss: --hard_label_loss, else --loss_type."""
        return self.args.hard_label_loss or self.args.loss_type

    def build_inner(self) -> Task:
        """The inner task on the student (built from the flags in a temporary directory), set up."""
        a = self.args
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
                                               "loss_type": "cross_entropy" if crf or self.span_teacher
                                               else self.hard_loss,
                                               "label_file": label_file, **self.student_head()})
            inner = self.inner_task(inner_args, self.env)
            inner.setup()
            if (crf or self.span_teacher) and not a.init_from_ckpt:  # a CRF or span head copied with the teacher's
                inner.model.load_weights(student_dir, strict=False)  # layers (a narrowed head's shapes are skipped)
            return inner
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

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
        why = self.aligned_tokens_needed()
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

    def aligned_tokens_needed(self) -> str | None:
        """Why student and teacher must share a tokenizer, if they must."""
        return "intermediate --matches" if self.args.matches else None

    # -- extra training data -------------------------------------------------------------------------
    def aux_features(self) -> list[dict]:
        a = self.args
        examples = read_texts(self.data_path(a.aux_data_file), self.aux_text_pairs(), a.max_aux_examples,
                              "(--is_text_pair)")
        features = self.encode_aux(examples)
        logger.info(f"{len(examples)} unlabelled examples from {a.aux_data_file} ({len(features)} features): KD only")
        return [{**f, "aux": True} for f in features]

    def aux_text_pairs(self) -> bool:
        return False

    def encode_aux(self, examples: list[TextExample]) -> list[dict]:
        raise NotImplementedError

    # -- batches, metrics, saving: the inner task's ----------------------------------------------------
    def train_sampler(self) -> TrainBatchSampler:
        lengths = [self.feature_length(f) for f in self.train_features]
        return grouped_sampler(self.train_features, lengths, lambda f: bool(f.get("aux")), self.args, self.env)

    def collate(self, features: Sequence[dict]) -> dict[str, torch.Tensor]:
        batch = self.inner.collate(features)
        first = features[0]
        if "teacher_input_ids" in first:
            teacher = [{k[len("teacher_"):]: v for k, v in f.items() if k.startswith("teacher_")} for f in features]
            own = collate_encodings(teacher, self.teacher_tokenizer.pad_token_id, self.pad_to(teacher))
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
        return collate_encodings(features, self.teacher_tokenizer.pad_token_id, self.pad_to(features))

    def lr_overrides(self) -> dict[str, float]:
        return {f"student.{k}": v for k, v in self.inner.lr_overrides().items()}

    def task_info(self) -> dict:
        return self.inner.task_info()

    def save(self, model, directory: str) -> None:
        self.inner.save(model, directory)  # calls Distiller.save_pretrained: the student + distill_state


class ClassificationDistillTask(DistillTask):
    kind, inner_task, teacher_task = "classification", ClassificationTask, "classification"

    @classmethod
    def add_kind_args(cls, group) -> None:
        group.add_argument("--allow_different_tokenizers", action="store_true",
                           help="tokenise every text for the teacher and the student (vocabularies differ)")

    def check_teacher_inputs(self, directory: str, info: dict) -> None:
        """A text-pair teacher scores pairs: distilled on single texts (or the other way round) its soft labels are
        those of inputs it never saw, and nothing would say so."""
        if "is_text_pair" not in info or bool(info["is_text_pair"]) == self.args.is_text_pair:  # (a transformers dir)
            return
        if self.args.is_text_pair:
            raise ModelError(f"--teacher_model_dir {directory} was trained on single texts, but --is_text_pair "
                             f"distils text pairs: drop --is_text_pair, or distil a teacher trained on pairs")
        raise ModelError(f"--teacher_model_dir {directory} was trained on text pairs (is_text_pair in its "
                         f"{TASK_FILE}), but this run distils single texts: add --is_text_pair and give "
                         f"text_a\\ttext_b\\tlabel data")

    def add_teacher_inputs(self) -> None:
        """A teacher with another tokenizer (classification only) gets its own tokenisation of every text."""
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

    def aux_text_pairs(self) -> bool:
        return self.args.is_text_pair

    def encode_aux(self, examples: list[TextExample]) -> list[dict]:
        features, _ = tokenize_examples(self.tokenizer, examples, self.args.max_seq_length)
        if self.teacher_tokenizer is not None:
            self.attach_teacher_inputs(features, examples)
        return features


class NerDistillTask(DistillTask):
    kind, inner_task, teacher_task = "sequence_labeling", NerTask, "ner"
    hard_label_losses = DistillTask.hard_label_losses + ("crf",)
    logits_mask = "char_mask"

    @classmethod
    def add_inner_args(cls, parser: argparse.ArgumentParser) -> None:
        """The tagger's flags without --head: the student's head follows the teacher (or --use_crf)."""
        cls.inner_task.add_labelling_args(parser)

    def student_loss(self, teacher_info: dict) -> str:
        """A CRF teacher gives a CRF student unless --hard_label_loss names another loss (as multi-task does);
        a span (GlobalPointer) teacher gives a student with its head, trained on the GlobalPointer loss."""
        a = self.args
        if is_span_model(teacher_info):
            loss, decoding = a.hard_label_loss or ("crf" if a.use_crf else None), getattr(a, "decoding", None)
            given = f"--hard_label_loss {loss} (or --use_crf)" if loss else decoding and f"--decoding {decoding}"
            if given:
                raise UsageError(f"the teacher is a span model (--head {teacher_info['head']}): its student gets the "
                                 f"same head and trains on its span loss, so {given} does not apply; drop it")
            if a.teacher_cached:
                raise UsageError("--teacher_cached keeps per-character logits; a span teacher's scores are "
                                 "(types x length x length) per example: drop --teacher_cached")
            logger.info(f"the teacher is a span model: the student gets its --head {teacher_info['head']} and KD "
                        f"on its span scores")
            return "span"
        crf_teacher = bool(teacher_info.get("use_crf"))
        if crf_teacher and a.hard_label_loss is None:
            logger.info("the teacher has a CRF, so the student gets one (--hard_label_loss crf); "
                        "--hard_label_loss cross_entropy trains a Linear head instead")
        loss = a.hard_label_loss or ("crf" if a.use_crf or crf_teacher else a.loss_type)
        if loss == "crf" and getattr(a, "decoding", None) is not None:
            raise UsageError(f"--decoding {a.decoding} is for a Linear student; this one gets a CRF, which decodes "
                             f"with its own Viterbi (--hard_label_loss cross_entropy for a Linear head)")
        return loss

    def student_head(self) -> dict:
        info = self.first_teacher
        if not is_span_model(info):
            return {}
        return {"head": info["head"], "gp_head_size": int(info.get("gp_head_size", DEFAULT_HEAD_SIZE))}

    def aligned_tokens_needed(self) -> str | None:
        return "sequence labelling"

    def encode_aux(self, examples: list[TextExample]) -> list[dict]:
        a = self.args
        return encode_documents(self.tokenizer, [list(e.text_a) for e in examples], a.max_seq_length, a.doc_stride)


DISTILL_TASKS = {cls.kind: cls for cls in (ClassificationDistillTask, NerDistillTask)}
