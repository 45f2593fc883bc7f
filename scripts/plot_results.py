"""results/summary.png: the figures a reader would rather see than read, drawn from the result files.

results/dev_curves.png (dev_curves): every table's dev metric against training steps.

Left: training throughput by padding strategy (bench/train_throughput.py). Right: inference speed of
PyTorch / ONNX fp32 / ONNX int8 relative to PyTorch at batch 1 and 32 (scripts/onnx.sh). The PNG records
the sha256 of each file it was drawn from (text key "Source"), so a test can tell a stale figure from the
tables beside it.
"""
import hashlib
import json
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "results")
SOURCES = ("train_throughput.json", "onnx.json")  # what the figure is drawn from, in results/


def source_digests(results: str = RESULTS, sources: tuple = SOURCES) -> str:
    """{file: sha256} of the sources present, as the JSON text the PNG carries."""
    present = [name for name in sources if os.path.exists(os.path.join(results, name))]
    return json.dumps({name: hashlib.sha256(open(os.path.join(results, name), "rb").read()).hexdigest()
                       for name in present}, sort_keys=True)


def main() -> str:
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    train = os.path.join(RESULTS, SOURCES[0])
    if os.path.exists(train):  # per case, both paddings measured side by side in one run
        cases = json.load(open(train))
        labels = {"classification": "classification", "ner_linear": "NER Linear", "ner_crf": "NER CRF",
                  "simcse": "SimCSE", "sbert": "Sentence-BERT"}
        names = [c for c in labels if c in cases and {"ours", "longest"} <= set(cases[c])]
        x = range(len(names))
        for shift, mode, label in ((-0.2, "longest", "pad to longest (original bertorch)"),
                                   (0.2, "ours", "length-grouped (bertorch default)")):
            left.bar([i + shift for i in x], [cases[c][mode]["samples/s"] for c in names], width=0.4, label=label)
        for i, c in zip(x, names):
            ratio = cases[c]["ours"]["samples/s"] / cases[c]["longest"]["samples/s"]
            left.annotate(f"x{ratio:.1f}", (i + 0.2, cases[c]["ours"]["samples/s"]), ha="center", va="bottom", fontsize=8)
        left.set_xticks(list(x), [labels[c] for c in names], fontsize=8)
        left.set(ylabel="training examples/s", title="Training, random 4x312 BERT, batch 32, 2 CPU cores")
        left.set_ylim(0, 1.35 * max(cases[c][m]["samples/s"] for c in names for m in ("ours", "longest")))
        left.legend(fontsize=8, loc="upper left")  # in the headroom above the bars
    onnx = os.path.join(RESULTS, SOURCES[1])
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
    fig.savefig(out, dpi=100, metadata={"Source": source_digests()})
    return out


CURVE_SOURCES = ("classification.json", "ner.json", "matching.json", "semantic.json")  # rows with a "_curve"
CURVE_TITLES = {"classification.json": "classification, dev accuracy", "ner.json": "sequence labelling, dev F1",
                "matching.json": "matching, dev accuracy", "semantic.json": "STS-B, dev Spearman"}


def dev_curves() -> str | None:
    """results/dev_curves.png: each table's dev metric over training steps (the `_curve` that scripts/results.py
    copies from a run's metrics.jsonl), one panel per table, one line per row; None if no row has a curve."""
    tables = {}
    for name in CURVE_SOURCES:
        path = os.path.join(RESULTS, name)
        rows = json.load(open(path))["rows"] if os.path.exists(path) else []
        curves = [(" ".join(str(v) for k, v in r.items() if not isinstance(v, (int, float)) and not k.startswith("_")),
                   r["_curve"]) for r in rows if len(r.get("_curve", [])) > 1]
        if curves:
            tables[name] = curves
    if not tables:
        return None
    fig, axes = plt.subplots(1, len(tables), figsize=(5 * len(tables), 3.6), squeeze=False)
    for ax, (name, curves) in zip(axes[0], tables.items()):
        for label, curve in curves:
            ax.plot([p[0] for p in curve], [p[1] for p in curve], marker="o", markersize=3, label=label)
        ax.set(xlabel="optimisation step", title=CURVE_TITLES[name])
        ax.legend(fontsize=7)
    fig.tight_layout()
    out = os.path.join(RESULTS, "dev_curves.png")
    fig.savefig(out, dpi=100, metadata={"Source": source_digests(RESULTS, CURVE_SOURCES)})
    return out


if __name__ == "__main__":
    print(main())
    print(dev_curves())
