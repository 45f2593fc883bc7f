"""Training a transformers encoder on CPU with less activation memory, same results.

Most of a BERT training step's memory is what autograd keeps for the backward pass. Three things keep
more than they need on CPU (batch 32 x length 128, 4 layers of hidden 312 / FFN 1200, ~650 MB in all):

* attention with dropout: PyTorch's CPU SDPA falls back to its math path and keeps, per layer, the
  scores, the probabilities, a float dropout mask and the dropped probabilities -- four batch x heads x
  length x length float tensors. `dropout_attention` keeps Q, K, V, the mask and a random seed; backward
  recomputes the probabilities and re-draws the same dropout mask (the flash-attention idea in plain
  PyTorch ops, a few examples at a time): -230 MB, and a little faster than stock SDPA with dropout.
* the FFN keeps both the GELU input and its output (the input of the second Linear): `ActivationLinear`
  keeps the input only and recomputes the activation in backward (a cheap element-wise op): -75 MB.
* CPU dropout keeps a float mask (4 bytes an element): `BoolMaskDropout` keeps a 1-byte mask: -35 MB.

What is left is about 72 KB a token (4 layers x 312). A batch far above the usual size -- Sentence-BERT
encodes 2 x 32 texts, and grouping by length puts AFQMC's longest 64 together (7,300 tokens: +530 MB) --
would set the run's peak alone, so `checkpoint_large_batches` re-runs the layers of batches above a
token budget in backward (transformers' activation checkpointing, switched per batch): they keep only
each layer's input. The budget defaults to 4096 tokens (32 x 128), so ordinary batches pay nothing.

`use_low_memory_training(model)` switches a model to these in place. Weights, state-dict keys and the
saved directory are unchanged, and each piece only takes over where it pays -- training on CPU with
gradients, in fp32 or under bf16 autocast (``--bf16``: the activations are bf16, attention's softmax stays
fp32 as in stock CPU SDPA; autograd keeps 191 MiB for one 32x128 step of the benchmarks' 4x312 BERT, against
548 MiB stock under bf16 and 279 MiB ours in fp32); eval, CUDA (whose fused SDPA kernels already save memory)
and fp16 autocast use the stock path.
Random numbers come from the global RNG (a seed per call), so runs stay reproducible and resume exactly;
they are not the same draws as stock PyTorch dropout.
"""
from __future__ import annotations

import functools
import math
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask
from transformers.modeling_layers import GradientCheckpointingLayer

ATTENTION_NAME = "bertorch_sdpa"


def _pays(*tensors: torch.Tensor) -> bool:
    """Training on CPU with gradients, in fp32 or under bf16 autocast (--bf16): where the memory saving
    applies and the maths is ours. Attention is computed in fp32 either way, as stock CPU SDPA does."""
    autocast_ok = not torch.is_autocast_enabled("cpu") or torch.get_autocast_dtype("cpu") == torch.bfloat16
    return (torch.is_grad_enabled() and autocast_ok
            and all(t.device.type == "cpu" and t.dtype in (torch.float32, torch.bfloat16) for t in tensors))


def _seed() -> int:
    return int(torch.randint(0, 2**62, (1,)).item())  # from the global RNG: reproducible, resumable


def _keep_mask(shape: torch.Size, p: float, seed: int | tuple[int, ...]) -> torch.Tensor:
    """0/1 uint8 mask, 1 with probability 1 - p (to 1/65536). Drawn with numpy's SFC64 (9 ms for a
    32x12x128x128 mask on a 2-core EPYC, PCG64 19 ms, torch's CPU `bernoulli_` 53 ms), which is what makes
    re-drawing the attention mask in backward cheap. uint8, not bool: multiplying a float tensor by a uint8
    one is 3-4x faster on CPU than by a bool one or `masked_fill_` (2.4 vs 9.4 / 7.8 ms at that size), for
    the same byte an element."""
    count = math.prod(shape)
    bits = np.random.Generator(np.random.SFC64(seed)).bytes(2 * count)
    keep = np.frombuffer(bits, dtype=np.uint16) >= round(p * 65536)
    return torch.from_numpy(keep.view(np.uint8)).view(shape)


