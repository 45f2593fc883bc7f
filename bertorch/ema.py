"""An exponential moving average of the weights (`--ema_decay`), evaluated and saved instead of the raw weights.

Built on torch's `AveragedModel` with `get_ema_multi_avg_fn` (one fused lerp per dtype group per step): after
optimisation step t the average is `decay * ema + (1 - decay) * weights`, starting from a copy of the weights.
Buffers (position ids and the like) are copied, not averaged: an integer buffer must never be blended. The raw
weights stay the ones trained; checkpoints keep both, so a resumed run goes on exactly.
"""
from __future__ import annotations

import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn


class WeightEMA:
    def __init__(self, model: torch.nn.Module, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.averaged = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=False)
        self.averaged.requires_grad_(False)
        self.averaged.update_parameters(model)  # the average starts as a copy of the weights at step 0

    @property
    def model(self) -> torch.nn.Module:
        """The averaged copy of the task model: what evaluation and the saved model use."""
        return self.averaged.module

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        """Call after each optimisation step, with the unwrapped (not DDP) model."""
        self.averaged.update_parameters(model)

    def state_dict(self) -> dict:
        return self.averaged.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.averaged.load_state_dict(state)
