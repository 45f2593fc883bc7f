"""results/summary.png: the figures a reader would rather see than read, drawn from the result files.

Left: training throughput by padding strategy (bench/train_throughput.py). Right: inference speed of
PyTorch / ONNX fp32 / ONNX int8 relative to PyTorch at batch 1 and 32 (scripts/onnx.sh).
"""
import json
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "results")


def main() -> str:
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    train = os.path.join(RESULTS, "train_throughput.json")
    if os.path.exists(train):
        runs = json.load(open(train))["classification"]
        bf16 = os.path.join(RESULTS, "train_throughput_bf16.json")
        if os.path.exists(bf16):
            runs["ours + bf16"] = json.load(open(bf16))["classification"]["ours"]
        names = {"max_len": "pad to max length", "longest": "pad to longest\n(original bertorch)",
                 "ours": "length-grouped\n(bertorch default)", "ours + bf16": "length-grouped\n+ --bf16"}
        order = [k for k in ("max_len", "longest", "ours", "ours + bf16") if k in runs]
        left.bar([names[k] for k in order], [runs[k]["samples/s"] for k in order], color="tab:blue")
        left.set(ylabel="training samples/s", title="Training, 4x312 BERT, ChnSentiCorp, batch 32, 2 CPU cores")
        left.tick_params(axis="x", labelsize=8)
    onnx = os.path.join(RESULTS, "onnx.json")
    if os.path.exists(onnx):
        rows = json.load(open(onnx))["rows"]
        for batch, offset in ((1, -0.2), (32, 0.2)):
            sel = [r for r in rows if r["batch"] == batch]
            right.bar([i + offset for i in range(len(sel))], [r["x torch"] for r in sel], width=0.4,
                      label=f"batch {batch}")
        right.set_xticks(range(3), ["PyTorch", "ONNX fp32", "ONNX int8"])
        right.set(ylabel="speed vs PyTorch (x)", title="Inference, m3e-small, ChnSentiCorp dev")
        right.legend()
    fig.tight_layout()
    out = os.path.join(RESULTS, "summary.png")
    fig.savefig(out, dpi=100)
    return out


if __name__ == "__main__":
    print(main())
