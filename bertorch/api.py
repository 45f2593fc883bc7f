"""Train from Python lists instead of files: `bertorch.train(task, model=..., train=[...], dev=[...], output_dir=...,
**flags)` returns the results and a ready Predictor.

    result = bertorch.train("classification", model=model_dir, train=[("房间很干净", "positive"), ...],
                            dev=[...], output_dir="outputs/api", epochs=3, save_best_model=True)
    result.results["best_accuracy"], result.predictor.predict(["服务周到"])

It is the run of `run_classifier.py` / `run_ner.py`, not a second loop: the lists are written, in the documented
file formats, to a temporary directory (kept with `keep_data=DIR`), and `cli.run` trains on them with the same
flags, checks, outputs and error messages; any flag of the script is a keyword (`learning_rate=3e-5`,
`use_crf=True`, `scheduler="cosine"`, `max_steps=200`, `fp16=True`, `no_cuda=True`...). The predictor loads
`output_dir/best` when --save_best_model kept one, else `output_dir`.
"""
from __future__ import annotations

import argparse
import difflib
import json
import os
import re
import tempfile
from typing import Any, NamedTuple, Sequence

from bertorch import cli
from bertorch.errors import UsageError

# task name -> (module:Task class, what one example is)
TASKS = {
    "classification": ("bertorch.tasks.classification:ClassificationTask", "(text, label) or (text_a, text_b, label)"),
    "ner": ("bertorch.tasks.ner:NerTask", "(text or list of characters, list of tags, one per character)"),
}
ALIASES = {"sequence_labeling": "ner", "tagging": "ner", "text_classification": "classification"}
GIVEN_AS_ARGUMENTS = {"train_data_file": "train=", "dev_data_file": "dev=", "label_file": "labels=",
                      "is_text_pair": "pairs in train=", "pretrained_model_name_or_path": "model=",
                      "saved_dir": "output_dir=", "data_dir": "train= and dev="}


class TrainResult(NamedTuple):
    results: dict          # all_results.json: best and final dev metrics, steps, train time
    predictor: Any         # Predictor.from_pretrained(model_dir): ClassificationPredictor or TaggerPredictor
    model_dir: str         # output_dir/best with save_best_model (when a dev set made one), else output_dir


def train(task: str, *, model: str, train: Sequence, output_dir: str, dev: Sequence | None = None,
          labels: Sequence[str] | None = None, keep_data: str | None = None, **flags) -> TrainResult:
    """Fine-tune `model` (a local directory or hub name) on `train` and return the results and a Predictor.

    task: "classification" (examples `(text, label)`, or `(text_a, text_b, label)` for pairs) or "ner"
    (`(text_or_chars, tags)`, one tag per character). `labels` fixes the label order (default: sorted, with
    "O" first for NER); labels are strings in the model (`1` becomes "1"). `flags` are the script's flags by
    name, e.g. `epochs=3, batch_size=16, learning_rate=3e-5, use_crf=True, overwrite_output_dir=True`.
    Bad examples raise ValueError naming the example; bad flags, data or models raise UsageError.
    Training sets glibc's malloc thresholds for the rest of the process (bertorch.memory.tune_allocator)."""
    from bertorch.predict import Predictor
    from bertorch.predictors.base import load_class

    name = ALIASES.get(task, task)
    if name not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose one of {', '.join([*TASKS, *ALIASES])}")
    task_cls = load_class(TASKS[name][0])
    write = {"classification": write_classification, "ner": write_tagged}[name]
    with tempfile.TemporaryDirectory(prefix="bertorch-train-") as tmp:
        data_dir = keep_data or tmp
        os.makedirs(data_dir, exist_ok=True)
        data_args = write(data_dir, train, dev, labels)
        argv = ["--pretrained_model_name_or_path", str(model), "--saved_dir", str(output_dir), *data_args,
                *flags_to_argv(cli.build_parser(task_cls, None), flags)]
        check_argv(task_cls, argv)
        try:
            results = cli.run(task_cls, argv)
        except SystemExit as e:  # cli.run's one-line report of a user's mistake
            if isinstance(e.code, str) and e.code.startswith("error: "):
                raise UsageError(e.code[len("error: "):]) from None
            raise
    best = os.path.join(output_dir, "best")
    model_dir = best if flags.get("save_best_model") and os.path.isdir(best) else str(output_dir)
    return TrainResult(results, Predictor.from_pretrained(model_dir), model_dir)


