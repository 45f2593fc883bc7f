"""Label a file with a saved model (`python predict.py`, `bertorch-predict`); and the import path users know:
`from bertorch.predict import Predictor`, then `Predictor.from_pretrained(dir).predict(texts)`.

The predictors live in bertorch/predictors/: base.py (`Predictor.from_pretrained` picks the one for the task
that saved the directory), classifier.py, tagger.py, encoder.py, and backends.py (PyTorch, onnxruntime). The
names below are re-exported from there; `ClassificationPredictor`, `TaggerPredictor` and `SentenceEncoder` are
imported only when asked for.
"""
from __future__ import annotations

import argparse
from typing import Sequence

from loguru import logger

from bertorch.argtypes import add_backend_flag, add_model_dir_flag, positive_int
from bertorch.errors import reported_errors
from bertorch.model_dir import MULTITASK_FILE, TASK_FILE, read_task_info
from bertorch.predictors.backends import TorchBackend
from bertorch.predictors.base import PREDICTORS, Predictor, load_class, load_predictors

__all__ = ["MULTITASK_FILE", "PREDICTORS", "TASK_FILE", "Predictor", "TorchBackend", "load_predictors", "main",
           "read_task_info"]


def __getattr__(name: str):
    """`from bertorch.predict import SentenceEncoder, TaggerPredictor` without importing them eagerly."""
    for spec in PREDICTORS.values():
        if spec.endswith(":" + name):
            return load_class(spec)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Label a file with a saved bertorch model: one output line per "
                                                 "input line, in order (a blank input line gives an empty line, or "
                                                 "for a tagger an empty result: no tags, no entities).",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter, allow_abbrev=False)
    add_model_dir_flag(parser)
    parser.add_argument("--input_file", required=True, help="one input a line")
    parser.add_argument("--output_file", required=True,
                        help="where the predictions go, exactly this path: a classifier's labels or a tagger's JSON "
                             "lines, one per input line; for a sentence-embedding model a .npy array, one row per "
                             "line (the name must end in .npy and no line may be blank)")
    parser.add_argument("--batch_size", type=positive_int, default=32)
    parser.add_argument("--return_probs", action="store_true", help="also write class probabilities (classifiers)")
    add_backend_flag(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with reported_errors():
        predictor = Predictor.from_pretrained(args.model_dir, backend=args.backend)
        options = {"return_probs": True} if args.return_probs else {}
        n = predictor.predict_file(args.input_file, args.output_file, args.batch_size, **options)
    logger.info(f"wrote {n} predictions to {args.output_file}")
    return n
