"""Every benchmark in one run: training throughput and peak memory per padding mode, then inference
throughput of PyTorch / ONNX fp32 / ONNX int8, with the ratios side by side at the end.

    python -m bench                  # 5 training cases x (ours, longest) on a random 4x312 BERT, then inference
    python -m bench --quick          # smoke run in a minute: tiny model, a few steps, forked runs, 32 dev examples
    python -m bench --model_dir outputs/quickstart/best --dev_file chnsenticorp/dev.tsv   # your model's inference
    bash bench/run.sh --output results/bench       # the same, writing JSON

Without --model_dir, inference runs on a classifier trained here for a few steps on ChnSentiCorp with the
training benchmark's model size: its speed is that of the architecture, its accuracy means nothing.
The parts: bench/train_throughput.py and bench/inference.py (each has its own CLI).
Not run here: `python -m bench.vs_original` (the same jobs against the original bertorch program itself,
when ../shared/peers/bertorch-original is there) and the other bench/*.py, each with its own CLI.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile

from bench import train_throughput as tt
from bench.inference import add_model_and_dev_args

QUICK = {"steps": 4, "log_every": 2, "batch_size": 8, "max_seq_length": 64, "limit": 32, "train_samples": 256}
FULL = {**{k: tt.RUN_DEFAULTS[k] for k in ("steps", "batch_size", "max_seq_length")}, "log_every": 5, "limit": 512,
        "train_samples": None}  # train_throughput's own run size, plus what only bench decides


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="seconds-scale smoke run (tiny model, few steps, forked runs): checks, does not measure")
    tt.add_run_args(p, {**FULL, "cases": list(tt.CASES), "modes": ["ours", "longest"]}, QUICK)
    add_model_and_dev_args(p, required=False, model_help="a saved model directory for the inference benchmark "
                                                         "(default: train a classifier here); needs --dev_file",
                           limit_help="dev examples for inference (default 512; quick 32)")
    p.add_argument("--no_train", action="store_true", help="skip the training benchmark")
    p.add_argument("--no_inference", action="store_true", help="skip the inference benchmark")
    p.add_argument("--output", default=None,
                   help="directory for train_throughput.json, inference.json and bench.json (the summary)")
    return p


def training(args, budget: dict, workdir: str) -> dict:
    argv = ["--cases", *args.cases, "--modes", *args.modes, "--steps", str(budget["steps"]),
            "--log_every", str(budget["log_every"]), "--batch_size", str(budget["batch_size"]),
            "--max_seq_length", str(budget["max_seq_length"]), "--model_config", budget["model_config"],
            "--output", os.path.join(workdir, "train_throughput.json")] + (["--fork"] if args.fork else [])
    if budget["train_samples"]:
        argv += ["--extra", "--max_train_samples", str(budget["train_samples"])]
    return tt.main(argv)


def inference_model(args, budget: dict, workdir: str) -> tuple[str | None, str | None]:
    """(model dir, dev file) to benchmark: the given ones, or a classifier trained here; (None, None) to skip."""
    if args.model_dir:
        from bertorch.data.readers import resolve_path  # chnsenticorp/dev.tsv is found in ../shared/data

        return args.model_dir, resolve_path(args.dev_file)
    dev = os.path.join(tt.SHARED, "chnsenticorp", "dev.tsv")
    if not os.path.isfile(dev):
        print(f"inference skipped: no model to time and no ChnSentiCorp data in {tt.SHARED} to train one; pass "
              f"--model_dir DIR (a run_classifier.py/run_ner.py/... output) and --dev_file FILE", flush=True)
        return None, None
    base = tt.build_model_in_child("classification", os.path.join(workdir, "random"), budget["model_config"],
                                   args.fork)
    out = os.path.join(workdir, "classifier")
    argv = [os.path.join(tt.ROOT, "run_classifier.py"), "--pretrained_model_name_or_path",
            base, "--data_dir", tt.SHARED, "--train_data_file", "chnsenticorp/train.tsv",
            "--label_file", "chnsenticorp/labels.txt", "--saved_dir", out, "--max_steps", "2", "--batch_size", "8",
            "--max_train_samples", "64", "--save_steps", "0", "--max_seq_length", str(budget["max_seq_length"])]
    status, _, stderr = tt.run_child(argv, dict(os.environ), args.fork)
    if status != 0:
        raise RuntimeError(f"training the inference model failed:\n{stderr}")
    return out, dev


def inference(args, budget: dict, workdir: str) -> tuple[list, float] | None:
    """bench/inference.py in a child process (its report is printed as it runs): its rows and peak RSS."""
    model_dir, dev_file = inference_model(args, budget, workdir)
    if model_dir is None:
        return None
    output = os.path.join(workdir, "inference.json")
    argv = ["-m", "bench.inference", "--model_dir", model_dir, "--dev_file", dev_file, "--limit", str(budget["limit"]),
            "--output", output]
    status, usage, stderr = tt.run_child(argv, {**os.environ, "PYTHONPATH": tt.ROOT}, args.fork, quiet=False)
    if status != 0:
        raise RuntimeError(f"bench.inference failed:\n{stderr}")
    return json.load(open(output, encoding="utf-8")), usage.ru_maxrss / 1024 ** 2


def summary(train: dict, infer: tuple[list, float] | None, modes: list[str]) -> tuple[str, dict]:
    """The ratios side by side: text to print, and the same as JSON."""
    lines, ratios = [], {"training": {}, "inference": {}}
    ref = "longest" if "longest" in modes else "max_len" if "max_len" in modes else None
    if train and ref and "ours" in modes:
        lines += [f"training, ours vs {ref} padding: samples/s and peak RSS (ratio = ours / {ref})",
                  f"{'case':15s} {'ours/s':>8} {ref + '/s':>11} {'speed x':>8} {'ours GB':>8} {ref + ' GB':>11} "
                  f"{'memory x':>9}"]
        for case, runs in train.items():
            ours, base = runs["ours"], runs[ref]
            speed, memory = ours["samples/s"] / base["samples/s"], ours["peak_rss_gb"] / base["peak_rss_gb"]
            ratios["training"][case] = {"speed_vs_" + ref: speed, "peak_rss_vs_" + ref: memory}
            lines.append(f"{case:15s} {ours['samples/s']:8.1f} {base['samples/s']:11.1f} {speed:7.2f}x "
                         f"{ours['peak_rss_gb']:8.2f} {base['peak_rss_gb']:11.2f} {memory:8.2f}x")
    if infer:
        rows, rss = infer
        torch_rows = {r["batch_size"]: r for r in rows if r["backend"] == "torch"}
        lines += ["", f"inference, examples/s (ratio = backend / PyTorch); peak RSS of the run {rss:.2f} GB",
                  f"{'backend':10s} " + " ".join(f"{'batch ' + str(b):>16}" for b in torch_rows)]
        for backend in dict.fromkeys(r["backend"] for r in rows):
            cells = []
            for b, base in torch_rows.items():
                r = next(r for r in rows if r["backend"] == backend and r["batch_size"] == b)
                x = r["examples_per_s"] / base["examples_per_s"]
                ratios["inference"][f"{backend} batch {b}"] = x
                cells.append(f"{r['examples_per_s']:8.1f} {x:6.2f}x")
            lines.append(f"{backend:10s} " + " ".join(f"{c:>16}" for c in cells))
        ratios["inference_peak_rss_gb"] = rss
    return "\n".join(lines), ratios


def main(argv=None) -> dict:
    args = build_parser().parse_args(argv)
    if args.model_dir and not args.dev_file:
        build_parser().error("--model_dir needs --dev_file (the dev set to time and score it on)")
    budget = {**(QUICK if args.quick else FULL), "model_config": "tiny" if args.quick else "bench"}
    budget.update({k: getattr(args, k) for k in ("steps", "batch_size", "max_seq_length", "limit")
                   if getattr(args, k) is not None})
    if args.fork is None:
        args.fork = args.quick and hasattr(os, "fork")
    if args.fork:
        tt.warm_up()
    with tempfile.TemporaryDirectory() as workdir:
        train = {} if args.no_train else training(args, budget, workdir)
        infer = None if args.no_inference else inference(args, budget, workdir)
        text, ratios = summary(train, infer, args.modes)
        print("\n" + text, flush=True)
        if args.output:
            os.makedirs(args.output, exist_ok=True)
            for name in ("train_throughput.json", "inference.json"):
                if os.path.isfile(os.path.join(workdir, name)):
                    os.replace(os.path.join(workdir, name), os.path.join(args.output, name))
            with open(os.path.join(args.output, "bench.json"), "w", encoding="utf-8") as f:
                json.dump({"budget": budget, "quick": args.quick, **ratios}, f, indent=2)
    return {"training": train, "inference": infer[0] if infer else None, **ratios}


if __name__ == "__main__":
    main()
