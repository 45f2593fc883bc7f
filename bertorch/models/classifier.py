"""Sequence classification: any `AutoModelForSequenceClassification` with a pluggable hard-label loss."""
from __future__ import annotations

from typing import Callable

import torch
from transformers import AutoModelForSequenceClassification, PretrainedConfig
from transformers.modeling_outputs import SequenceClassifierOutput

from bertorch.models.base import TaskModel


class SequenceClassifier(TaskModel):
    def __init__(self, backbone, loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]):
        super().__init__()
        self.backbone = backbone
        self.loss_fn = loss_fn

    @classmethod
    def from_pretrained(cls, name_or_path: str, config: PretrainedConfig, loss_fn) -> "SequenceClassifier":
        # The class comes from config.model_type (BERT, RoBERTa-wwm, MacBERT, ELECTRA, ALBERT, ...).
        backbone = AutoModelForSequenceClassification.from_pretrained(name_or_path, config=config)
        return cls(backbone, loss_fn)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, labels=None,
                inputs_embeds=None) -> SequenceClassifierOutput:
        kwargs = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
        logits = self.backbone(input_ids=input_ids, attention_mask=attention_mask, **kwargs).logits
        loss = self.loss_fn(logits, labels) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits)
