"""Inference speed and quality of PyTorch eager, ONNX fp32 and ONNX int8, side by side in one run.

Every backend runs through `Predictor.from_pretrained(..., backend=...)`, tokenisation included, so the
numbers are what users get. Per batch size it prints examples/s, per-example latency p50/p95 (the wall
time of the call that served the example: at batch 1 a request's latency, at batch 32 the time a
request waits for its batch) and the task metric, with ratios to PyTorch.

    python -m bench.inference --model_dir outputs/cls --dev_file data/chnsenticorp/dev.tsv --limit 200
    (exports to a temporary directory unless --onnx_dir points at an export_onnx.py output with int8)

`--compare DIR ...` adds other saved models of the same task (e.g. distilled students) as PyTorch rows,
named `torch <dir name>`; `--no-onnx` leaves the ONNX backends out, so teacher vs students is measured
side by side the same way (scripts/distill.sh).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


def prepare_onnx(model_dir: str, onnx_dir: str | None, workdir: str) -> tuple[str, str]:
    """(fp32, int8) paths: the given export dir's, or a fresh verified export."""
    from bertorch.onnx import check_parity, export_model, quantize_int8
    from bertorch.onnx.runtime import INT8_NAME, ONNX_NAME

    if onnx_dir:
        fp32, int8 = os.path.join(onnx_dir, ONNX_NAME), os.path.join(onnx_dir, INT8_NAME)
        return fp32, int8 if os.path.isfile(int8) else quantize_int8(fp32)
    fp32 = export_model(model_dir, workdir)
    report = check_parity(model_dir, fp32)
    if not report.ok:
        raise SystemExit("the exported graph does not match PyTorch:\n" + report.table())
    return fp32, quantize_int8(fp32)


PAUSE = 0.01  # s before each timed call: the previous backend's idle threads stop spinning (PyTorch's ~5 ms)


def measure(backends: dict, info: dict, examples: list, golds: dict, batch_size: int) -> list[dict]:
    """One pass over `examples` per backend in calls of `batch_size` (after a warm-up call). Backends
    take turns call by call, so on a shared machine a burst of load hits all of them alike; a short
    untimed pause before each call keeps one backend's busy-waiting threads out of the next one's time.
    `golds[name]` scores that backend (a span NER model's gold is spans, a tagger's tags, of the same texts)."""
    from bertorch.onnx.evaluate import predict_all, score

    task = info["task"]
    runs = {name: {"predictions": [], "latencies": [], "total": 0.0} for name in backends}
    for predictor in backends.values():
        predict_all(predictor, task, examples[:batch_size], batch_size)  # warm-up: lazy init, allocator
    for s in range(0, len(examples), batch_size):
        chunk = examples[s:s + batch_size]
        for name, predictor in backends.items():
            time.sleep(PAUSE)
            start = time.perf_counter()
            out = predict_all(predictor, task, chunk, batch_size)
            elapsed = time.perf_counter() - start
            run = runs[name]
            run["total"] += elapsed
            run["latencies"] += [elapsed] * len(chunk)
            run["predictions"].append(out)
    rows = []
    for name, run in runs.items():
        parts = run["predictions"]
        predictions = np.concatenate(parts) if task == "sentence_embedding" else [p for part in parts for p in part]
        lat = run["latencies"]
        rows.append({"backend": name, "batch_size": batch_size, "examples_per_s": len(examples) / run["total"],
                     "p50_ms": 1000 * float(np.percentile(lat, 50)), "p95_ms": 1000 * float(np.percentile(lat, 95)),
                     "metrics": score(task, backends[name], golds[name], predictions)})
    return rows