# -- attention ------------------------------------------------------------------------------------------
def _working_dtype(q: torch.Tensor) -> torch.dtype:
    """fp32 for bf16 inputs (softmax and its backward in fp32, as stock CPU SDPA does), else q's own."""
    return torch.promote_types(q.dtype, torch.float32)


# Attention runs over a few examples at a time, so its temporaries (the scores, the probabilities and their
# gradients, fp32 batch x heads x length^2: 25 MB each at 32 x 12 x 128 x 128) exist for a chunk only. That
# bounds the step's peak rather than its time: `python -m bench.dropout_attention` reads the same speed for one
# chunk and for chunks (87-100 ms a layer's forward + backward on a 2-core EPYC, against 91-114 ms for CPU SDPA
# with dropout); the speed came from torch's fused softmax and its backward, uint8 masks and SFC64 (186 ms
# before, with a log-sum-exp, element-wise softmax backward, bool masks and PCG64).
SCORES_PER_CHUNK = 1 << 19  # score elements (2 MiB in fp32) a chunk aims at; at least one example


def _chunks(batch: int, per_example: int) -> list[slice]:
    rows = max(1, SCORES_PER_CHUNK // max(1, per_example))
    return [slice(start, min(start + rows, batch)) for start in range(0, batch, rows)]


def attention_keep_masks(shape: torch.Size, p: float, seed: int) -> Iterator[tuple[slice, torch.Tensor]]:
    """(example rows, keep mask) of each chunk of a (batch, heads, q_len, k_len) score tensor, drawn as it is
    used (one chunk's mask exists at a time): a chunk's mask comes from (seed, its first row), so forward and
    backward draw the same ones."""
    for rows in _chunks(shape[0], math.prod(shape[1:])):
        yield rows, _keep_mask((rows.stop - rows.start, *shape[1:]), p, (seed, rows.start))


def _probabilities(q, k, mask, scaling):
    """softmax(q k^T * scaling + mask), scaling q (the smaller tensor) rather than the scores."""
    scores = torch.matmul(q * scaling, k.transpose(-1, -2))
    if mask is not None:
        scores.add_(mask)
    return torch.softmax(scores, dim=-1)


def _rows(mask: torch.Tensor | None, rows: slice) -> torch.Tensor | None:
    return mask if mask is None or mask.shape[0] == 1 else mask[rows]


class _DropoutAttention(torch.autograd.Function):
    """In fp32 whatever q/k/v's dtype (bf16 under --bf16: stock CPU SDPA upcasts too); the output and the
    gradients come back in q's dtype, and q/k/v are kept in theirs (half the bytes under bf16). Dropout's
    1 / (1 - p) is applied to the output and the incoming gradient (length / head size times fewer elements
    than the probabilities)."""

    @staticmethod
    def forward(ctx, q, k, v, mask, scaling: float, p: float, seed: int):
        with torch.autocast("cpu", enabled=False):
            work = _working_dtype(q)
            qw, kw, vw = q.to(work), k.to(work), v.to(work)
            out = torch.empty(q.shape, dtype=work)
            for rows, keep in attention_keep_masks((*q.shape[:-1], k.shape[-2]), p, seed):
                probs = _probabilities(qw[rows], kw[rows], _rows(mask, rows), scaling).mul_(keep)
                torch.matmul(probs, vw[rows], out=out[rows])
            out = out.mul_(1.0 / (1.0 - p)).to(q.dtype)
        ctx.save_for_backward(q, k, v, mask)
        ctx.scaling, ctx.p, ctx.seed = scaling, p, seed
        return out

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v, mask = ctx.saved_tensors
        dtype, work, scaling = q.dtype, _working_dtype(q), ctx.scaling
        with torch.autocast("cpu", enabled=False):  # backward may run under the caller's autocast
            q, k, v = q.to(work), k.to(work), v.to(work)
            grad_out = grad_out.to(work) * (1.0 / (1.0 - ctx.p))
            grad_q, grad_k, grad_v = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
            for rows, keep in attention_keep_masks((*q.shape[:-1], k.shape[-2]), ctx.p, ctx.seed):
                probs = _probabilities(q[rows], k[rows], _rows(mask, rows), scaling)
                torch.matmul((probs * keep).transpose(-1, -2), grad_out[rows], out=grad_v[rows])
                grad_probs = torch.matmul(grad_out[rows], v[rows].transpose(-1, -2)).mul_(keep)
                grad_scores = torch._softmax_backward_data(grad_probs, probs, -1, work)  # P * (dP - sum(dP * P))
                torch.matmul(grad_scores, k[rows], out=grad_q[rows])
                torch.matmul(grad_scores.transpose(-1, -2), q[rows], out=grad_k[rows])
        return (grad_q.mul_(scaling).to(dtype), grad_k.mul_(scaling).to(dtype), grad_v.to(dtype),
                None, None, None, None)


def dropout_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None,
                      scaling: float, p: float) -> torch.Tensor:
    """softmax(q k^T * scaling + mask) with dropout p, times v. q/k/v are (batch, heads, length, head_dim);
    mask is additive (float) or boolean (True = attend), broadcastable to the scores."""
    work = _working_dtype(q)
    if mask is not None and mask.dtype == torch.bool:
        mask = torch.zeros(mask.shape, dtype=work).masked_fill_(~mask, torch.finfo(work).min)
    elif mask is not None:
        mask = mask.to(work)
    return _DropoutAttention.apply(q, k, v, mask, scaling, p, _seed())


