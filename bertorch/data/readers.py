"""Readers for the data formats bertorch users have: tsv/txt columns, JSON lines, labels.txt.

Every problem is reported as one line naming the file, the line number and the offending value, and is
raised before training starts, so a typo in line 40,000 never costs an hour of training.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Iterator

from bertorch.errors import UsageError

REPO_DATA_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "data")
SHARED_DATA_DIR = os.path.join(os.path.dirname(os.path.dirname(REPO_DATA_DIR)), "shared", "data")
FETCHED_DATA_DIR = os.path.join(os.path.expanduser("~"), ".cache", "bertorch", "data")  # python -m bertorch.data.fetch


class DataError(UsageError):
    """Bad input data; the message names file, line and value."""

    def __init__(self, path: str, line: int | None, message: str, value: object = None):
        where = f"{path}:{line}" if line is not None else path
        shown = "" if value is None else f": {_clip(value)!r}"
        super().__init__(f"{where}: {message}{shown}")


def _clip(value: object, limit: int = 80) -> object:
    if isinstance(value, str) and len(value) > limit:
        return value[:limit] + "…"
    return value


def data_roots(data_dir: str | None = None) -> list[str]:
    """Where relative data paths are looked up: --data_dir, $BERTORCH_DATA_DIR, the fetched sets, ./data (the
    working directory's, then the checkout's: an installed bertorch run from a clone finds it), ../shared/data."""
    roots = [data_dir, os.environ.get("BERTORCH_DATA_DIR"), FETCHED_DATA_DIR, os.path.abspath("data"), REPO_DATA_DIR,
             SHARED_DATA_DIR]
    return list(dict.fromkeys(r for r in roots if r))


def resolve_path(path: str, data_dir: str | None = None) -> str:
    """`path` as given if it exists, else the first data root that has it; a clear error otherwise."""
    if os.path.exists(path) or os.path.isabs(path):
        if not os.path.exists(path):
            raise DataError(path, None, "file not found")
        return path
    tried = [path]
    for root in data_roots(data_dir):
        candidate = os.path.join(root, path)
        tried.append(candidate)
        if os.path.exists(candidate):
            return candidate
    raise DataError(path, None, "file not found (looked in: " + ", ".join(tried) + ")" + fetch_hint(path))


def fetch_hint(path: str) -> str:
    """'; python -m bertorch.data.fetch NAME downloads it' for a file of a set that fetch knows."""
    from bertorch.data.sources import DATASETS, OUTPUTS

    if path.replace(os.sep, "/") not in OUTPUTS:
        return ""
    name = next(n for n, spec in DATASETS.items() if path.replace(os.sep, "/").startswith(spec[1]))
    return f"; `python -m bertorch.data.fetch {name}` downloads it"


def iter_lines(path: str) -> Iterator[tuple[int, str]]:
    """(1-based line number, line without its newline); blank lines are skipped. A UTF-8 byte-order mark (what
    Windows editors put before line 1) is dropped, so it never becomes part of a label or a JSON line."""
    if os.path.isdir(path):
        raise DataError(path, None, "is a directory, expected a data file")
    try:
        with open(path, encoding="utf-8-sig") as f:
            for number, line in enumerate(f, start=1):
                line = line.rstrip("\r\n")
                if line.strip():
                    yield number, line
    except UnicodeDecodeError as e:
        raise DataError(path, None, f"not UTF-8 text ({e.reason} at byte {e.start})") from None
    except OSError as e:
        raise DataError(path, None, f"cannot read: {e.strerror}") from None


def read_labels(path: str) -> list[str]:
    """labels.txt: one label a line, line order = label id. Duplicates are an error."""
    labels: list[str] = []
    seen: dict[str, int] = {}
    for number, line in iter_lines(path):
        label = line.strip()
        if label in seen:
            raise DataError(path, number, f"duplicate label (first on line {seen[label]})", label)
        seen[label] = number
        labels.append(label)
    if not labels:
        raise DataError(path, None, "label file is empty")
    return labels


@dataclass
class TextExample:
    """One example of a text or text-pair task; `label` is a string (class), float (score) or None."""
    text_a: str
    text_b: str | None = None
    label: str | float | None = None
    line: int = 0


def read_columns(path: str, num_columns: int, hint: str = "") -> Iterator[tuple[int, list[str]]]:
    """Split each line on tabs and insist on exactly `num_columns` non-empty fields."""
    for number, line in iter_lines(path):
        fields = line.split("\t")
        if len(fields) != num_columns:
            raise DataError(path, number, f"expected {num_columns} tab-separated columns, found "
                                          f"{len(fields)}{hint}", line)
        for i, field in enumerate(fields):
            if not field.strip():
                raise DataError(path, number, f"column {i + 1} is empty", line)
        yield number, fields


def read_texts(path: str, is_text_pair: bool, limit: int | None = None, pair_hint: str = "") -> list[TextExample]:
    """One text (or `text_a\\ttext_b`) a line, unlabelled; further columns, e.g. a label, are ignored. At most
    `limit` examples; `pair_hint` says, in the error for a line without text_b, why pairs are expected."""
    examples = []
    for number, line in iter_lines(path):
        fields = line.split("\t")
        if is_text_pair and len(fields) < 2:
            raise DataError(path, number, f"expected text_a\\ttext_b {pair_hint}".rstrip(), line)
        examples.append(TextExample(fields[0], fields[1] if is_text_pair else None, None, number))
        if limit and len(examples) >= limit:
            break
    if not examples:
        raise DataError(path, None, "no examples in file")
    return examples


def read_classification(path: str, labels: list[str] | None, is_text_pair: bool) -> list[TextExample]:
    """`text\\tlabel`, or `text_a\\ttext_b\\tlabel` with is_text_pair; labels checked against labels.txt."""
    columns = 3 if is_text_pair else 2
    hint = (" (a single-text file? drop --is_text_pair)" if is_text_pair
            else " (a text-pair file? add --is_text_pair)")
    known = set(labels) if labels is not None else None
    examples = []
    for number, fields in read_columns(path, columns, hint):
        label = fields[-1].strip()
        if known is not None and label not in known:
            raise DataError(path, number, f"label not in the label file ({len(known)} labels)", label)
        examples.append(TextExample(fields[0], fields[1] if is_text_pair else None, label, number))
    if not examples:
        raise DataError(path, None, "no examples in file")
    return examples


def read_jsonl(path: str) -> Iterator[tuple[int, dict]]:
    for number, line in iter_lines(path):
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(path, number, f"invalid JSON ({e.msg} at column {e.colno})", line) from None
        if not isinstance(obj, dict):
            raise DataError(path, number, "expected a JSON object", line)
        yield number, obj
