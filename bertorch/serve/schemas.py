"""Request and response bodies (pydantic): FastAPI validates them, answers 422 naming the field, and
documents them at /docs. Unknown fields are refused, so a typo such as "return_prob" is a 422, not a
silently ignored option. The answers are the Predictors' own structures."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Text = str
Pair = tuple[str, str]


class Request(BaseModel):
    model_config = ConfigDict(extra="forbid")

    truncate: bool = Field(True, description="cut (or, for /ner, window) inputs over the model's max length; "
                                             "false answers 422 for them instead")
    task: str | None = Field(None, description="which model of a multi-task student (see /info); needed only "
                                               "when it has several models for this endpoint")


class PredictRequest(Request):
    inputs: list[Text | Pair] = Field(..., description='texts, or ["text_a", "text_b"] pairs for a pair model',
                                      examples=[["房间很干净，服务周到"]])
    return_probs: bool = Field(False, description="each prediction as {label, probs}")
    top_k: int | None = Field(None, ge=1, description="also the k most likely labels with their probabilities")


class LabelScore(BaseModel):
    label: str
    score: float


class Prediction(BaseModel):
    label: str
    probs: dict[str, float] | None = None
    top_k: list[LabelScore] | None = None


class PredictResponse(BaseModel):
    predictions: list[str] | list[Prediction] = Field(
        ..., description="labels, as Predictor.predict(inputs); objects with return_probs or top_k")


class NerRequest(Request):
    inputs: list[Text | list[str]] = Field(..., description="texts (or lists of characters, one tag each)",
                                           examples=[["张三去北京"]])


class Entity(BaseModel):
    type: str
    start: int = Field(..., description="character offset into the input")
    end: int = Field(..., description="exclusive: input[start:end] == text")
    text: str


class Tagged(BaseModel):
    text: str | list[str]
    tags: list[str] | None = Field(None, description="one per character (taggers; span models have none: "
                                                     "their entities may nest)")
    entities: list[Entity]
    words: list[str] | None = None


class NerResponse(BaseModel):
    predictions: list[Tagged]


class EmbedRequest(Request):
    inputs: list[Text] = Field(..., examples=[["房间很干净"]])
    normalize: bool = Field(True, description="unit-length vectors")
    dimensions: int | None = Field(None, ge=1, description="keep the first N dimensions (a Matryoshka prefix), "
                                                           "renormalised when normalize is true")


class EmbedResponse(BaseModel):
    embeddings: list[list[float]]
    dimensions: int


class ModelInfo(BaseModel):
    name: str
    task: Literal["classification", "ner", "sentence_embedding"]
    endpoint: str
    max_length: int
    labels: list[str] | None = None
    is_text_pair: bool | None = None
    tag_scheme: str | None = None
    use_crf: bool | None = None
    head: str | None = Field(None, description="NER: linear, crf, global_pointer or efficient_global_pointer")
    embedding_size: int | None = None


class Info(BaseModel):
    version: str
    backend: str
    model_dir: str
    models: list[ModelInfo]
    max_batch_size: int
    max_batch_tokens: int
    max_wait_ms: float
    max_concurrent: int


class Health(BaseModel):
    status: Literal["ok", "loading", "draining", "failed"]
    detail: str | None = None
