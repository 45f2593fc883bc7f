"""Bi-encoder: one shared encoder turns every sentence of a `(batch, num_sent, len)` batch into a vector.

SimCSE (a sentence twice, two dropout masks), batchneg (text_a, text_b) and Sentence-BERT (text_a, text_b,
label) differ only in what happens to the `(batch, num_sent, dim)` vectors, so they share this model and
plug in a head: `ContrastiveHead` or `CoSENTHead` (no weights) or `PairClassifier`. The pooler (mode + projection) and a
classifier are extras in head.safetensors (resume, --init_from_ckpt); the pooler is also written as
sentence_pooling.json/.safetensors, which is what `SentenceEncoder` rebuilds the embedding from.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import Tensor, nn
from transformers import AutoModel, PretrainedConfig
from transformers.utils import ModelOutput

from bertorch.losses.contrastive import pair_contrastive_loss
from bertorch.losses.cosent import pair_cosent_loss
from bertorch.models.base import ModelError, TaskModel
from bertorch.models.pooling import SentencePooler


@dataclass
class BiEncoderOutput(ModelOutput):
    loss: Tensor | None = None
    logits: Tensor | None = None       # Sentence-BERT classifier scores (B, num_labels)
    embeddings: Tensor | None = None   # (B, num_sent, E), before any normalisation


def load_backbone(name_or_path: str, config: PretrainedConfig, pooling_mode: str) -> nn.Module:
    """The bare encoder (class from config.model_type). Its pooler layer is only used by `linear`
    pooling; otherwise it is frozen, so DDP does not wait for gradients that never come."""
    try:
        backbone = AutoModel.from_pretrained(name_or_path, config=config)
    except OSError as e:
        raise ModelError(f"{name_or_path!r}: cannot load encoder weights ({str(e).splitlines()[0]})") from None
    if pooling_mode != "linear" and getattr(backbone, "pooler", None) is not None:
        backbone.pooler.requires_grad_(False)
    return backbone


def embed(backbone: nn.Module, pooler: SentencePooler, input_ids: Tensor, attention_mask: Tensor,
          token_type_ids: Tensor | None = None) -> Tensor:
    """`(N, L)` token ids -> `(N, E)` pooled (projected) sentence vectors."""
    kwargs = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
    return pooler.pool_outputs(backbone(input_ids=input_ids, attention_mask=attention_mask, **kwargs),
                               attention_mask)


class SentenceEmbedder(nn.Module):
    """Backbone + pooler with plain tensor inputs and a dict output: what a Predictor backend runs (and
    what an ONNX export would trace), so it returns exactly the training-time embedding."""

    def __init__(self, backbone: nn.Module, pooler: SentencePooler):
        super().__init__()
        self.backbone, self.pooler = backbone, pooler

    def forward(self, input_ids, attention_mask, token_type_ids=None) -> dict[str, Tensor]:
        return {"sentence_embedding": embed(self.backbone, self.pooler, input_ids, attention_mask, token_type_ids)}


class ContrastiveHead(nn.Module):
    """In-batch negatives on `(B, 2, E)` (`losses.contrastive.pair_contrastive_loss`; no weights): row i of view 0
    must pick its own view 1 among all view-1 rows, with every rank's rows as candidates when `gather`.
    `text_ids (B, 2)` switches on masking of identical texts (false negatives); `dims` / `weights` sum the
    loss over Matryoshka prefixes. The loss exists in training mode only: in-batch negatives of a dev set
    mean nothing, and evaluation shards are uneven across ranks, where a collective would hang.
    """

    def __init__(self, scale: float = 20.0, margin: float = 0.2, symmetric: bool = False, gather: bool = True,
                 dims: Sequence[int] | None = None, weights: Sequence[float] | None = None):
        super().__init__()
        self.scale, self.margin, self.symmetric, self.gather = scale, margin, symmetric, gather
        self.dims, self.weights = dims, weights

    def forward(self, emb: Tensor, labels: Tensor | None = None, text_ids: Tensor | None = None):
        if not self.training:
            return None, None
        return pair_contrastive_loss(emb, self.scale, self.margin, self.symmetric, self.gather, text_ids,
                                     self.dims, self.weights), None

    def extra_repr(self) -> str:
        return (f"scale={self.scale}, margin={self.margin}, symmetric={self.symmetric}, gather={self.gather}, "
                f"dims={self.dims}")


class CoSENTHead(nn.Module):
    """CoSENT on `(B, 2, E)` with gold scores `labels (B,)` (`losses.cosent.pair_cosent_loss`; no weights):
    the cosines of every (gathered) pair ranked as their scores are. Training mode only, as above."""

    def __init__(self, scale: float = 20.0, gather: bool = True, dims: Sequence[int] | None = None,
                 weights: Sequence[float] | None = None):
        super().__init__()
        self.scale, self.gather, self.dims, self.weights = scale, gather, dims, weights

    def forward(self, emb: Tensor, labels: Tensor | None = None, text_ids: Tensor | None = None):
        if not self.training or labels is None:
            return None, None
        return pair_cosent_loss(emb, labels, self.scale, self.gather, self.dims, self.weights), None

    def extra_repr(self) -> str:
        return f"scale={self.scale}, gather={self.gather}, dims={self.dims}"


class PairClassifier(nn.Module):
    """Sentence-BERT's softmax classifier over `(u, v, |u-v|[, u*v])` of the two sentence vectors."""

    def __init__(self, embedding_size: int, num_labels: int, concat_multiply: bool = False,
                 loss_fn: Callable[[Tensor, Tensor], Tensor] | None = None, dropout: float = 0.0):
        super().__init__()
        self.concat_multiply = concat_multiply
        self.loss_fn = loss_fn or nn.functional.cross_entropy
        self.dropout = nn.Dropout(dropout)
        self.linear = nn.Linear((4 if concat_multiply else 3) * embedding_size, num_labels)

    def forward(self, emb: Tensor, labels: Tensor | None = None, text_ids: Tensor | None = None):
        u, v = emb[:, 0], emb[:, 1]
        features = [u, v, (u - v).abs()] + ([u * v] if self.concat_multiply else [])
        logits = self.linear(self.dropout(torch.cat(features, dim=-1)))
        return (self.loss_fn(logits, labels) if labels is not None else None), logits