def run(args) -> list[dict]:
    import torch

    from bertorch.onnx.evaluate import read_eval_set
    from bertorch.model_dir import is_span_model
    from bertorch.predict import Predictor, read_task_info

    info = read_task_info(args.model_dir)
    load = os.getloadavg()
    print(f"load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} CPUs; "
          f"torch threads {torch.get_num_threads()}")
    with tempfile.TemporaryDirectory() as workdir:
        backends = {"torch": Predictor.from_pretrained(args.model_dir, backend="torch", device=args.device)}
        own_gold = {}  # backend -> its info, when it scores the texts its own way (a span head beside a tagger)
        for other in args.compare:  # scored on the same examples, so the same task, input kind and labels
            predictor = Predictor.from_pretrained(other, backend="torch", device=args.device)
            mine = (read_task_info(other), getattr(predictor, "labels", None))
            base = (info, getattr(backends["torch"], "labels", None))
            parts = os.path.normpath(other).split(os.sep)
            name = "torch " + "/".join(parts[-2:] if parts[-1] == "best" else parts[-1:])  # run/best: name the run
            other_head = mine[0]["task"] == "ner" and is_span_model(mine[0]) != is_span_model(info)
            for what, a, b in (("task", mine[0]["task"], base[0]["task"]),
                               ("is_text_pair", mine[0].get("is_text_pair"), base[0].get("is_text_pair")),
                               ("labels", None if other_head else mine[1], None if other_head else base[1])):
                if a != b:
                    raise SystemExit(f"--compare {other}: {what} {a!r} differs from --model_dir's {b!r}")
            if other_head:
                own_gold[name] = mine[0]
            backends[name] = predictor
        if args.onnx:
            fp32, int8 = prepare_onnx(args.model_dir, args.onnx_dir, workdir)
            # Idle onnxruntime threads busy-wait by default; here they would spin on the cores through the
            # next backend's call (PyTorch measured right after onnxruntime ran several times slower at batch
            # 1), so they sleep instead unless --spinning: a small cost to onnxruntime, none to PyTorch.
            ort = {"backend": "onnx", "device": args.device, "spinning": args.spinning, "threads": args.threads}
            backends["onnx fp32"] = Predictor.from_pretrained(fp32, **ort)
            backends["onnx int8"] = Predictor.from_pretrained(int8, **ort)
            session = backends["onnx fp32"].backend.session.get_session_options()
            print(f"onnxruntime: intra-op threads {session.intra_op_num_threads or 'default (physical cores)'}, "
                  f"spinning {'on' if args.spinning else 'off'}, fused ops: "
                  f"{backends['onnx fp32'].backend.metadata.get('bertorch.fused_ops') or 'none (plain graph)'}")
        labels = getattr(backends["torch"], "labels", None) if info["task"] != "sentence_embedding" else None
        examples, gold = read_eval_set(info, args.dev_file, labels, args.limit)
        golds = {name: gold for name in backends}
        for name, other_info in own_gold.items():
            texts, golds[name] = read_eval_set(other_info, args.dev_file, backends[name].labels, args.limit)
            if texts != examples:
                raise SystemExit(f"{args.dev_file}: read as spans and as tags it gives other texts")
        if args.sort_by_length:  # batches of similar lengths, as Predictor.predict makes of one long list
            size = [sum(map(len, e)) if isinstance(e, tuple) else len(e) for e in examples]  # pairs: both texts
            order = sorted(range(len(examples)), key=lambda i: -size[i])
            examples = [examples[i] for i in order]
            golds = {k: None if g is None else [g[i] for i in order] for k, g in golds.items()}
        rows = [row for batch_size in args.batch_sizes for row in measure(backends, info, examples, golds, batch_size)]
    load = os.getloadavg()
    print(f"load average after: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print(report(rows, len(examples)))
    return rows


def report(rows: list[dict], n: int) -> str:
    width = max(10, *(len(r["backend"]) for r in rows))
    lines = [f"{n} examples; 'vs torch' = ratio to PyTorch eager at the same batch size (higher is faster)",
             f"{'backend':<{width}} {'batch':>5} {'ex/s':>8} {'ex/s vs torch':>13} {'p50 ms':>8} {'p95 ms':>8} "
             f"{'p50 vs torch':>12}  metrics"]
    base = {r["batch_size"]: r for r in rows if r["backend"] == "torch"}
    for r in rows:
        b = base[r["batch_size"]]
        metrics = ", ".join(f"{k} {v:.4f}" for k, v in r["metrics"].items())
        lines.append(f"{r['backend']:<{width}} {r['batch_size']:>5} {r['examples_per_s']:>8.1f} "
                     f"{r['examples_per_s'] / b['examples_per_s']:>12.2f}x {r['p50_ms']:>8.1f} {r['p95_ms']:>8.1f} "
                     f"{b['p50_ms'] / r['p50_ms']:>11.2f}x  {metrics}")
    return "\n".join(lines)


def add_model_and_dev_args(parser: argparse.ArgumentParser, limit: int | None = None, required: bool = True,
                           model_help: str = "a saved model directory (the PyTorch baseline)",
                           limit_help: str | None = None) -> None:
    """The model to time and the dev set to time and score it on (this benchmark, gemm_share, bench)."""
    parser.add_argument("--model_dir", required=required, help=model_help)
    parser.add_argument("--dev_file", required=required, help="dev file in the task's training format")
    parser.add_argument("--limit", type=int, default=limit,
                        help=limit_help or f"use the first N dev examples (default: {limit or 'all'})")


def add_timing_args(parser: argparse.ArgumentParser) -> None:
    """How the inference benchmarks (this one and bench/gemm_share.py) time and report."""
    parser.add_argument("--onnx_dir", default=None, help="export_onnx.py output (default: export to a temp dir)")
    parser.add_argument("--batch_sizes", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--threads", type=int, default=None,
                        help="threads for both backends (default: PyTorch's and onnxruntime's own defaults)")
    parser.add_argument("--output", default=None, help="also write the rows as JSON")


@contextlib.contextmanager
def torch_threads(threads: int | None):
    """PyTorch's thread count for a run; restored after, so --threads in-process (tests) does not outlive it."""
    import torch

    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_and_dev_args(parser)
    add_timing_args(parser)
    parser.add_argument("--device", default="cpu",
                        help="cpu, or cuda: PyTorch on the GPU and onnxruntime's CUDA provider (onnxruntime-gpu)")
    parser.add_argument("--compare", nargs="+", default=[], metavar="DIR",
                        help="more saved models of the same task (e.g. distilled students), timed as PyTorch rows")
    parser.add_argument("--onnx", action=argparse.BooleanOptionalAction, default=True,
                        help="time the ONNX fp32 and int8 exports of --model_dir (--no-onnx: PyTorch rows only)")
    parser.add_argument("--sort_by_length", action="store_true",
                        help="batch the examples longest first (offline labelling) instead of in file order "
                             "(requests as they come); both backends always get the same batches")
    parser.add_argument("--spinning", action="store_true",
                        help="let idle onnxruntime threads busy-wait (its default; unfair to the backend run next)")
    args = parser.parse_args(argv)
    with torch_threads(args.threads):
        rows = run(args)
    if args.output:
        base = {r["batch_size"]: r for r in rows if r["backend"] == "torch"}
        for r in rows:
            r["speedup_vs_torch"] = r["examples_per_s"] / base[r["batch_size"]]["examples_per_s"]
            r.update({k: v for k, v in r["metrics"].items()})
        with open(args.output, "w", encoding="utf-8") as f:
            json.dump(rows, f, indent=2)
    return rows


if __name__ == "__main__":
    main()
