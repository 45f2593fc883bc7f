"""How much faster can ONNX fp32 be than PyTorch on this CPU? An upper bound from the weight GEMMs.

Both backends spend most of their time in the same matrix products (the Linear layers: Q/K/V, attention
output, FFN, pooler, head). This times, batch by batch on the same dev inputs, model calls only (no
tokenisation):
- PyTorch eager: the whole forward, and inside it every nn.Linear (forward hooks around the real calls);
- onnxruntime fp32 (the graph export_onnx.py writes): the whole run, and from onnxruntime's own profile
  the kernel time of every MatMul/Gemm whose second input is a weight.
The ceiling `torch total / onnxruntime weight-GEMM time` is the speed-up onnxruntime would reach if all its
other work (attention, layer norm, GELU, softmax, copies) took no time at all. A target above the ceiling
cannot be met with onnxruntime's fp32 GEMM kernels on this machine; only fewer or cheaper products can
(int8, a smaller model).

    python -m bench.gemm_share --model_dir outputs/m3e_chnsenticorp/best \
        --dev_file ../shared/data/chnsenticorp/dev.tsv --limit 256 --batch_sizes 1 32
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from bench.inference import add_model_and_dev_args, add_timing_args, torch_threads  # noqa: E402  (after the sys.path line)

GEMM_OPS = ("MatMul", "Gemm", "FusedMatMul", "FusedGemm")
SPIN_DOWN = 0.05  # s of untimed sleep after each call, so one library's spinning threads never slow the other


def weight_gemm_nodes(onnx_path: str) -> set[str]:
    """Names of the graph's products with a weight (an initializer) as an input."""
    import onnx

    model = onnx.load(onnx_path, load_external_data=False)
    weights = {t.name for t in model.graph.initializer}
    return {n.name for n in model.graph.node if n.op_type in GEMM_OPS and any(i in weights for i in n.input)}


class LinearTimer:
    """Wall time spent inside the model's nn.Linear calls (CPU ops are synchronous, so this is exact)."""

    def __init__(self, model):
        import torch

        self.seconds, self.calls, self._start = 0.0, 0, 0.0
        linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
        self._hooks = [h for m in linears for h in (m.register_forward_pre_hook(self._enter),
                                                    m.register_forward_hook(self._leave))]

    def __enter__(self):
        return self

    def __exit__(self, *_):
        for hook in self._hooks:
            hook.remove()

    def _enter(self, *_):
        self._start = time.perf_counter()

    def _leave(self, *_):
        self.seconds += time.perf_counter() - self._start
        self.calls += 1


def onnx_gemm_seconds(profile_file: str, names: set[str]) -> tuple[float, float, int]:
    """(weight-GEMM kernel seconds, all kernel seconds, weight-GEMM kernels run) from an onnxruntime
    profile, after its first run (the warm-up)."""
    with open(profile_file, encoding="utf-8") as f:
        events = json.load(f)
    runs = sorted((e for e in events if e.get("name") == "model_run"), key=lambda e: e["ts"])
    after = runs[0]["ts"] + runs[0]["dur"] if runs else 0
    gemm = total = 0.0
    calls = 0
    for e in events:
        if e.get("cat") != "Node" or not e.get("name", "").endswith("_kernel_time") or e["ts"] < after:
            continue
        total += e["dur"] / 1e6
        if e["args"].get("op_name") in GEMM_OPS and e["name"][:-len("_kernel_time")] in names:
            gemm += e["dur"] / 1e6
            calls += 1
    return gemm, total, calls


