"""Tag schemes, span extraction, long-text windows and word scores for sequence labelling.

Pure Python/numpy. Entity chunking is seqeval's own (`get_entities`, default non-strict mode), so the
spans a user sees from the Predictor are exactly the spans the NER metric scores.

Schemes (the `--tag` flag):
  bio    B-X I-X O
  bios   B-X I-X O S-X   (an entity ends at its last I-X; single characters are S-X; the data here)
  bioes  B-X I-X E-X O S-X
  bmes   B M E S         (word segmentation, no types)
"""
from __future__ import annotations

import numpy as np

SCHEMES = ("bio", "bios", "bioes", "bmes")
DECODINGS = ("constrained", "argmax")  # a Linear head's tags: legal under the scheme, or per character
_PREFIXES = {"bio": "BI", "bios": "BIS", "bioes": "BIES"}
_BMES = ("B", "M", "E", "S")
# E and S close a chunk in seqeval's default mode, so this mapping cuts words exactly where BMES does.
_BMES_TO_SEQEVAL = {"B": "B-W", "M": "I-W", "E": "E-W", "S": "S-W"}


def _split(tag: str) -> tuple[str, str]:
    """'B-PER' -> ('B', 'PER'); 'O' and untyped BMES tags -> (tag, '')."""
    prefix, _, type_ = tag.partition("-")
    return prefix, type_


def _detect_scheme(labels: list[str]) -> str:
    """The smallest scheme that admits every label."""
    if labels and all(label in _BMES for label in labels):
        return "bmes"
    prefixes = set()
    for label in labels:
        prefix, type_ = _split(label)
        if label == "O":
            continue
        if prefix not in "BIES" or len(prefix) != 1 or not type_:
            raise ValueError(f"label {label!r} is neither 'O' nor a B-/I-/E-/S- tag with a type, "
                             f"nor one of the untyped segmentation tags B/M/E/S")
        prefixes.add(prefix)
    for scheme in ("bio", "bios", "bioes"):
        if prefixes <= set(_PREFIXES[scheme]):
            return scheme
    raise AssertionError("unreachable: 'bioes' admits every prefix")


def validate_tag_set(labels: list[str], scheme: str | None = None) -> str:
    """Check labels.txt against `--tag`; with no scheme, return the detected one.

    Fails early, naming the offending label, instead of letting seqeval silently mis-chunk tags it
    was not told about (e.g. `S-` tags scored as BIO).
    """
    detected = _detect_scheme(labels)
    if scheme is None or scheme == detected:
        return detected
    if scheme not in SCHEMES:
        raise ValueError(f"unknown tag scheme {scheme!r}; choose one of {', '.join(SCHEMES)}")
    for label in labels:
        if scheme == "bmes":
            allowed = label in _BMES
        else:
            prefix, type_ = _split(label)
            allowed = label == "O" or (prefix in _PREFIXES[scheme] and bool(type_))
        if not allowed:
            raise ValueError(f"label {label!r} is not a {scheme!r} tag (labels look like {detected!r}); "
                             f"pass --tag {detected} or fix the label file")
    return scheme


def to_seqeval_tags(tags: list[str], scheme: str) -> list[str]:
    """Tags that seqeval's default mode chunks correctly.

    BIO/BIOS/BIOES pass through: seqeval's default mode knows S- and E- already. BIOS here ends an
    entity on I-, so seqeval's strict IOBES mode does not apply to it. Untyped BMES becomes
    B-W I-W E-W S-W; on well-formed sequences that scores the same in default and strict IOBES mode.
    """
    if scheme == "bmes":
        return [_BMES_TO_SEQEVAL[tag] for tag in tags]
    return list(tags)


def _spans(tags: list[str]) -> list[tuple[str, int, int]]:
    """seqeval chunks as (type, start, end) with `end` exclusive."""
    # imported here, not at the top: seqeval.metrics imports scikit-learn and scipy.stats (about 3 s on two cores),
    # which a run without dev data, or a tagger's Predictor before its first text, never needs
    from seqeval.metrics.sequence_labeling import get_entities

    return [(type_, start, end + 1) for type_, start, end in get_entities(list(tags))]


def _chars(tags: list[str], text: str | list[str]) -> list[str]:
    chars = list(text)
    if len(chars) != len(tags):
        raise ValueError(f"{len(tags)} tags for {len(chars)} characters")
    return chars


