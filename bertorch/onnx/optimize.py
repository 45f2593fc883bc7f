"""Make the exported graph fast in onnxruntime: trace a fusable attention, then fuse with onnxruntime's
transformer optimizer.

Why: a plain export of transformers' default attention (SDPA) decomposes into ~30 small ops per layer
(IsNaN/Where guards, two scalings, mask arithmetic) that neither onnxruntime's session optimizer nor its
transformer optimizer recognises, so every layer runs unfused: separate Q, K and V MatMuls, a float
mask rebuilt per layer, LayerNorm after an Add. Tracing the eager attention instead gives the pattern
`optimize_model(model_type="bert")` knows, and the graph becomes, per layer, one `Attention` (packed QKV
GEMM, mask and softmax inside), one `BiasGelu` and two `SkipLayerNormalization`, behind one
`EmbedLayerNormalization` -- the same maths, so outputs change only by float noise (checked after export).

The attention keeps the raw 2-D `attention_mask` (`use_raw_attention_mask`): the optimizer's default turns
the mask into per-row lengths, which silently assumes right padding; with the raw mask any mask a user
feeds the graph gives PyTorch's result. The fused ops are onnxruntime contrib ops (CPU and CUDA); other
runtimes need the plain graph (`export_onnx.py --no_optimize`).
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
