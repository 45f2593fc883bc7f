"""One attention layer's forward + backward with dropout: bertorch's low-memory kernel against CPU SDPA.

Random q/k/v of a training batch's shape (batch, heads, length, head size; each example padded at a random
length, an additive mask as transformers builds it), dropout 0.1, in fp32 and bf16. The implementations run
in turns (A B C A B C ...) and each figure is the median over --repeats turns of the mean of --steps calls:

  low-memory   bertorch.models.low_memory's dropout attention (what CPU training runs: a few examples at a time)
  one chunk    the same with the whole batch as one chunk (what the chunking saves)
  sdpa         torch's scaled_dot_product_attention with dropout (CPU: its math path, stock autograd)
  sdpa-nodrop  the same without dropout (CPU's fused flash kernel; a bound, not the same computation)

    python -m bench.dropout_attention [--shapes 32x12x128x26 32x8x128x64] [--steps 5] [--repeats 3]
"""
from __future__ import annotations

import argparse
import statistics
import time


def implementations(q, k, v, mask, p: float) -> dict:
    import torch.nn.functional as F

    from bertorch.models import low_memory

    scaling = q.shape[-1] ** -0.5

    def chunked():
        return low_memory._DropoutAttention.apply(q, k, v, mask, scaling, p, 7)

    def one_chunk():
        budget, low_memory.SCORES_PER_CHUNK = low_memory.SCORES_PER_CHUNK, 1 << 62
        try:
            return chunked()
        finally:
            low_memory.SCORES_PER_CHUNK = budget

    return {"low-memory": chunked, "one chunk": one_chunk,
            "sdpa": lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=mask.to(q.dtype), dropout_p=p),
            "sdpa-nodrop": lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=mask.to(q.dtype))}


def time_shape(shape: tuple[int, ...], dtype_name: str, steps: int, repeats: int) -> dict[str, float]:
    """Median milliseconds of one forward + backward per implementation."""
    import torch

    torch.manual_seed(0)
    batch, _, length, _ = shape
    q, k, v = [torch.randn(shape).to(getattr(torch, dtype_name)).requires_grad_() for _ in range(3)]
    mask = torch.zeros(batch, 1, 1, length)
    for row, real in enumerate(torch.randint(length // 3, length + 1, (batch,)).tolist()):
        mask[row, ..., real:] = torch.finfo(torch.float32).min
    fns = implementations(q, k, v, mask, 0.1)
    times: dict[str, list[float]] = {name: [] for name in fns}
    for turn in range(repeats + 1):  # the first turn warms up: not counted
        for name, fn in fns.items():
            start = time.perf_counter()
            for _ in range(steps):
                out = fn()
                out.backward(torch.ones_like(out))
            if turn:
                times[name].append((time.perf_counter() - start) / steps * 1000)
    return {name: statistics.median(ms) for name, ms in times.items()}


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(prog="python -m bench.dropout_attention", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shapes", nargs="+", default=["32x12x128x26", "32x8x128x64"],
                   help="batch x heads x length x head size (the bench's 4x312 BERT; m3e-small)")
    p.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"], choices=["float32", "bfloat16"])
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    rows = []
    for text in args.shapes:
        shape = tuple(int(n) for n in text.split("x"))
        if len(shape) != 4:
            p.error(f"--shapes: {text!r} is not batch x heads x length x head_size")
        for dtype_name in args.dtypes:
            ms = time_shape(shape, dtype_name, args.steps, args.repeats)
            rows.append({"shape": text, "dtype": dtype_name, **{f"{k} ms": round(v, 1) for k, v in ms.items()}})
            print(f"{text:14s} {dtype_name:9s} " + "  ".join(f"{k} {v:.1f} ms" for k, v in ms.items()), flush=True)
    return rows


if __name__ == "__main__":
    main()