def extract_entities(tags: list[str], text: str | list[str]) -> list[dict]:
    """Entities as {"type", "start", "end", "text"}, `end` exclusive, chunked exactly as seqeval does.

    `text` is the list of characters the tags were given for (a str is split into code points), so
    `text == "".join(chars[start:end])` holds for spaces, emoji and characters outside the BMP alike.
    """
    chars = _chars(tags, text)
    return [{"type": type_, "start": start, "end": end, "text": "".join(chars[start:end])}
            for type_, start, end in _spans(tags)]


def word_spans(tags: list[str]) -> list[tuple[int, int]]:
    """BMES tags -> (start, end) word spans covering every character: cut before B/S and after E/S."""
    return [(start, end) for _, start, end in _spans(to_seqeval_tags(tags, "bmes"))]


def segment_words(tags: list[str], text: str | list[str]) -> list[str]:
    """BMES tags -> the words; their concatenation is the text."""
    chars = _chars(tags, text)
    return ["".join(chars[start:end]) for start, end in word_spans(tags)]


def word_prf(gold_tag_seqs: list[list[str]], pred_tag_seqs: list[list[str]]) -> dict[str, float]:
    """Word-level precision/recall/F1: a predicted word counts when its (start, end) span is gold."""
    if len(gold_tag_seqs) != len(pred_tag_seqs):
        raise ValueError(f"{len(gold_tag_seqs)} gold sequences but {len(pred_tag_seqs)} predicted")
    gold_total = pred_total = correct = 0
    for gold, pred in zip(gold_tag_seqs, pred_tag_seqs):
        gold_words, pred_words = set(word_spans(gold)), set(word_spans(pred))
        gold_total += len(gold_words)
        pred_total += len(pred_words)
        correct += len(gold_words & pred_words)
    precision = correct / pred_total if pred_total else 0.0
    recall = correct / gold_total if gold_total else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def illegal_transitions(tags: list[str]) -> list[int]:
    """Positions of continuation tags (I-/E-/M/E) that continue nothing, e.g. I-PER after O or B-LOC.

    seqeval starts a new entity there, so they are legal to score but usually annotation slips.
    """
    positions = []
    prev_prefix, prev_type = "O", ""
    for i, tag in enumerate(tags):
        prefix, type_ = _split(tag)
        if prefix in ("I", "E", "M") and (prev_prefix not in ("B", "I", "M") or prev_type != type_):
            positions.append(i)
        prev_prefix, prev_type = prefix, type_
    return positions


# A transition the scheme forbids scores this in `transition_constraints`: far below any sum of log-probabilities
# of a real document (-1e4 per forbidden step), yet finite, so Viterbi arithmetic never meets inf - inf.
FORBIDDEN = -1e4
_CONTINUES = ("I", "E", "M")  # continue the chunk before them
_OPENS = ("B", "I", "M")      # leave a chunk open: in BIOES and BMES it must be closed by E (or E-X)
_CLOSING_SCHEMES = ("bioes", "bmes")


