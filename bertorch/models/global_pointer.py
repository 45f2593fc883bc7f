"""GlobalPointer span NER (Su Jianlin, https://kexue.fm/archives/8373): a score for every (start, end, type).

Per entity type, the encoder's vector of each character is projected to a "start" and an "end" vector, both
rotated by their position (RoPE, so the score knows the span's length), and span (i, j) of type k scores
q_k(i) . k_k(j). Entities may nest or overlap, which no tagger can express, and decoding is a threshold at
0: no Viterbi, so the whole head sits inside an ONNX graph. The Efficient variant
(https://kexue.fm/archives/8877) shares one start/end projection across types and adds a per-type start and
end bias, far fewer parameters for many types.

Scores live on characters as the tagger's do: training gathers the first sub-token of every character
before the head (`char_index`) and rotates each by its token position; the predictor and the ONNX graph
score every token (positions 0..T-1) and pick the characters' rows and columns outside, the same numbers.
Memory is (length^2 x types) floats per example, e.g. 128 x 128 x 8 x 4 B = 0.5 MB (x 4 at 256 tokens).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn
from transformers import AutoConfig, AutoModel, PretrainedConfig
from transformers.modeling_outputs import TokenClassifierOutput

from bertorch.errors import ModelError
from bertorch.losses.spans import global_pointer_loss
from bertorch.model_dir import SPAN_HEADS
from bertorch.models.base import TaskModel
from bertorch.models.crf import gather_char_positions

MASKED = -1e12  # the score of a span that cannot be an entity (padding, start after end): never above 0
DEFAULT_HEAD_SIZE = 64


def rotate(x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """RoPE: rotate each pair of features (2i, 2i+1) of `x` (B, T, ..., D) by positions (B, T) x 10000^(-2i/D)."""
    dim = x.shape[-1]
    freqs = torch.pow(10000.0, -torch.arange(0, dim, 2, device=x.device, dtype=torch.float32) / dim)
    angles = positions.float()[..., None] * freqs  # (B, T, D/2)
    angles = angles.view(*angles.shape[:2], *([1] * (x.dim() - 3)), angles.shape[-1])
    cos = torch.stack((angles.cos(), angles.cos()), dim=-1).flatten(-2)
    sin = torch.stack((angles.sin(), angles.sin()), dim=-1).flatten(-2)
    x = x.float()
    swapped = torch.stack((-x[..., 1::2], x[..., ::2]), dim=-1).flatten(-2)  # (-x1, x0, -x3, x2, ...)
    return x * cos + swapped * sin


class GlobalPointer(nn.Module):
    """Start and end projections per type; (B, T, H) -> unmasked (B, K, T, T) span scores."""

    def __init__(self, hidden_size: int, num_types: int, head_size: int = DEFAULT_HEAD_SIZE):
        super().__init__()
        self.num_types, self.head_size = num_types, head_size
        self.dense = nn.Linear(hidden_size, num_types * head_size * 2)

    def forward(self, hidden: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        batch, length = hidden.shape[:2]
        start_end = self.dense(hidden).view(batch, length, self.num_types, 2, self.head_size)
        start, end = rotate(start_end[..., 0, :], positions), rotate(start_end[..., 1, :], positions)
        return torch.einsum("bmkd,bnkd->bkmn", start, end) / self.head_size ** 0.5


class EfficientGlobalPointer(nn.Module):
    """One shared start/end projection, plus a per-type start bias and end bias read from it."""

    def __init__(self, hidden_size: int, num_types: int, head_size: int = DEFAULT_HEAD_SIZE):
        super().__init__()
        self.num_types, self.head_size = num_types, head_size
        self.dense = nn.Linear(hidden_size, head_size * 2)
        self.bias = nn.Linear(head_size * 2, num_types * 2)

    def forward(self, hidden: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        shared = self.dense(hidden)
        start, end = rotate(shared[..., ::2], positions), rotate(shared[..., 1::2], positions)
        scores = torch.einsum("bmd,bnd->bmn", start, end) / self.head_size ** 0.5
        bias = self.bias(shared).float().transpose(1, 2) / 2  # (B, 2K, T): even rows end bias, odd rows start
        return scores[:, None] + bias[:, 0::2, None, :] + bias[:, 1::2, :, None]


HEAD_CLASSES = dict(zip(SPAN_HEADS, (GlobalPointer, EfficientGlobalPointer)))


def mask_spans(scores: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """MASKED where start or end is padding or the start comes after the end (comparisons only: any opset)."""
    mask = mask.bool()
    valid = mask[:, :, None] & mask[:, None, :] & (positions[:, :, None] <= positions[:, None, :])
    return scores.float().masked_fill(~valid[:, None], MASKED)


class SpanNer(TaskModel):
    """Encoder (AutoModel, from config.model_type) + a GlobalPointer head; loss in forward, as every task model."""

    def __init__(self, backbone: nn.Module, head: str, head_size: int = DEFAULT_HEAD_SIZE):
        super().__init__()
        if head not in HEAD_CLASSES:
            raise ModelError(f"unknown span head {head!r}; choose one of {', '.join(HEAD_CLASSES)}")
        self.backbone = backbone
        config = backbone.config
        if getattr(backbone, "pooler", None) is not None:  # unused: frozen, so DDP finds no idle parameters
            backbone.pooler.requires_grad_(False)
        rate = getattr(config, "classifier_dropout", None)
        self.dropout = nn.Dropout(rate if rate is not None else getattr(config, "hidden_dropout_prob", 0.0))
        self.global_pointer = HEAD_CLASSES[head](config.hidden_size, config.num_labels, head_size)

    @classmethod
    def from_pretrained(cls, name_or_path: str, config: PretrainedConfig, head: str,
                        head_size: int = DEFAULT_HEAD_SIZE) -> "SpanNer":
        return cls(AutoModel.from_pretrained(name_or_path, config=config), head, head_size)

    @classmethod
    def from_saved(cls, model_dir: str, info: dict) -> "SpanNer":
        """A directory saved by training (head and head size from its bertorch.json), weights loaded strictly."""
        config = AutoConfig.from_pretrained(model_dir)
        model = cls(AutoModel.from_config(config), info["head"], int(info.get("gp_head_size", DEFAULT_HEAD_SIZE)))
        model.load_weights(model_dir, strict=True)
        return model

    def extra_modules(self) -> dict[str, nn.Module]:
        return {"global_pointer": self.global_pointer}

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, char_index=None, char_mask=None,
                labels=None) -> TokenClassifierOutput:
        """logits (B, K, C, C) over characters with `char_index` (training), else (B, K, T, T) over tokens;
        labels: 0/1 (B, K, C, C), 1 where a span [start, end] (end inclusive) is an entity of type k."""
        kwargs = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
        hidden = self.dropout(self.backbone(input_ids=input_ids, attention_mask=attention_mask, **kwargs)[0])
        if char_index is None:
            mask = attention_mask if attention_mask is not None else torch.ones_like(input_ids)
            positions = torch.ones_like(input_ids).cumsum(-1) - 1  # 0..T-1, traced with a dynamic length
        else:
            hidden, mask, positions = gather_char_positions(hidden, char_index, char_mask), char_mask, char_index
        logits = mask_spans(self.global_pointer(hidden, positions), positions, mask)
        loss = global_pointer_loss(logits, labels) if labels is not None else None
        return TokenClassifierOutput(loss=loss, logits=logits)


def decode_spans(scores: np.ndarray, char_index=None) -> np.ndarray:
    """(n, 3) int array of (type, start, end inclusive) with score > 0, from (K, T, T) scores of one input;
    with `char_index`, only the characters' rows and columns, so positions are characters."""
    if char_index is not None:
        index = np.asarray(char_index)
        scores = scores[:, index][:, :, index]
    return np.argwhere(scores > 0)