def low_memory_attention_forward(module: nn.Module, query, key, value, attention_mask, dropout: float = 0.0,
                                 scaling: float | None = None, **kwargs):
    """A transformers attention interface: ours for CPU training with dropout, SDPA for everything else."""
    ours = (dropout > 0.0 and _pays(query, key, value) and not kwargs.get("output_attentions")
            and getattr(module, "num_key_value_groups", 1) == 1 and not getattr(module, "is_causal", False)
            and (attention_mask is None or not attention_mask.requires_grad))
    if not ours:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    scaling = query.size(-1) ** -0.5 if scaling is None else scaling
    output = dropout_attention(query, key, value, attention_mask, scaling, dropout)
    return output.transpose(1, 2).contiguous(), None


AttentionInterface.register(ATTENTION_NAME, low_memory_attention_forward)
AttentionMaskInterface.register(ATTENTION_NAME, sdpa_mask)


# -- activation + linear ---------------------------------------------------------------------------------
class _ActivationLinear(torch.autograd.Function):
    """Under bf16 autocast, backward runs under the same autocast as forward (custom_bwd), so its products
    are bf16 like stock autograd's; the weight's gradient comes back in the weight's dtype."""

    @staticmethod
    @torch.amp.custom_fwd(device_type="cpu")
    def forward(ctx, x, weight, bias, activation):
        ctx.save_for_backward(x, weight)
        ctx.activation, ctx.has_bias = activation, bias is not None
        return F.linear(activation(x), weight, bias)

    @staticmethod
    @torch.amp.custom_bwd(device_type="cpu")
    def backward(ctx, grad_out):
        x, weight = ctx.saved_tensors
        with torch.enable_grad():
            x = x.detach().requires_grad_()
            hidden = ctx.activation(x)
        flat_grad = grad_out.reshape(-1, grad_out.shape[-1])
        grad_weight = flat_grad.t().mm(hidden.detach().reshape(-1, hidden.shape[-1])).to(weight.dtype)
        grad_bias = flat_grad.sum(0).to(weight.dtype) if ctx.has_bias else None
        (grad_x,) = torch.autograd.grad(hidden, x, grad_out.matmul(weight).to(hidden.dtype))
        return grad_x, grad_weight, grad_bias, None


