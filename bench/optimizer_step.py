"""What the AdamW update alone costs per training step: torch's for-loop, foreach and fused implementations.

The same parameters (a model built from --model_dir's config, random weights, random gradients) and the same
parameter groups as bertorch.optim (weight decay on matrices only); the three optimisers step in turns
(A B C A B C ...), so load elsewhere hits all alike. Prints each one's median and best time per step and
the time of gradient clipping (foreach and loop), which every step also pays.

    python -m bench.optimizer_step [--model_dir M3E_SMALL] [--steps 8] [--threads 2]
"""
from __future__ import annotations

import argparse
import statistics
import time

IMPLEMENTATIONS = {"for-loop": {"foreach": False}, "foreach": {"foreach": True}, "fused": {"fused": True}}


def time_steps(model_dir: str, steps: int) -> dict[str, list[float]]:
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification

    from bertorch.optim import build_param_groups

    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_config(AutoConfig.from_pretrained(model_dir, num_labels=2))
    params = list(model.parameters())
    for p in params:
        p.grad = torch.randn_like(p) * 1e-3
    optimizers = {name: torch.optim.AdamW(build_param_groups(model, 1e-4, 0.01), lr=1e-4, **kwargs)
                  for name, kwargs in IMPLEMENTATIONS.items()}
    seconds: dict[str, list[float]] = {name: [] for name in [*optimizers, "clip (foreach)", "clip (loop)"]}
    for _ in range(steps + 1):  # the first turn allocates the optimiser states: not timed
        for name, optimizer in optimizers.items():
            start = time.perf_counter()
            optimizer.step()
            seconds[name].append(time.perf_counter() - start)
        for name, foreach in (("clip (foreach)", True), ("clip (loop)", False)):
            start = time.perf_counter()
            torch.nn.utils.clip_grad_norm_(params, 1.0, foreach=foreach)
            seconds[name].append(time.perf_counter() - start)
    print(f"{sum(p.numel() for p in params) / 1e6:.1f}M parameters")
    return {name: times[1:] for name, times in seconds.items()}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model_dir", default=None, help="a model directory (its config.json; default: m3e-small)")
    p.add_argument("--steps", type=int, default=8, help="timed steps of each implementation")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = p.parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.model_dir is None:
        from bertorch.pretrained import fetch_m3e_small
        args.model_dir = fetch_m3e_small()
    summary = {}
    for name, times in time_steps(args.model_dir, args.steps).items():
        summary[name] = {"median_ms": 1000 * statistics.median(times), "best_ms": 1000 * min(times)}
        print(f"{name:15s} median {summary[name]['median_ms']:6.1f} ms   best {summary[name]['best_ms']:6.1f} ms")
    return summary


if __name__ == "__main__":
    main()
