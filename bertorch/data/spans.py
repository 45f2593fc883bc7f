"""Span NER data: entities as (start, end, type) on characters, from three kinds of JSON lines.

    {"text": "...", "entities": [{"start": s, "end": e, "type": t}]}   character offsets, end exclusive
    {"text": "...", "label": {type: {span_text: [[s, e], ...]}}}         CLUENER (end inclusive)
    {"text": [chars], "label": [tags]}                                   the taggers' BIO/BIOS/BIOES/BMES files

Each line is read by its own keys, so one file may mix them. Tags become spans with seqeval's chunking
(`tagging.extract_entities`), the spans the tagger's metric scores, so a span model and a tagger trained on
the same file are scored on the same entities. Entities may nest and overlap; an exact duplicate is kept once.
Windows over long documents are the tagger's (`encode_documents`): a window is trained on the entities it
holds whole.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from bertorch.data.readers import DataError, iter_lines, read_jsonl, read_labels
from bertorch.tagging import extract_entities, to_seqeval_tags, validate_tag_set

Span = tuple[int, int, str]  # start, end (exclusive), type


@dataclass
class SpanText:
    chars: list[str]
    entities: list[Span]
    line: int


def check_label_scheme(label_file: str, labels: Sequence[str], tag: str | None) -> str:
    """The tag scheme of a tag file against --tag; the error names the first label that does not fit, with its line."""
    try:
        return validate_tag_set(list(labels), tag)
    except ValueError as e:
        for (number, _), label in zip(iter_lines(label_file), labels):
            try:
                validate_tag_set([label], tag)
            except ValueError:
                raise DataError(label_file, number, str(e), label) from None
        raise DataError(label_file, None, str(e)) from None


def read_span_labels(label_file: str, tag: str | None = None) -> tuple[list[str], list[str] | None, str | None]:
    """(entity types, tags, scheme) of a label file that lists either tags (B-PER, I-PER, O...: types in order
    of first appearance) or entity types, one a line (tags and scheme None)."""
    labels = read_labels(label_file)
    try:
        validate_tag_set(labels)
    except ValueError:  # not a tag set: each line is an entity type
        if tag is not None:
            raise DataError(label_file, None, f"--tag {tag} needs a file of tags, but this one lists entity types "
                                              f"(e.g. {labels[0]!r})") from None
        return labels, None, None
    scheme = check_label_scheme(label_file, labels, tag)
    types = [label.split("-", 1)[1] for label in labels if "-" in label]  # in label-file order
    return list(dict.fromkeys(types)) or ["W"], labels, scheme  # untyped B/M/E/S: words, seqeval's "W"


def read_spans(path: str, types: Sequence[str] | None = None, tags: Sequence[str] | None = None,
               scheme: str | None = None, labelled: bool = True) -> list[SpanText]:
    """Every line of `path` as text + entities; `types` (if given) must hold every entity type, `tags` every tag
    of a tagged line; `scheme` chunks tags (None: detected from the file's tags). Errors name file:line:value."""
    known = set(types) if types is not None else None
    tag_set = set(tags) if tags is not None else None
    examples, tagged = [], []
    for number, obj in read_jsonl(path):
        if "text" not in obj:
            raise DataError(path, number, f'missing key "text"; keys are {sorted(obj)}')
        chars = _chars(path, number, obj["text"])
        example = SpanText(chars, [], number)
        if labelled:
            if "entities" in obj:
                example.entities = _entities(path, number, obj["entities"], chars)
            elif isinstance(obj.get("label"), dict):
                example.entities = _cluener(path, number, obj["label"], chars)
            elif isinstance(obj.get("label"), list):
                tagged.append((example, _tags(path, number, obj["label"], chars, tag_set)))
            else:
                raise DataError(path, number, 'expected "entities" (a list), or "label" as tags (a list) or as '
                                              f'CLUENER spans (an object); keys are {sorted(obj)}')
        examples.append(example)
    if not examples:
        raise DataError(path, None, "no examples in file")
    if tagged:
        if scheme is None:
            try:
                scheme = validate_tag_set(sorted({t for _, ts in tagged for t in ts}))
            except ValueError as e:
                raise DataError(path, None, str(e)) from None
        for example, ts in tagged:
            example.entities = [(e["start"], e["end"], e["type"])
                                for e in extract_entities(to_seqeval_tags(ts, scheme), example.chars)]
    for example in examples:
        example.entities = sorted(set(example.entities))
        for start, end, type_ in example.entities:
            if known is not None and type_ not in known:
                raise DataError(path, example.line, f"entity type not in the label file ({', '.join(types)})", type_)
    return examples


def types_of(examples: Sequence[SpanText]) -> list[str]:
    """The entity types of a data set, sorted: the label order when no --label_file gives one."""
    return sorted({t for e in examples for _, _, t in e.entities})


def _chars(path: str, number: int, text) -> list[str]:
    chars = list(text) if isinstance(text, str) else text
    if not isinstance(chars, list) or not all(isinstance(c, str) for c in chars):
        raise DataError(path, number, '"text" must be a string or a list of characters', text)
    if not chars:
        raise DataError(path, number, "empty text")
    return chars


def _span(path: str, number: int, start, end, type_, chars: list[str], shown) -> Span:
    """One checked span, end exclusive."""
    if not isinstance(type_, str) or not type_:
        raise DataError(path, number, "entity type must be a non-empty string", shown)
    if not (isinstance(start, int) and isinstance(end, int) and 0 <= start < end <= len(chars)):
        raise DataError(path, number, f"entity offsets must satisfy 0 <= start < end <= {len(chars)} (the text's "
                                      f"length, end exclusive)", shown)
    return start, end, type_


def _entities(path: str, number: int, entities, chars: list[str]) -> list[Span]:
    if not isinstance(entities, list):
        raise DataError(path, number, '"entities" must be a list', entities)
    out = []
    for e in entities:
        if not isinstance(e, dict) or not {"start", "end", "type"} <= set(e):
            raise DataError(path, number, 'each entity needs "start", "end" (exclusive) and "type"', e)
        span = _span(path, number, e["start"], e["end"], e["type"], chars, e)
        if "text" in e and e["text"] != "".join(chars[span[0]:span[1]]):
            raise DataError(path, number, f"entity text is not text[{span[0]}:{span[1]}] = "
                                          f"{''.join(chars[span[0]:span[1]])!r}", e["text"])
        out.append(span)
    return out


def _cluener(path: str, number: int, label: dict, chars: list[str]) -> list[Span]:
    """CLUENER's {type: {span_text: [[start, end_inclusive], ...]}}; each span's text must match the text."""
    out = []
    for type_, surfaces in label.items():
        if not isinstance(surfaces, dict):
            raise DataError(path, number, f'CLUENER "label" maps a type to {{span_text: [[start, end], ...]}}', surfaces)
        for surface, positions in surfaces.items():
            for pos in positions if isinstance(positions, list) else [positions]:
                if not (isinstance(pos, list) and len(pos) == 2):
                    raise DataError(path, number, f"CLUENER positions are [start, end] (end inclusive)", pos)
                span = _span(path, number, pos[0], pos[1] + 1 if isinstance(pos[1], int) else pos[1], type_, chars, pos)
                if "".join(chars[span[0]:span[1]]) != surface:
                    raise DataError(path, number, f"span {pos} of {type_!r} is {''.join(chars[span[0]:span[1]])!r} in "
                                                  f"the text, not", surface)
                out.append(span)
    return out


def _tags(path: str, number: int, tags: list, chars: list[str], tag_set: set | None) -> list[str]:
    if len(tags) != len(chars):
        raise DataError(path, number, f"{len(chars)} characters but {len(tags)} labels", "".join(chars))
    for i, tag in enumerate(tags):
        if not isinstance(tag, str) or (tag_set is not None and tag not in tag_set):
            raise DataError(path, number, f"tag at position {i} not in the label file", tag)
    return tags
