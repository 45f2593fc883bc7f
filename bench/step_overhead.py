"""What one training step costs in our loop against a bare transformers step, on the same fixed batch.

Every variant trains the same random BERT (4 layers, hidden 312, 12 heads, FFN 1200: the model the original
bertorch was measured with) on the same 32 x 128 ChnSentiCorp batch, in its own fresh process (allocator
settings and LD_PRELOAD are per process), in turns (A B C A B C ...), and reports steps/s and peak RSS:

  plain       BertForSequenceClassification + torch AdamW + clip, glibc defaults (what a user writes)
  ours        our model, optimiser and low-memory training, with the process settings of bertorch.memory
  ours-glibc  the same without bertorch.memory's mallopt settings (glibc defaults)
  ours-stock  ours without low-memory training
  plain-bf16  plain under CPU bf16 autocast (pays on CPUs with AMX or AVX-512 BF16)
  ours-bf16   low-memory training under bf16 autocast, glibc's allocator defaults
  ours-tuned-bf16 / ours-stock-bf16   the same with bertorch.memory's mallopt settings (what --bf16 does) /
              without low-memory training
  ours-bf16-foreach   ours-bf16 with the foreach AdamW bertorch used before the fused one
  plain-compile / plain-compile-bf16   plain with torch.compile (inductor) on the model, fp32 / bf16 autocast:
              on this fixed batch shape it compiles once, the best case for it (warm-up time reported)
  +jemalloc / +tcmalloc   a variant with that allocator preloaded (Debian's libjemalloc2 / libtcmalloc-minimal4)

    python -m bench.step_overhead [--steps 20] [--repeats 2] [--variants plain ours ...] [--output FILE]

It also prints the utilisation: model FLOPs per step (6 x parameters x tokens for the weight matmuls plus
the attention matmuls, real and padded tokens) over the machine's fp32 matmul peak, measured in the run.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PRELOADS = {"jemalloc": "libjemalloc.so.2", "tcmalloc": "libtcmalloc_minimal.so.4"}
BASE_VARIANTS = {
    "plain": {"ours": False},
    "ours": {"ours": True, "tune": True, "low_memory": True},
    "ours-glibc": {"ours": True, "tune": False, "low_memory": True},
    "ours-stock": {"ours": True, "tune": False, "low_memory": False},
    "plain-bf16": {"ours": False, "bf16": True},
    "ours-bf16": {"ours": True, "tune": False, "low_memory": True, "bf16": True},
    "ours-tuned-bf16": {"ours": True, "tune": True, "low_memory": True, "bf16": True},
    "ours-stock-bf16": {"ours": True, "tune": False, "low_memory": False, "bf16": True},
    "ours-bf16-foreach": {"ours": True, "tune": False, "low_memory": True, "bf16": True, "foreach": True},
    "plain-compile": {"ours": False, "compile": True},
    "plain-compile-bf16": {"ours": False, "compile": True, "bf16": True},
}


def find_library(name: str) -> str | None:
    for d in ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib", "/usr/local/lib"):
        path = os.path.join(d, name)
        if os.path.exists(path):
            return path
    return None


def variant_spec(name: str) -> tuple[dict, dict]:
    """(child settings, extra environment) of a variant name such as 'ours-glibc+jemalloc'."""
    base, _, preload = name.partition("+")
    if base not in BASE_VARIANTS or (preload and preload not in PRELOADS):
        raise SystemExit(f"error: unknown variant {name!r}; bases {sorted(BASE_VARIANTS)}, +{'/+'.join(PRELOADS)}")
    env = {}
    if preload:
        path = find_library(PRELOADS[preload])
        if path is None:
            raise SystemExit(f"error: {PRELOADS[preload]} not found (apt-get install libjemalloc2 "
                             f"libtcmalloc-minimal4)")
        env["LD_PRELOAD"] = path
    return BASE_VARIANTS[base], env


def fixed_batch(tokenizer, texts: list[str], batch_size: int, length: int):
    import torch

    enc = tokenizer(texts[:batch_size], truncation=True, max_length=length, padding="max_length",
                    return_tensors="pt")
    labels = torch.arange(batch_size) % 2
    return enc["input_ids"], enc["attention_mask"], labels


def child(spec: dict, model_dir: str, steps: int, batch_size: int, length: int, texts_file: str) -> dict:
    """One variant in this (fresh) process: warm up, then time `steps` optimisation steps."""
    if spec.get("tune"):
        from bertorch.memory import tune_allocator
        tune_allocator()
    import resource

    import torch
    import torch.nn.functional as F
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    texts = [line.split("\t")[0] for line in open(texts_file, encoding="utf-8")]
    input_ids, mask, labels = fixed_batch(tokenizer, texts, batch_size, length)
    config = AutoConfig.from_pretrained(model_dir, num_labels=2)
    if spec["ours"]:
        from bertorch.losses.classification import build_loss
        from bertorch.models.classifier import SequenceClassifier
        from bertorch.models.low_memory import checkpoint_large_batches, use_low_memory_training
        from bertorch.optim import build_optimizer, build_param_groups

        model = SequenceClassifier.from_pretrained(model_dir, config, build_loss("cross_entropy", 2))
        if spec["low_memory"]:
            use_low_memory_training(model)
            checkpoint_large_batches(model, 4096)  # the trainer's default budget: 32 x 128 is not above it
        groups = build_param_groups(model, 1e-4, 0.01, 1.0, config.num_hidden_layers)
        optimizer = (torch.optim.AdamW(groups, lr=1e-4, foreach=True) if spec.get("foreach")  # before fused
                     else build_optimizer(groups, 1e-4))

        def loss_fn():
            return model(input_ids=input_ids, attention_mask=mask, labels=labels).loss
    else:
        model = AutoModelForSequenceClassification.from_pretrained(model_dir, config=config)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)
        forward = torch.compile(model) if spec.get("compile") else model

        def loss_fn():
            return F.cross_entropy(forward(input_ids=input_ids, attention_mask=mask).logits, labels)
    model.train()
    def precision():
        return torch.autocast("cpu", dtype=torch.bfloat16) if spec.get("bf16") else contextlib.nullcontext()

    def step():
        with precision():
            loss = loss_fn()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss

    start = time.perf_counter()
    for _ in range(3):
        step()
    warmup = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(steps):
        step()
    seconds = time.perf_counter() - start
    return {"step/s": steps / seconds, "warmup_s": warmup,
            "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2,
            "real_tokens": int(mask.sum()), "padded_tokens": int(mask.numel())}


def matmul_peak(dtype_name: str = "float32", size: int = 1024, seconds: float = 2.0) -> float:
    """Measured matmul FLOP/s of this machine with PyTorch's threads (a 1024^3 GEMM, best of a few)."""
    import torch

    dtype = getattr(torch, dtype_name)
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    for _ in range(3):
        a @ b
    best, end = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        t = time.perf_counter()
        for _ in range(5):
            a @ b
        best = max(best, 5 * 2 * size ** 3 / (time.perf_counter() - t))
    return best