def transition_constraints(labels: list[str], scheme: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(start, end, transitions) scores of the scheme's legal tag sequences: 0 where allowed, FORBIDDEN where
    not, laid out as pytorch-crf's (`transitions[i, j]`: tag i then tag j), so `viterbi_decode_numpy` over a
    Linear head's log-probabilities gives the most probable sequence that is legal.

    Forbidden: a continuation (I-X, E-X, M, E) after anything but an open chunk of its type, or at the start;
    in BIOES and BMES, a chunk left open (B, I, M) before a tag that does not continue it, or at the end.
    """
    parts = [_split(label) for label in labels]
    start = np.array([FORBIDDEN if p in _CONTINUES else 0.0 for p, _ in parts], dtype=np.float32)
    closing = scheme in _CLOSING_SCHEMES
    end = np.array([FORBIDDEN if closing and p in _OPENS else 0.0 for p, _ in parts], dtype=np.float32)
    transitions = np.zeros((len(labels), len(labels)), dtype=np.float32)
    for i, (prev, prev_type) in enumerate(parts):
        for j, (prefix, type_) in enumerate(parts):
            if prefix in _CONTINUES:
                legal = prev in _OPENS and prev_type == type_
            else:
                legal = not (closing and prev in _OPENS)
            if not legal:
                transitions[i, j] = FORBIDDEN
    return start, end, transitions


def decoding_constraints(labels: list[str], scheme: str, decoding: str | None):
    """What `decode_document` takes as `constraints` for a saved or flagged decoding: the scheme's transition
    constraints for "constrained"; None for "argmax", "crf" (the CRF's own transitions) and None (a model saved
    before --decoding, scored by argmax)."""
    return transition_constraints(labels, scheme) if decoding == "constrained" else None


def count_illegal_transitions(tags: list[str]) -> int:
    """How many continuation tags continue nothing (the data loader warns with this count)."""
    return len(illegal_transitions(tags))


def illegal_transition_example(tags: list[str], text: str | list[str], context: int = 5) -> str | None:
    """A short human-readable snippet around the first illegal transition, or None if there is none."""
    positions = illegal_transitions(tags)
    if not positions:
        return None
    chars, i = _chars(tags, text), positions[0]
    prev = tags[i - 1] if i else "<start>"
    left = "".join(chars[max(0, i - context):i])
    right = "".join(chars[i + 1:i + 1 + context])
    return f"...{left}[{chars[i]}]{right}... at char {i}: {prev} -> {tags[i]}"


def make_windows(num_chars: int, max_chars: int, stride: int,
                 sizes: list[int] | None = None) -> list[tuple[int, int]]:
    """(start, end) windows of at most `max_chars` covering every character.

    Like HF's `doc_stride`, `stride` is how many characters consecutive windows share, so a character
    near one window's edge sits well inside the next. With `sizes` (sub-tokens per character) a window
    holds at most `max_chars` *tokens*, so characters that split into several pieces never push a
    window past the model's limit (a lone character over budget still gets a window of its own).
    """
    if not 0 <= stride < max_chars:
        raise ValueError(f"need 0 <= stride < max_chars, got stride={stride}, max_chars={max_chars}")
    if sizes is not None and len(sizes) != num_chars:
        raise ValueError(f"{len(sizes)} sizes for {num_chars} characters")
    windows, start = [], 0
    while start < num_chars:
        if sizes is None:
            end = min(start + max_chars, num_chars)
        else:
            end, used = start + 1, sizes[start]
            while end < num_chars and used + sizes[end] <= max_chars:
                used += sizes[end]
                end += 1
        windows.append((start, end))
        if end == num_chars:
            break
        start = max(end - stride, start + 1)
    return windows


def stitch_window_predictions(num_chars: int, windows: list[tuple[int, int]], per_window: list) -> list:
    """One prediction per character from overlapping windows, each taken from its most central window.

    A character's context in a window is its distance to the nearer edge that cuts the text (the
    document's own ends do not count). Works for tags and for per-character score vectors; stitching
    emissions and decoding the whole document once keeps CRF transitions legal across seams.
    """
    best_context = np.full(num_chars, -1, dtype=np.int64)
    source = np.zeros(num_chars, dtype=np.int64)
    for w, (start, end) in enumerate(windows):
        if len(per_window[w]) != end - start:
            raise ValueError(f"window {w} spans {end - start} characters but has {len(per_window[w])} predictions")
        positions = np.arange(start, end)
        left = positions - start if start > 0 else np.full(end - start, num_chars)
        right = end - 1 - positions if end < num_chars else np.full(end - start, num_chars)
        context = np.minimum(left, right)
        better = context > best_context[start:end]
        best_context[start:end][better] = context[better]
        source[start:end][better] = w
    if (best_context < 0).any():
        raise ValueError(f"character {int(np.argmax(best_context < 0))} is not covered by any window")
    return [per_window[w][i - windows[w][0]] for i, w in enumerate(source.tolist())]


def merge_window_spans(num_chars: int, windows: list[tuple[int, int]], per_window: list) -> list[tuple]:
    """Document spans from overlapping windows, each span judged by one window: of the windows that hold it
    whole, the one where it sits farthest from an edge that cuts the text (the first on a tie), as
    `stitch_window_predictions` does for characters. So a span two windows both see is kept once, and a
    window's guess about a span near its cut edge never outvotes a window that sees its context.

    `per_window[w]`: (type, start, end_inclusive) in window w's own character positions; returns sorted
    (type, start, end_exclusive) in document positions.
    """
    def context(span_start: int, span_end: int, w: int) -> int:
        start, end = windows[w]
        left = span_start - start if start > 0 else num_chars
        right = end - span_end if end < num_chars else num_chars
        return min(left, right)

    kept = set()
    for w, spans in enumerate(per_window):
        offset = windows[w][0]
        for type_, start, last in spans:
            s, e = int(start) + offset, int(last) + 1 + offset
            holders = [v for v, (ws, we) in enumerate(windows) if ws <= s and e <= we]
            if max(holders, key=lambda v: (context(s, e, v), -v)) == w:
                kept.add((int(type_), s, e) if not isinstance(type_, str) else (type_, s, e))
    return sorted(kept)
