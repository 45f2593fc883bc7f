"""Put the result tables (results/*.md, written by the scripts) and the figure into README.md.

Only the text between `<!-- results:start -->` and `<!-- results:end -->` is replaced; numbers are
copied from the result files, never typed, and the original bertorch figures (scripts/reference.json)
are shown beside them as published.
"""
from __future__ import annotations

import json
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "results")
ORDER = ["classification", "ner", "sweeps", "sweeps_classification", "matching", "semantic", "distill", "distill_ner",
         "vs_original", "onnx", "onnx_gemm"]
TITLES = {"classification": "Classification (dev accuracy)", "ner": "Sequence labelling (dev F1, seqeval)",
          "sweeps": "Sweeps on a short budget: Resume NER (dev F1; CRF learning rate, span head, EMA, R-Drop)",
          "sweeps_classification": "Sweeps on a short budget: ChnSentiCorp (dev accuracy; EMA, R-Drop)",
          "matching": "Text matching with Sentence-BERT", "semantic": "Semantic similarity (STS-B dev)",
          "distill": "Distillation (ChnSentiCorp dev accuracy)",
          "distill_ner": "Token-level distillation (Resume NER dev F1)",
          "vs_original": "Training speed against the original bertorch program (same random 4x312 BERT, data and "
                         "steps; `python -m bench.vs_original`)",
          "onnx": "ONNX inference",
          "onnx_gemm": "ONNX fp32: the ceiling set by the weight GEMMs (model calls only)"}


def reference_table(name: str, reference: dict) -> str:
    ref = reference.get(name)
    if not ref:
        return ""
    columns = [c for c in ref["rows"][0]]
    lines = [f"Original bertorch, {ref['model']}, GPUs (published figures):", "",
             "| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    lines += ["| " + " | ".join(str(r.get(c, "")) for c in columns) + " |" for r in ref["rows"]]
    return "\n".join(lines) + "\n"


def build_section() -> str:
    reference = json.load(open(os.path.join(ROOT, "scripts", "reference.json"), encoding="utf-8"))
    parts = []
    if os.path.exists(os.path.join(RESULTS, "summary.png")):
        parts.append("![results](results/summary.png)\n")
    if os.path.exists(os.path.join(RESULTS, "dev_curves.png")):  # scripts/plot_results.py, from the rows' curves
        parts.append("![dev curves](results/dev_curves.png)\n")
    for name in ORDER:
        path = os.path.join(RESULTS, f"{name}.md")
        if not os.path.exists(path):
            continue
        parts.append(f"### {TITLES[name]}\n\n{open(path, encoding='utf-8').read()}\n{reference_table(name, reference)}")
    return "\n".join(parts)


def main() -> None:
    readme = os.path.join(ROOT, "README.md")
    text = open(readme, encoding="utf-8").read()
    start, end = "<!-- results:start -->", "<!-- results:end -->"
    if start not in text:
        raise SystemExit(f"README.md has no {start} marker")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    with open(readme, "w", encoding="utf-8") as f:
        f.write(head + start + "\n" + build_section() + end + tail)


if __name__ == "__main__":
    main()