def step_flops(config: dict, batch_size: int, length: int, tokens: int) -> float:
    """Forward + backward FLOPs of a training step (3x forward): the encoder's weight matmuls on `tokens`
    tokens plus the attention score/value matmuls (batch x length^2 x hidden, twice)."""
    h, f, layers = config["hidden_size"], config["intermediate_size"], config["num_hidden_layers"]
    per_token = layers * 2 * (4 * h * h + 2 * h * f)
    attention = layers * 2 * 2 * batch_size * length * length * h * (tokens / (batch_size * length))
    return 3 * (per_token * tokens + attention)


def run_variant(name: str, model_dir: str, args, texts_file: str) -> dict:
    spec, env = variant_spec(name)
    code = ("import json, sys; sys.path.insert(0, %r); from bench.step_overhead import child; "
            "print(json.dumps(child(%r, %r, %d, %d, %d, %r)))"
            % (ROOT, spec, model_dir, args.steps, args.batch_size, args.max_seq_length, texts_file))
    proc = subprocess.run([sys.executable, "-c", code], env={**os.environ, **env}, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{name} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variants", nargs="+", default=["plain", "ours", "ours-glibc", "ours-stock"])
    p.add_argument("--steps", type=int, default=20, help="timed steps per run (after 3 warm-up steps)")
    p.add_argument("--repeats", type=int, default=2, help="turns of every variant (A B C A B C ...)")
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--max_seq_length", type=int, default=128)
    p.add_argument("--output", default=None, help="write the runs and the summary as JSON here")
    args = p.parse_args(argv)
    for name in args.variants:
        variant_spec(name)  # unknown names and missing libraries stop before anything runs
    sys.path.insert(0, ROOT)
    from bench.train_throughput import SHARED, build_model

    texts_file = os.path.join(SHARED, "chnsenticorp", "train.tsv")
    runs: dict[str, list[dict]] = {name: [] for name in args.variants}
    with tempfile.TemporaryDirectory() as workdir:
        model_dir = build_model("chnsenticorp/train.tsv", os.path.join(workdir, "model"))
        config = json.load(open(os.path.join(model_dir, "config.json"), encoding="utf-8"))
        for _ in range(args.repeats):
            for name in args.variants:
                runs[name].append(run_variant(name, model_dir, args, texts_file))
                print(f"{name:22s} {runs[name][-1]['step/s']:.3f} step/s  peak {runs[name][-1]['peak_rss_gb']:.2f} GB",
                      flush=True)
    peak = matmul_peak()
    bf16_peak = matmul_peak("bfloat16") if any(variant_spec(n)[0].get("bf16") for n in args.variants) else None
    first = runs[args.variants[0]]
    real, padded = first[0]["real_tokens"], first[0]["padded_tokens"]
    summary = {}
    base = sorted(r["step/s"] for r in first)[len(first) // 2]
    bf16_note = f", bf16 {bf16_peak / 1e9:.1f} GFLOP/s" if bf16_peak else ""
    print(f"\nfp32 matmul peak {peak / 1e9:.1f} GFLOP/s{bf16_note}; batch {args.batch_size} x {args.max_seq_length}: "
          f"{real} real of {padded} tokens")
    for name, rs in runs.items():
        speed = sorted(r["step/s"] for r in rs)[len(rs) // 2]  # median
        used_real = step_flops(config, args.batch_size, args.max_seq_length, real) * speed / peak
        used_padded = step_flops(config, args.batch_size, args.max_seq_length, padded) * speed / peak
        summary[name] = {"step/s": speed, f"x {args.variants[0]}": speed / base,
                         "peak_rss_gb": max(r["peak_rss_gb"] for r in rs),
                         "util_real_tokens": used_real, "util_padded_tokens": used_padded,
                         "warmup_s": sorted(r["warmup_s"] for r in rs)[len(rs) // 2]}
        if bf16_peak and variant_spec(name)[0].get("bf16"):  # the same FLOPs over the peak of the maths it runs
            summary[name]["util_real_tokens_of_bf16_peak"] = used_real * peak / bf16_peak
        print(f"{name:22s} {speed:.3f} step/s  x{speed / base:.2f} vs {args.variants[0]}  "
              f"peak {summary[name]['peak_rss_gb']:.2f} GB  utilisation {used_padded:.0%} (padded) "
              f"{used_real:.0%} (real tokens)"
              + (f", {summary[name]['util_real_tokens_of_bf16_peak']:.0%} of the bf16 peak"
                 if "util_real_tokens_of_bf16_peak" in summary[name] else "")
              + f"  warm-up {summary[name]['warmup_s']:.1f} s")
    result = {"args": vars(args), "matmul_peak_flops": peak, "bf16_matmul_peak_flops": bf16_peak, "runs": runs,
              "summary": summary}
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main()
