"""Label a file with a saved model (`python predict.py`, `bertorch-predict`); and the import path users know:
`from bertorch.predict import Predictor`, then `Predictor.from_pretrained(dir).predict(texts)`.

The predictors live in bertorch/predictors/: base.py (`Predictor.from_pretrained` picks the one for the task
that saved the directory), classifier.py, tagger.py, encoder.py, and backends.py (PyTorch, onnxruntime). The
names below are re-exported from there; `ClassificationPredictor`, `TaggerPredictor` and `SentenceEncoder` are
imported only when asked for.
"""
from __future__ import annotations

from typing import Sequence

from loguru import logger

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


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description="Label a file with a saved bertorch model.",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--model_dir", required=True, help="directory written by a run_*.py script")
    parser.add_argument("--input_file", required=True, help="one input a line")
    parser.add_argument("--output_file", required=True, help="where the predictions go")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--return_probs", action="store_true", help="also write class probabilities")
    parser.add_argument("--backend", choices=("torch", "onnx"), default="torch")
    args = parser.parse_args(argv)
    predictor = Predictor.from_pretrained(args.model_dir, backend=args.backend)
    n = predictor.predict_file(args.input_file, args.output_file, args.batch_size, return_probs=args.return_probs)
    logger.info(f"wrote {n} predictions to {args.output_file}")
    return n
