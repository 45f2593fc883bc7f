"""Kept so that `from bertorch.onnx.runtime import OnnxBackend, ONNX_NAME, ...` keeps working: the onnxruntime
backend lives with the other predictor backends in bertorch/predictors/backends.py (the predictors load it for
`backend="onnx"`, and this package's export and checks build on the predictors), the file names in
bertorch/model_dir.py."""
from bertorch.model_dir import INT8_NAME, ONNX_NAME
from bertorch.predictors.backends import (CPU, CUDA, INPUT_NAMES, OnnxBackend, OnnxError, choose_providers,
                                          onnx_predictor, require_onnxruntime, resolve_onnx_path)

__all__ = ["CPU", "CUDA", "INPUT_NAMES", "INT8_NAME", "ONNX_NAME", "OnnxBackend", "OnnxError", "choose_providers",
           "onnx_predictor", "require_onnxruntime", "resolve_onnx_path"]