class BiEncoder(TaskModel):
    def __init__(self, backbone: nn.Module, pooler: SentencePooler, head: nn.Module):
        super().__init__()
        self.backbone, self.pooler, self.head = backbone, pooler, head

    @classmethod
    def from_pretrained(cls, name_or_path: str, config: PretrainedConfig, pooling_mode: str,
                        output_emb_size: int | None, make_head: Callable[[int], nn.Module]) -> "BiEncoder":
        """`make_head(embedding_size)` builds the head once the vector size is known."""
        backbone = load_backbone(name_or_path, config, pooling_mode)
        pooler = SentencePooler(pooling_mode, config.hidden_size, output_emb_size)
        return cls(backbone, pooler, make_head(pooler.embedding_size))

    def extra_modules(self) -> dict[str, nn.Module]:
        extras = {"pooler": self.pooler}
        if any(True for _ in self.head.parameters()):
            extras["head"] = self.head
        return extras

    def save_pretrained(self, directory: str) -> None:
        super().save_pretrained(directory)
        self.pooler.save(directory)

    def encode(self, input_ids: Tensor, attention_mask: Tensor, token_type_ids: Tensor | None = None) -> Tensor:
        """`(N, L)` -> `(N, E)` sentence vectors (not normalised)."""
        return embed(self.backbone, self.pooler, input_ids, attention_mask, token_type_ids)

    def forward(self, input_ids: Tensor, attention_mask: Tensor, token_type_ids: Tensor | None = None,
                labels: Tensor | None = None, text_ids: Tensor | None = None) -> BiEncoderOutput:
        """`input_ids`/`attention_mask (B, S, L)`: all B*S sentences go through the encoder in one pass
        (for SimCSE the two copies of a sentence get independent dropout masks)."""
        b, s, length = input_ids.shape
        flat = (lambda t: None if t is None else t.reshape(b * s, length))
        emb = self.encode(flat(input_ids), flat(attention_mask), flat(token_type_ids)).view(b, s, -1)
        loss, logits = self.head(emb, labels=labels, text_ids=text_ids)
        return BiEncoderOutput(loss=loss, logits=logits, embeddings=emb)