def session(path: str, threads: int | None, profile_dir: str | None = None):
    """An onnxruntime session as OnnxBackend makes it; with `profile_dir`, profiling, and the optimised
    graph (whose node names the profile reports: fusion renames some products) saved there."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL  # as OnnxBackend
    if threads:
        options.intra_op_num_threads = threads
    if profile_dir:
        options.enable_profiling = True
        options.profile_file_prefix = os.path.join(profile_dir, "ort")
        options.optimized_model_filepath = os.path.join(profile_dir, "optimized.onnx")
        options.log_severity_level = 3  # not the warning that the saved graph is specific to this machine
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def measure(model, plain, profiled, names: set[str], batches: list[dict]) -> dict:
    """Per backend: total and weight-GEMM seconds over `batches`, calls taking turns batch by batch."""
    import torch

    feeds = [{k: v for k, v in b.items() if k in {i.name for i in plain.get_inputs()}} for b in batches]
    with LinearTimer(model) as timer, torch.inference_mode():
        model(**{k: torch.from_numpy(v) for k, v in batches[0].items()})  # warm-up
        plain.run(None, feeds[0])
        profiled.run(None, feeds[0])
        timer.seconds, timer.calls, torch_total, ort_total = 0.0, 0, 0.0, 0.0
        for batch, feed in zip(batches, feeds):
            tensors = {k: torch.from_numpy(v) for k, v in batch.items()}
            start = time.perf_counter()
            model(**tensors)
            torch_total += time.perf_counter() - start
            time.sleep(SPIN_DOWN)  # PyTorch's OpenMP threads also spin after a call
            start = time.perf_counter()
            plain.run(None, feed)
            ort_total += time.perf_counter() - start
            time.sleep(SPIN_DOWN)
            profiled.run(None, feed)  # kernel times only; its wall time carries the profiler's cost
            time.sleep(SPIN_DOWN)
    ort_gemm, ort_kernels, ort_calls = onnx_gemm_seconds(profiled.end_profiling(), names)
    return {"torch_total_s": torch_total, "torch_gemm_s": timer.seconds, "torch_gemm_calls": timer.calls,
            "onnx_total_s": ort_total, "onnx_gemm_s": ort_gemm, "onnx_kernels_s": ort_kernels,
            "onnx_gemm_calls": ort_calls}


def batches_of(tokenizer, examples: list, batch_size: int, max_length: int) -> list[dict]:
    """Dev examples in file order, `batch_size` a call, padded to the longest (as Predictor does)."""
    out = []
    for s in range(0, len(examples), batch_size):
        chunk = examples[s:s + batch_size]
        pairs = isinstance(chunk[0], tuple)
        enc = tokenizer([e[0] for e in chunk] if pairs else list(chunk), [e[1] for e in chunk] if pairs else None,
                        truncation=True, max_length=max_length, padding=True, return_tensors="np")
        out.append({k: v.astype(np.int64) for k, v in enc.items()})
    return out


def run(args) -> list[dict]:
    from bertorch.onnx import export_model
    from bertorch.onnx.evaluate import read_eval_set
    from bertorch.onnx.runtime import ONNX_NAME
    from bertorch.predict import Predictor, read_task_info

    info = read_task_info(args.model_dir)
    if info["task"] != "classification":  # the fp32 targets are a classifier's; taggers pad alike
        raise SystemExit(f"{args.model_dir}: a {info['task']} model; this benchmark takes a classifier")
    predictor = Predictor.from_pretrained(args.model_dir, backend="torch", device="cpu")
    model = predictor.backend.model
    examples, _ = read_eval_set(info, args.dev_file, getattr(predictor, "labels", None), args.limit)
    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        path = os.path.join(args.onnx_dir, ONNX_NAME) if args.onnx_dir else export_model(args.model_dir, workdir)
        for batch_size in args.batch_sizes:
            batches = batches_of(predictor.tokenizer, examples, batch_size, predictor.max_length)
            plain, profiled = session(path, args.threads), session(path, args.threads, workdir)
            names = weight_gemm_nodes(os.path.join(workdir, "optimized.onnx"))
            row = {"batch_size": batch_size, "examples": len(examples),
                   **measure(model, plain, profiled, names, batches)}
            rows.append(derive(row, len(batches)))
    print(report(rows))
    return rows


def derive(row: dict, calls: int) -> dict:
    """The figures the table shows, from the measured seconds."""
    row.update(torch_ms=1000 * row["torch_total_s"] / calls, onnx_ms=1000 * row["onnx_total_s"] / calls,
               torch_gemm_share=row["torch_gemm_s"] / row["torch_total_s"],
               onnx_gemm_share=row["onnx_gemm_s"] / row["onnx_kernels_s"],
               onnx_speedup=row["torch_total_s"] / row["onnx_total_s"],
               gemm_speed_ratio=row["torch_gemm_s"] / row["onnx_gemm_s"],
               ceiling=row["torch_total_s"] / row["onnx_gemm_s"])
    return row


def report(rows: list[dict]) -> str:
    lines = ["model calls only (no tokenisation); GEMM = products with a weight (Linear layers)",
             f"{'batch':>5} {'torch ms':>9} {'GEMM share':>10} {'onnx ms':>9} {'GEMM share':>10} "
             f"{'onnx x torch':>12} {'GEMM x torch':>12} {'ceiling':>8}"]
    for r in rows:
        lines.append(f"{r['batch_size']:>5} {r['torch_ms']:>9.1f} {r['torch_gemm_share']:>10.1%} {r['onnx_ms']:>9.1f} "
                     f"{r['onnx_gemm_share']:>10.1%} {r['onnx_speedup']:>11.2f}x "
                     f"{r['gemm_speed_ratio']:>11.2f}x {r['ceiling']:>7.2f}x")
    lines.append("'GEMM x torch': onnxruntime's weight GEMMs vs PyTorch's Linear layers (higher: onnxruntime's "
                 "faster); 'ceiling': onnx x torch if everything but its weight GEMMs were free")
    return "\n".join(lines)


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(prog="python -m bench.gemm_share", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_and_dev_args(p, limit=256)
    add_timing_args(p)
    args = p.parse_args(argv)
    with torch_threads(args.threads):
        rows = run(args)
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            json.dump(rows, f, indent=2)
    return rows


if __name__ == "__main__":
    main()