def flags_to_argv(parser: argparse.ArgumentParser, flags: dict) -> list[str]:
    """Keywords -> command-line words, by the parser's own actions (booleans, lists, aliases)."""
    by_name = {}
    for action in parser._actions:
        for option in action.option_strings:
            by_name.setdefault(option.lstrip("-"), (option, action))
        by_name.setdefault(action.dest, (action.option_strings[0] if action.option_strings else None, action))
    argv = []
    for key, value in flags.items():
        if key in GIVEN_AS_ARGUMENTS or key == "output_dir":
            raise TypeError(f"{key}= is given by train()'s {GIVEN_AS_ARGUMENTS.get(key, 'output_dir=')} argument")
        if key not in by_name or by_name[key][0] is None:
            close = difflib.get_close_matches(key, [k for k, (o, _) in by_name.items() if o], n=3)
            raise TypeError(f"unknown flag {key!r}" + (f"; did you mean {', '.join(close)}?" if close else ""))
        option, action = by_name[key]
        if value is None:
            continue
        if isinstance(action, argparse.BooleanOptionalAction):
            argv.append(option if value else "--no-" + option.lstrip("-"))
        elif action.nargs == 0:  # store_true / store_false: the flag or nothing
            argv += [option] if value else []
        elif isinstance(value, (list, tuple)):
            argv += [option, *map(str, value)]
        else:
            argv += [option, str(value)]
    return argv


def check_argv(task_cls, argv: list[str]) -> None:
    """The CLI's own parsing and checks, raising UsageError instead of printing usage and exiting."""
    parser = cli.build_parser(task_cls, None)

    def error(message: str):
        raise UsageError(message)

    parser.error = error
    cli.validate_args(parser.parse_args(argv), parser, task_cls)


def one_line(value: Any, where: str) -> str:
    text = str(value)
    if not text.strip():
        raise ValueError(f"{where}: empty text")
    return re.sub(r"[\t\r\n]+", " ", text)  # whitespace the tokenizer ignores, but a tsv line cannot hold


def examples_of(split: str, examples: Sequence | None) -> list:
    if examples is None:
        return []
    examples = list(examples)
    if split == "train" and not examples:
        raise ValueError("train: no examples")
    return examples


def write_labels(data_dir: str, labels: Sequence[str], used: dict[str, str]) -> list[str]:
    known = set(labels)
    for label, where in used.items():
        if label not in known:
            raise ValueError(f"{where}: label {label!r} is not in labels= ({', '.join(labels)})")
    path = os.path.join(data_dir, "labels.txt")
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(f"{label}\n" for label in labels)
    return ["--label_file", path]


def write_splits(data_dir: str, train: Sequence, dev: Sequence | None, ext: str, line_of) -> list[str]:
    """train.<ext> (and dev.<ext>), one `line_of(example, "train[i]")` a line; the data-file flags for them."""
    argv = []
    for split, examples in (("train", examples_of("train", train)), ("dev", examples_of("dev", dev))):
        if split == "dev" and not examples:
            continue
        path = os.path.join(data_dir, f"{split}.{ext}")
        with open(path, "w", encoding="utf-8") as f:
            f.writelines(line_of(example, f"{split}[{i}]") + "\n" for i, example in enumerate(examples))
        argv += [f"--{split}_data_file", path]
    return argv


def write_classification(data_dir: str, train: Sequence, dev: Sequence | None, labels) -> list[str]:
    used, width = {}, []

    def line_of(example, where: str) -> str:
        if not isinstance(example, (tuple, list)) or len(example) not in (2, 3):
            raise ValueError(f"{where}: expected {TASKS['classification'][1]}, got {example!r}")
        width.append(len(example))
        if width[-1] != width[0]:
            raise ValueError(f"{where}: {width[-1]} fields where the first example has {width[0]}; "
                             f"single texts and pairs do not mix")
        label = one_line(example[-1], where + " label").strip()
        used.setdefault(label, where)
        return "\t".join([*(one_line(t, where) for t in example[:-1]), label])

    argv = write_splits(data_dir, train, dev, "tsv", line_of)
    labels = [str(label) for label in labels] if labels is not None else sorted(used)
    return argv + write_labels(data_dir, labels, used) + (["--is_text_pair"] if width[0] == 3 else [])


def write_tagged(data_dir: str, train: Sequence, dev: Sequence | None, labels) -> list[str]:
    used = {}

    def line_of(example, where: str) -> str:
        if not isinstance(example, (tuple, list)) or len(example) != 2:
            raise ValueError(f"{where}: expected {TASKS['ner'][1]}, got {example!r}")
        chars = list(example[0]) if isinstance(example[0], str) else example[0]
        tags = [str(tag) for tag in example[1]]
        if not chars or not all(isinstance(c, str) for c in chars):
            raise ValueError(f"{where}: the text must be a non-empty string or list of strings")
        if len(tags) != len(chars):
            raise ValueError(f"{where}: {len(chars)} characters but {len(tags)} tags")
        for tag in tags:
            used.setdefault(tag, where)
        return json.dumps({"text": chars, "label": tags}, ensure_ascii=False)

    argv = write_splits(data_dir, train, dev, "json", line_of)
    if labels is None:
        labels = sorted(used, key=lambda tag: (tag != "O", tag.partition("-")[2], tag))
    return argv + write_labels(data_dir, [str(label) for label in labels], used)
