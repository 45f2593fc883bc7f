"""Sequence tagger: any `AutoModelForTokenClassification` + optional CRF, one prediction per character.

The backbone scores sub-tokens; we keep the first sub-token of each original character
(`gather_char_positions`), so loss, CRF and predictions all live on characters and a CRF mask is a
left-aligned run as pytorch-crf needs. The CRF is an extra module: its transitions go to
`head.safetensors` beside the transformers weights, and the numpy helpers below decode from that file
without torch (the CRF stays out of an exported ONNX graph).
"""
from __future__ import annotations

import os
from typing import Callable, Sequence

import numpy as np
import torch
from transformers import AutoModelForTokenClassification, PretrainedConfig
from transformers.modeling_outputs import TokenClassifierOutput

from bertorch.losses.classification import IGNORE_INDEX
from bertorch.errors import ModelError
from bertorch.model_dir import CRF_WEIGHTS_NAME, HEAD_WEIGHTS_NAME
from bertorch.models.base import TaskModel
from bertorch.models.crf import CRFHead, gather_char_positions, viterbi_decode_numpy
from bertorch.tagging import stitch_window_predictions

CrfArrays = tuple[np.ndarray, np.ndarray, np.ndarray]  # start, end, transitions (pytorch-crf's)


class Tagger(TaskModel):
    def __init__(self, backbone, loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], use_crf: bool):
        super().__init__()
        self.backbone = backbone
        self.loss_fn = loss_fn
        self.crf = CRFHead(backbone.config.num_labels) if use_crf else None

    @classmethod
    def from_pretrained(cls, name_or_path: str, config: PretrainedConfig, loss_fn, use_crf: bool) -> "Tagger":
        # The class comes from config.model_type; the saved dir loads with AutoModelForTokenClassification.
        backbone = AutoModelForTokenClassification.from_pretrained(name_or_path, config=config)
        return cls(backbone, loss_fn, use_crf)

    def extra_modules(self) -> dict[str, torch.nn.Module]:
        return {"crf": self.crf} if self.crf is not None else {}

    def forward(self, input_ids, char_index, char_mask, attention_mask=None, token_type_ids=None,
                labels=None) -> TokenClassifierOutput:
        """`char_index[b, c]`: token of character c; returns per-character logits (B, C, K)."""
        kwargs = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
        logits = self.backbone(input_ids=input_ids, attention_mask=attention_mask, **kwargs).logits
        emissions = gather_char_positions(logits, char_index, char_mask)
        loss = None
        if labels is not None:
            if self.crf is not None:
                loss = self.crf.nll(emissions, labels, char_mask)
            else:
                labels = labels.masked_fill(~char_mask.bool(), IGNORE_INDEX)
                loss = self.loss_fn(emissions.flatten(0, 1), labels.flatten())
        return TokenClassifierOutput(loss=loss, logits=emissions)

    def crf_arrays(self) -> CrfArrays | None:
        """The current transitions as numpy, for the same decoder the Predictor uses."""
        if self.crf is None:
            return None
        crf = self.crf.crf
        return tuple(p.detach().float().cpu().numpy()
                     for p in (crf.start_transitions, crf.end_transitions, crf.transitions))


def load_crf_arrays(model_dir: str) -> CrfArrays:
    """CRF transitions of a saved tagger, read with numpy only (head.safetensors, or crf.safetensors)."""
    from safetensors.numpy import load_file

    for name, prefix in ((HEAD_WEIGHTS_NAME, "crf.crf."), (CRF_WEIGHTS_NAME, "")):
        path = os.path.join(model_dir, name)
        if os.path.isfile(path):
            arrays = load_file(path)
            try:
                return tuple(arrays[prefix + key].astype(np.float32)
                             for key in ("start_transitions", "end_transitions", "transitions"))
            except KeyError:
                continue
    raise ModelError(f"{model_dir}: trained with --use_crf but no CRF transitions found "
                     f"({HEAD_WEIGHTS_NAME} or {CRF_WEIGHTS_NAME})")


def decode_document(num_chars: int, windows: Sequence[tuple[int, int]], emissions: Sequence[np.ndarray],
                    crf: CrfArrays | None = None, constraints: CrfArrays | None = None) -> list[int]:
    """Tag ids for a whole document from per-window (chars, K) emissions.

    Emissions (not tags) are stitched, each character from its most central window, and the document
    is decoded once, so a CRF path stays legal across window seams and every character gets a tag.
    Without a CRF: each character's argmax, or with `constraints` (`bertorch.tagging.transition_constraints`)
    the most probable sequence of the per-character softmax that the tag scheme allows.
    """
    if len(windows) == 1 and windows[0] == (0, num_chars):
        scores = np.asarray(emissions[0])
    else:
        scores = np.stack(stitch_window_predictions(num_chars, list(windows), list(emissions)))
    scores = scores.astype(np.float32)
    if crf is not None:
        return viterbi_decode_numpy(scores, *crf)
    if constraints is not None:
        return viterbi_decode_numpy(log_softmax(scores), *constraints)
    return scores.argmax(-1).tolist()


def log_softmax(scores: np.ndarray) -> np.ndarray:
    """Per-row log-probabilities of (L, K) scores, in numpy (the predictor decodes without torch)."""
    shifted = scores - scores.max(-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
