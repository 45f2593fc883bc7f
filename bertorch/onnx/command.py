"""export_onnx.py's flow: export, check parity with PyTorch (refuse success otherwise), optionally int8."""
from __future__ import annotations

import argparse
import json
import os
from typing import Sequence

from loguru import logger

from bertorch.argtypes import add_data_dir_flag, add_model_dir_flag, positive_int
from bertorch.data.readers import resolve_path
from bertorch.errors import reported_errors
from bertorch.model_dir import read_task_info
from bertorch.models.pooling import POOLING_MODES
from bertorch.onnx.export import EXPORT_INFO, export_model
from bertorch.predictors.backends import require_onnxruntime


def build_parser(description: str | None = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter,
                                allow_abbrev=False)
    add_model_dir_flag(p, "a directory written by a run_*.py script (or a HF model)")
    p.add_argument("--output", required=True, help="export directory (model.onnx + tokenizer), or a .onnx path")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (default: 17; at least 10)")
    p.add_argument("--quantize", choices=("int8",), default=None,
                   help="also write a dynamically quantised model_int8.onnx and compare it with fp32")
    p.add_argument("--dev_file", default=None, help="dev file in the task's training format: parity inputs, "
                                                    "and accuracy/F1 of fp32 vs int8 (default: built-in texts)")
    add_data_dir_flag(p, "a relative --dev_file is")
    p.add_argument("--limit", type=positive_int, default=None, help="use at most N dev examples for the int8 metrics")
    p.add_argument("--pooling_mode", choices=POOLING_MODES, default=None,
                   help="pooling for a plain transformers encoder without a saved pooler (default: mean)")
    p.add_argument("--optimize", action="store_true",
                   help="fuse the graph for onnxruntime (Attention, SkipLayerNormalization, ... contrib ops): for "
                        "onnxruntime-gpu; on CPU the plain graph is as fast (the time is in the MatMuls)")
    p.add_argument("--output_dim", type=int, default=None,
                   help="sentence encoders: the graph outputs only the first N values of the vector (a Matryoshka "
                        "prefix, see --matryoshka_dims), normalised after the cut")
    return p


def run(argv: Sequence[str] | None = None, description: str | None = None) -> int:
    """0 when the graph agrees with PyTorch; SystemExit(1) (after printing why) otherwise."""
    args = build_parser(description).parse_args(argv)
    with reported_errors():
        if args.dev_file:  # looked up as the scripts look up data paths, before anything is written
            args.dev_file = resolve_path(args.dev_file, args.data_dir)
        require_onnxruntime()
        report = export_and_verify(args)
    out_dir = os.path.dirname(os.path.abspath(report["onnx"]))
    with open(os.path.join(out_dir, EXPORT_INFO), "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2, ensure_ascii=False)
    if not report["parity"]["ok"]:
        logger.error(f"ONNX export does NOT match PyTorch (see the table above); {report['onnx']} "
                     f"must not be used. Report: {os.path.join(out_dir, EXPORT_INFO)}")
        raise SystemExit(1)
    same = "" if report["task"] == "sentence_embedding" else ", labels identical"
    logger.info(f"export verified: {report['onnx']} matches PyTorch (max abs diff "
                f"{report['parity']['max_abs_diff']:.3g}{same})")
    return 0


def export_and_verify(args) -> dict:
    from bertorch.onnx.verify import check_parity

    path = export_model(args.model_dir, args.output, args.opset, args.pooling_mode, optimize=args.optimize,
                        output_dim=args.output_dim)
    fused = fused_ops(path)
    logger.info(f"exported {args.model_dir} -> {path} (opset {args.opset}, {_mb(path):.1f} MB, "
                + (f"fused for onnxruntime: {fused})" if fused else "plain graph)"))
    parity = check_parity(args.model_dir, path, dev_file=args.dev_file)
    if fused and not parity.ok:  # an optimizer fusion that changed the maths: the plain graph may still serve
        logger.warning("the fused graph does not match PyTorch:\n" + parity.table() + "\nexporting the plain graph")
        path, fused = export_model(args.model_dir, args.output, args.opset, args.pooling_mode, optimize=False,
                                   output_dim=args.output_dim), ""
        parity = check_parity(args.model_dir, path, dev_file=args.dev_file)
    logger.info("onnxruntime vs PyTorch, every (batch, length) cell:\n" + parity.table())
    report = {"model_dir": os.path.abspath(args.model_dir), "task": parity.task, "onnx": path, "opset": args.opset,
              "fused_ops": fused, "size_mb": _mb(path),
              "parity": {"ok": parity.ok, "max_abs_diff": parity.max_abs_diff, "cells": parity.rows}}
    if args.quantize and parity.ok:
        report["int8"] = quantize_and_compare(args, path)
    return report


def quantize_and_compare(args, path: str) -> dict:
    """int8 size, agreement with fp32, and both metrics on the dev file (built-in texts without one)."""
    from bertorch.onnx.evaluate import agreement, evaluate, predict_all, quantize_int8
    from bertorch.onnx.verify import sample_examples
    from bertorch.predictors.base import Predictor

    int8 = quantize_int8(path)
    info = read_task_info(os.path.dirname(os.path.abspath(path)))
    fp32_predictor = Predictor.from_pretrained(path, backend="onnx", device="cpu")
    int8_predictor = Predictor.from_pretrained(int8, backend="onnx", device="cpu")
    out = {"onnx": int8, "size_mb": _mb(int8), "fp32_size_mb": _mb(path)}
    if args.dev_file:
        a = evaluate(fp32_predictor, info, args.dev_file, args.limit)
        b = evaluate(int8_predictor, info, args.dev_file, args.limit)
        out.update(fp32_metrics=a["metrics"], int8_metrics=b["metrics"])
        same = agreement(info["task"], a["predictions"], b["predictions"])
    else:
        examples = sample_examples(info)
        same = agreement(info["task"], predict_all(fp32_predictor, info["task"], examples),
                         predict_all(int8_predictor, info["task"], examples))
    out["agreement_with_fp32"] = same
    what = "mean cosine" if info["task"] == "sentence_embedding" else "identical labels"
    logger.info(f"int8: {int8} ({out['size_mb']:.1f} MB vs {out['fp32_size_mb']:.1f} MB fp32); {what} with "
                f"fp32: {same:.4f}" + "".join(f"; {k}: fp32 {v:.4f}, int8 {out['int8_metrics'].get(k, float('nan')):.4f}"
                                                for k, v in out.get("fp32_metrics", {}).items()))
    return out


def fused_ops(path: str) -> str:
    """The graph's `bertorch.fused_ops` metadata ("Attention:4,..."; empty for a plain graph)."""
    import onnx

    meta = onnx.load(path, load_external_data=False).metadata_props
    return next((p.value for p in meta if p.key == "bertorch.fused_ops"), "")


def _mb(path: str) -> float:
    return os.path.getsize(path) / 2 ** 20
