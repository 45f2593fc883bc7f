"""How the graph is traced (always: the eager attention) and, on request, fused for onnxruntime.

Eager attention: a trace of transformers' default attention (SDPA) decomposes into ~30 small ops per
layer (IsNaN/Where guards for fully masked rows, scaling of both Q and K, mask arithmetic). The eager
attention traces to the textbook pattern: fewer ops (onnxruntime ~15% faster at batch 1 on a 2-core
CPU) and the one onnxruntime's transformer optimizer recognises; the SDPA trace fuses no Attention.

Fusion (`export_onnx.py --optimize`): `optimize_model(model_type="bert")` turns each layer into one
`Attention` (packed QKV GEMM, mask and softmax inside), one `BiasGelu` and two `SkipLayerNormalization`,
behind one `EmbedLayerNormalization` -- the same maths, outputs change by float noise (checked after
export, with a fall back to the plain graph). Not the default: on a 2-core CPU it measured within +-3%
of the plain graph in fp32 and int8 at batch 1 and 32 (the time is in the MatMuls, 65-90%, which fusion
does not change), and its contrib ops run only in onnxruntime. It is meant for onnxruntime-gpu, where
`Attention` runs fused CUDA kernels (not measured here: no GPU).

The attention keeps the raw 2-D `attention_mask` (`use_raw_attention_mask`): the optimizer's default turns
the mask into per-row lengths, which silently assumes right padding; with the raw mask any mask a user
feeds the graph gives PyTorch's result.
"""
from __future__ import annotations

import contextlib
import warnings

from torch import nn


@contextlib.contextmanager
def eager_attention(module: nn.Module):
    """Trace `module` with the eager attention of every transformers sub-model, restoring it after."""
    switched = []
    for sub in module.modules():
        config = getattr(sub, "config", None)
        current = getattr(config, "_attn_implementation", None)
        if hasattr(sub, "set_attn_implementation") and current not in (None, "eager"):
            sub.set_attn_implementation("eager")
            switched.append((sub, current))
    try:
        yield
    finally:
        for sub, current in reversed(switched):
            sub.set_attn_implementation(current)


def optimize_graph(path: str, config) -> dict[str, int]:
    """Fuse the graph at `path` in place for a BERT-family `config`; returns the fused-op counts
    (`{"Attention": 4, ...}`), empty when nothing fused (the plain graph is kept then)."""
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    options = FusionOptions("bert")  # the encoders bertorch trains (bert, roberta, ernie, ...) share BERT's pattern
    options.use_raw_attention_mask(True)
    # opt_level 0: only the optimizer's fusions; the session applies its own optimisations at load time,
    # on the machine that runs the graph (no hardware-specific layout baked into the file).
    try:
        optimized = optimize_model(path, model_type="bert", num_heads=config.num_attention_heads,
                                   hidden_size=config.hidden_size, optimization_options=options, opt_level=0)
    except Exception as e:  # a graph the optimizer does not understand still serves, unfused
        warnings.warn(f"onnxruntime's transformer optimizer failed ({str(e).splitlines()[0] if str(e) else e!r}); "
                      f"keeping the plain graph", stacklevel=2)
        return {}
    fused = {op: n for op, n in optimized.get_fused_operator_statistics().items() if n}
    if fused:
        optimized.save_model_to_file(path)  # also declares the com.microsoft opset of the fused ops
    return fused