class ActivationLinear(nn.Linear):
    """`linear(activation(x))` that keeps only x for backward; the activation module is set on the instance
    when a model is switched (the Linear's own weights and state-dict keys stay)."""

    activation: nn.Module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and _pays(x, self.weight):
            return _ActivationLinear.apply(x, self.weight, self.bias, self.activation)
        return F.linear(self.activation(x), self.weight, self.bias)


# -- dropout ---------------------------------------------------------------------------------------------
class _BoolMaskDropout(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, p: float):
        keep = _keep_mask(x.shape, p, _seed())
        ctx.save_for_backward(keep)
        ctx.scale = 1.0 / (1.0 - p)
        return x * keep * ctx.scale

    @staticmethod
    def backward(ctx, grad_out):
        (keep,) = ctx.saved_tensors
        return grad_out * keep * ctx.scale, None


class BoolMaskDropout(nn.Dropout):
    """nn.Dropout that keeps a 1-byte mask instead of CPU dropout's float one."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and 0.0 < self.p < 1.0 and _pays(x) and not self.inplace:
            return _BoolMaskDropout.apply(x, self.p)
        return super().forward(x)


# -- switching a model -----------------------------------------------------------------------------------
def use_low_memory_training(model: nn.Module) -> dict[str, int]:
    """Switch `model` in place (see the module docstring); returns how many of each piece were switched.
    Models without SDPA (e.g. set to eager by the user) keep their attention; FFN blocks are recognised by
    transformers' BERT layout (`intermediate.intermediate_act_fn` + `output.dense`: BERT, RoBERTa, ELECTRA,
    MacBERT, ...); other layouts keep theirs."""
    counts = {"attention": 0, "ffn": 0, "dropout": 0}
    for module in list(model.modules()):
        config = getattr(module, "config", None)
        if hasattr(module, "set_attn_implementation") and getattr(config, "_attn_implementation", None) == "sdpa":
            module.set_attn_implementation(ATTENTION_NAME)
            counts["attention"] += 1
        intermediate, output = getattr(module, "intermediate", None), getattr(module, "output", None)
        activation = getattr(intermediate, "intermediate_act_fn", None)
        dense = getattr(output, "dense", None)
        if isinstance(activation, nn.Module) and type(dense) is nn.Linear:
            intermediate.intermediate_act_fn = nn.Identity()
            dense.__class__ = ActivationLinear
            dense.activation = activation
            counts["ffn"] += 1
        if type(module) is nn.Dropout:
            module.__class__ = BoolMaskDropout
            counts["dropout"] += 1
    return counts


def checkpoint_large_batches(model: nn.Module, max_tokens: int) -> int:
    """Recompute each transformer layer in backward (activation checkpointing) for batches of more than
    `max_tokens` tokens (batch x padded length); `max_tokens=0` checkpoints every batch, on any device
    (what `--gradient_checkpointing` does). A budget > 0 only applies where low-memory training does (CPU
    training, fp32 or bf16 autocast). Returns the number of layers hooked (0 for layouts transformers does not
    mark as checkpointable). Dropout seeds come from torch's RNG, which the checkpoint restores for the
    re-run, so the recomputed layer draws the same masks: same values, same gradients."""
    run = functools.partial(checkpoint, use_reentrant=False)  # keyword arguments pass through; DDP-safe

    def decide(layer: nn.Module, args: tuple, kwargs: dict) -> None:
        hidden = args[0] if args else kwargs.get("hidden_states")
        tokens = hidden.numel() // hidden.shape[-1]
        layer.gradient_checkpointing = max_tokens == 0 or (tokens > max_tokens and _pays(hidden))

    layers = [m for m in model.modules() if isinstance(m, GradientCheckpointingLayer)]
    for layer in layers:
        layer._gradient_checkpointing_func = run
        layer.register_forward_pre_hook(decide, with_kwargs=True)
    return len(layers)
