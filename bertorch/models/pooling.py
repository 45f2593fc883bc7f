"""Turn a BERT's token states into one sentence vector, the way the original bertorch did.

Modes (``--pooling_mode``):
  * ``linear`` -- the [CLS] state through the backbone's own pooler (dense + tanh), i.e. ``pooler_output``;
  * ``cls``    -- the raw [CLS] state (position 0);
  * ``mean``   -- the mean over non-padding tokens, weighted by ``attention_mask``.

An optional linear projection (``--output_emb_size``) shrinks the vector, as in the original SimCSE /
batchneg scripts.  :class:`SentencePooler` keeps the mode and the projection size in a small JSON file and
the projection weights in safetensors beside the HuggingFace model directory, so a Predictor can rebuild
exactly the encoder that was trained (no pickle).
"""
from __future__ import annotations

import json
import os

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bertorch.errors import UsageError
from bertorch.model_dir import POOLING_CONFIG_NAME, POOLING_WEIGHTS_NAME

POOLING_MODES = ("linear", "cls", "mean")


def _check_mode(mode: str) -> str:
    if mode not in POOLING_MODES:
        raise UsageError(f"unknown pooling mode {mode!r}; choose one of {', '.join(POOLING_MODES)}")
    return mode


def pool(mode: str, last_hidden_state: Tensor, attention_mask: Tensor | None,
         pooler_output: Tensor | None = None) -> Tensor:
    """Sentence vectors ``(B, H)`` from ``last_hidden_state (B, L, H)``.

    ``attention_mask (B, L)`` is 1 for real tokens and 0 for padding (only ``mean`` needs it; ``None``
    means no padding).  ``pooler_output (B, H)`` is required by ``linear``.  Padding positions are
    zeroed with ``masked_fill`` rather than multiplied by 0, so whatever sits there (even inf/nan) cannot
    leak into the mean.
    """
    _check_mode(mode)
    if last_hidden_state.dim() != 3:
        raise ValueError(f"last_hidden_state must be (batch, length, hidden), got {tuple(last_hidden_state.shape)}")
    if mode == "linear":
        if pooler_output is None:
            raise UsageError("pooling mode 'linear' needs the backbone's pooler (dense+tanh over [CLS]), but "
                             "pooler_output is None (model built without a pooling layer?); use 'cls' or 'mean'")
        return pooler_output
    if mode == "cls":
        return last_hidden_state[:, 0]
    # mean
    if attention_mask is None:
        return last_hidden_state.mean(dim=1)
    if attention_mask.shape != last_hidden_state.shape[:2]:
        raise ValueError(f"attention_mask {tuple(attention_mask.shape)} does not match hidden states "
                         f"{tuple(last_hidden_state.shape[:2])}")
    keep = attention_mask.bool().unsqueeze(-1)                              # (B, L, 1)
    summed = last_hidden_state.masked_fill(~keep, 0.0).sum(dim=1)           # (B, H)
    counts = keep.sum(dim=1).clamp(min=1).to(last_hidden_state.dtype)      # (B, 1); empty rows give zeros
    return summed / counts


class SentencePooler(nn.Module):
    """Pooling + optional projection to ``output_emb_size`` (+ optional L2 normalisation).

    ``hidden_size`` is only needed when projecting (it is the projection's input size).  ``None`` or 0
    for ``output_emb_size`` means no projection, so the vector keeps the backbone's hidden size.
    """

    def __init__(self, mode: str = "cls", hidden_size: int | None = None, output_emb_size: int | None = None):
        super().__init__()
        self.mode = _check_mode(mode)
        self.hidden_size = int(hidden_size) if hidden_size else None
        self.output_emb_size = int(output_emb_size) if output_emb_size else None
        if self.output_emb_size is not None and self.output_emb_size < 0:
            raise UsageError(f"output_emb_size must be positive, got {output_emb_size}")
        if self.output_emb_size and self.hidden_size is None:
            raise ValueError("a projection (output_emb_size) needs hidden_size, the backbone's hidden size")
        self.projection = nn.Linear(self.hidden_size, self.output_emb_size) if self.output_emb_size else None

    @property
    def embedding_size(self) -> int | None:
        """Size of the vectors this pooler returns (None when unknown: no projection and no hidden_size)."""
        return self.output_emb_size or self.hidden_size

    def forward(self, last_hidden_state: Tensor, attention_mask: Tensor | None,
                pooler_output: Tensor | None = None, normalize: bool = False) -> Tensor:
        """``(B, L, H)`` states + ``(B, L)`` mask (+ ``(B, H)`` pooler output) -> ``(B, E)`` vectors."""
        emb = pool(self.mode, last_hidden_state, attention_mask, pooler_output)
        if self.projection is not None:
            emb = self.projection(emb)
        return F.normalize(emb, p=2, dim=-1) if normalize else emb

    def pool_outputs(self, outputs, attention_mask: Tensor | None, normalize: bool = False) -> Tensor:
        """Same as ``forward`` but takes a HuggingFace model output (uses its ``pooler_output`` if any)."""
        return self(outputs.last_hidden_state, attention_mask, getattr(outputs, "pooler_output", None), normalize)

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}, hidden_size={self.hidden_size}, output_emb_size={self.output_emb_size}"

    # ---- persistence: JSON config + safetensors weights, beside the HuggingFace model directory ----
    def config_dict(self) -> dict:
        return {"pooling_mode": self.mode, "hidden_size": self.hidden_size, "output_emb_size": self.output_emb_size}

    @classmethod
    def from_config_dict(cls, config: dict) -> "SentencePooler":
        unknown = set(config) - {"pooling_mode", "hidden_size", "output_emb_size"}
        if unknown:
            raise ValueError(f"unknown keys in pooling config: {sorted(unknown)}")
        return cls(config.get("pooling_mode", "cls"), config.get("hidden_size"), config.get("output_emb_size"))

    def save(self, save_dir: str) -> None:
        """Write ``sentence_pooling.json`` (+ ``sentence_pooling.safetensors`` when there is a projection)."""
        from safetensors.torch import save_file

        os.makedirs(save_dir, exist_ok=True)
        with open(os.path.join(save_dir, POOLING_CONFIG_NAME), "w", encoding="utf-8") as f:
            json.dump(self.config_dict(), f, indent=2)
        weights = os.path.join(save_dir, POOLING_WEIGHTS_NAME)
        if self.projection is not None:
            save_file({k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}, weights)
        elif os.path.exists(weights):
            os.remove(weights)  # a stale projection from an earlier save must not be picked up later

    @classmethod
    def load(cls, load_dir: str, map_location: str | torch.device = "cpu") -> "SentencePooler":
        """Rebuild a pooler written by :meth:`save`; fails loudly if the projection weights are missing."""
        from safetensors.torch import load_file

        path = os.path.join(load_dir, POOLING_CONFIG_NAME)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"no {POOLING_CONFIG_NAME} in {load_dir}")
        with open(path, encoding="utf-8") as f:
            pooler = cls.from_config_dict(json.load(f))
        if pooler.projection is not None:
            weights = os.path.join(load_dir, POOLING_WEIGHTS_NAME)
            if not os.path.isfile(weights):
                raise FileNotFoundError(f"{path} declares a projection but {weights} is missing")
            pooler.load_state_dict(load_file(weights, device=str(map_location)), strict=True)
        return pooler.to(map_location)

    @staticmethod
    def exists(model_dir: str) -> bool:
        """True when ``model_dir`` holds a saved pooling config (lets a Predictor decide how to encode)."""
        return os.path.isfile(os.path.join(model_dir, POOLING_CONFIG_NAME))
