"""argparse types and flags shared by the entry scripts, training and inference alike: a bad value is refused at
parse time with one line naming the flag, not found later inside range() or a batch loop; a flag several commands
take (--model_dir, --backend, --data_dir) is defined once, so its name, choices and help agree everywhere."""
from __future__ import annotations

import argparse


def positive_int(text: str) -> int:
    """An integer >= 1 (a batch size, a count of examples)."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value


def open_unit_float(text: str) -> float:
    """argparse type: a float in (0, 1) (a decay)."""
    value = float(text)
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"must be in (0, 1), got {text}")
    return value


def non_negative_float(text: str) -> float:
    """argparse type: a float >= 0 (nan refused)."""
    value = float(text)
    if not value >= 0.0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def port_number(text: str) -> int:
    """argparse type: a TCP port, 0 (any free one) to 65535."""
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be a TCP port from 0 to 65535, got {text}")
    return value


BACKENDS = ("torch", "onnx")


def add_model_dir_flag(parser, what: str = "a directory written by a run_*.py script") -> None:
    """--model_dir of predict, serve and export_onnx: the saved model to load."""
    parser.add_argument("--model_dir", required=True, help=what)


def add_backend_flag(parser) -> None:
    """--backend of predict and serve: PyTorch, or onnxruntime on an export_onnx.py export."""
    parser.add_argument("--backend", choices=BACKENDS, default="torch", help="PyTorch or onnxruntime")


def add_data_dir_flag(parser, what: str = "relative data paths") -> None:
    """--data_dir of the training scripts and export_onnx: the lookup of bertorch.data.readers.resolve_path."""
    parser.add_argument("--data_dir", default=None,
                        help=f"where {what} are looked up (also $BERTORCH_DATA_DIR; then ./data, ../shared/data)")
