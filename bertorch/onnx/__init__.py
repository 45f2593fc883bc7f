"""ONNX export and onnxruntime inference for every model kind bertorch saves.

    path = export_model("outputs/ner", "outputs/ner-onnx")          # graph + tokenizer/config/CRF beside it
    check_parity("outputs/ner", path).ok                             # 2 batch sizes x 2 lengths vs PyTorch
    quantize_int8(path)                                              # model_int8.onnx
    Predictor.from_pretrained("outputs/ner-onnx", backend="onnx")    # same results as backend="torch"

Modules: export (graph per task), optimize (eager-attention trace, optional fusion for onnxruntime), verify
(parity), evaluate (dev metrics, agreement, int8), command (export_onnx.py). The onnxruntime backend
(OnnxBackend, providers, session options, input checks) is a predictor backend, in
bertorch/predictors/backends.py, re-exported here and by runtime.py. onnxruntime is imported lazily so that
`import bertorch.onnx` works without it and the error names the extra to install.
"""
from bertorch.onnx.evaluate import agreement, evaluate, quantize_int8
from bertorch.onnx.export import export_model
from bertorch.onnx.verify import ParityReport, check_parity
from bertorch.predictors.backends import (OnnxBackend, OnnxError, choose_providers, onnx_predictor,
                                          require_onnxruntime)

__all__ = ["OnnxBackend", "OnnxError", "ParityReport", "agreement", "check_parity", "choose_providers", "evaluate",
           "export_model", "onnx_predictor", "quantize_int8", "require_onnxruntime"]
