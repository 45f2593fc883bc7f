"""Sequence-labelling data: the JSON-lines reader and the character-aligned window encoding that training,
evaluation, the Predictor and the ONNX checks all build their inputs with.

One prediction per original character, never per sub-token: characters go to the tokenizer as words
(`is_split_into_words`) and each is represented by its first sub-token; characters the tokenizer drops
(spaces, zero-width and control characters) become the unknown token first, so they keep their place.
Documents longer than one window are split into overlapping windows (`make_windows`), which are stitched
back into documents before decoding, so every gold tag is scored.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from loguru import logger

from bertorch.data.readers import DataError, read_jsonl
from bertorch.tagging import count_illegal_transitions, illegal_transition_example, make_windows


@dataclass
class TaggedText:
    chars: list[str]
    tags: list[str] | None
    line: int


def read_tagged(path: str, labels: Sequence[str] | None) -> list[TaggedText]:
    """JSON lines `{"text": [chars], "label": [tags]}` (labels=None: text only, as for prediction).

    Hard errors name file:line:value; continuation tags that continue nothing (I- after O, common in
    upstream data) are only counted and shown, since seqeval scores them as new entities anyway.
    """
    known = set(labels) if labels is not None else None
    examples, illegal, noisy, shown = [], 0, 0, []
    for number, obj in read_jsonl(path):
        for key in ("text",) + (("label",) if known is not None else ()):
            if key not in obj:
                raise DataError(path, number, f'missing key "{key}"; keys are {sorted(obj)}')
        text = obj["text"]
        chars = list(text) if isinstance(text, str) else text
        if not isinstance(chars, list) or not all(isinstance(c, str) for c in chars):
            raise DataError(path, number, '"text" must be a list of characters (strings)', text)
        if not chars:
            raise DataError(path, number, "empty text")
        tags = None
        if known is not None:
            tags = obj["label"]
            if not isinstance(tags, list) or len(tags) != len(chars):
                size = len(tags) if isinstance(tags, list) else type(tags).__name__
                raise DataError(path, number, f"{len(chars)} characters but {size} labels", "".join(chars))
            for i, tag in enumerate(tags):
                if tag not in known:
                    raise DataError(path, number, f"tag at position {i} not in the label file", tag)
            if n := count_illegal_transitions(tags):
                illegal, noisy = illegal + n, noisy + 1
                if len(shown) < 3:
                    shown.append(f"  {path}:{number}: {illegal_transition_example(tags, chars)}")
        examples.append(TaggedText(chars, tags, number))
    if not examples:
        raise DataError(path, None, "no examples in file")
    if illegal:
        logger.warning(f"{path}: {illegal} continuation tags (e.g. I- after O) continue no entity, on {noisy} "
                       f"lines; they are kept and scored as entity starts. Examples:\n" + "\n".join(shown))
    return examples


def encode_documents(tokenizer, docs: Sequence[Sequence[str]], max_length: int, stride: int) -> list[dict]:
    """One feature per window: input_ids, token_type_ids, char_index (token of each character), doc, start.

    Each document is tokenised once, without truncation; windows are cut from its tokens by character
    (at most max_length tokens with the special ones) and overlap by `stride` characters.
    """
    if not docs:
        return []
    enc = tokenizer(list(docs), is_split_into_words=True, verbose=False)
    rows = [(enc, d) for d in range(len(docs))]
    spans = [_char_tokens(enc.word_ids(d), len(doc)) for d, doc in enumerate(docs)]
    redo = [d for d, (_, count) in enumerate(spans) if 0 in count]
    if redo:  # characters with no token at all: the unknown token keeps their place
        fixed = [[c if n else tokenizer.unk_token for c, n in zip(docs[d], spans[d][1])] for d in redo]
        again = tokenizer(fixed, is_split_into_words=True, verbose=False)
        for row, d in enumerate(redo):
            rows[d], spans[d] = (again, row), _char_tokens(again.word_ids(row), len(docs[d]))
    features = []
    for d, doc in enumerate(docs):
        (src, row), (first, count) = rows[d], spans[d]
        ids = src["input_ids"][row]
        types = src["token_type_ids"][row] if "token_type_ids" in src else None
        body_start, body_end = first[0], first[-1] + count[-1]
        budget = max_length - (len(ids) - (body_end - body_start))
        if body_end - body_start <= budget:
            windows = [(0, len(doc))]
        else:
            windows = make_windows(len(doc), budget, stride, count)
        for start, end in windows:
            lo = first[start]
            hi = min(first[end - 1] + count[end - 1], lo + budget)
            take = list(range(body_start)) + list(range(lo, hi)) + list(range(body_end, len(ids)))
            feature = {"input_ids": [ids[t] for t in take], "doc": d, "start": start,
                       "char_index": [body_start + first[c] - lo for c in range(start, end)]}
            if types is not None:
                feature["token_type_ids"] = [types[t] for t in take]
            features.append(feature)
    return features


def _char_tokens(word_ids: list[int | None], num_chars: int) -> tuple[list[int], list[int]]:
    """First token position and token count of every character."""
    first, count = [-1] * num_chars, [0] * num_chars
    for pos, w in enumerate(word_ids):
        if w is not None:
            if count[w] == 0:
                first[w] = pos
            count[w] += 1
    return first, count
