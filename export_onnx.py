"""Export a saved bertorch model (classifier, tagger with or without CRF, sentence encoder) to ONNX, check
it against PyTorch at two batch sizes x two sequence lengths, and optionally write an int8 model too.
Exits non-zero when the graph does not match PyTorch. --optimize fuses the graph for onnxruntime (one
Attention, BiasGelu and two SkipLayerNormalization nodes per layer: for onnxruntime-gpu; on CPU it runs
no faster than the plain graph of standard ONNX ops).

    python export_onnx.py --model_dir outputs/ner --output outputs/ner-onnx [--opset 17] \\
        [--quantize int8] [--dev_file data/ner/dev.json] [--optimize]
    Predictor.from_pretrained("outputs/ner-onnx", backend="onnx").predict(["张三去北京"])
"""
from bertorch.onnx.command import run


def main(argv=None):
    return run(argv, description=__doc__)


if __name__ == "__main__":
    main()
