"""Tag schemes, seqeval-compatible spans, illegal transitions, long-text windows and word scores."""
from __future__ import annotations

import random
import warnings

import numpy as np
import pytest
from seqeval.metrics import f1_score
from seqeval.metrics.sequence_labeling import get_entities
from seqeval.scheme import IOBES, Entities

from bertorch.models.tagger import decode_document, log_softmax
from bertorch.tagging import (count_illegal_transitions, extract_entities, illegal_transition_example,
                              illegal_transitions, make_windows, segment_words, stitch_window_predictions,
                              to_seqeval_tags, transition_constraints, validate_tag_set, word_prf, word_spans)

# Label files of the shared data sets.
PEOPLES_DAILY_BIO = ["O", "B-LOC", "B-ORG", "B-PER", "I-LOC", "I-ORG", "I-PER"]
MSRA_BIOS = ["O", "B-NR", "B-NS", "B-NT", "I-NR", "I-NS", "I-NT", "S-NR", "S-NS", "S-NT"]
WEIBO_BIOS = ["O", "B-GPE.NAM", "I-GPE.NAM", "S-GPE.NAM", "B-PER.NOM", "I-PER.NOM"]
CWS_BMES = ["B", "M", "E", "S"]


# --- schemes ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("labels, scheme", [(PEOPLES_DAILY_BIO, "bio"), (MSRA_BIOS, "bios"),
                                            (WEIBO_BIOS, "bios"), (CWS_BMES, "bmes"),
                                            (["O", "B-X", "I-X", "E-X", "S-X"], "bioes")])
def test_scheme_is_detected_and_accepted(labels, scheme):
    assert validate_tag_set(labels) == scheme
    assert validate_tag_set(labels, scheme) == scheme


def test_superset_scheme_accepts_fewer_prefixes():
    assert validate_tag_set(PEOPLES_DAILY_BIO, "bios") == "bios"


def test_bio_with_s_tags_names_the_offending_label():
    with pytest.raises(ValueError, match=r"'S-NR'.*'bios'.*--tag bios"):
        validate_tag_set(MSRA_BIOS, "bio")


def test_bmes_flag_with_ner_labels_and_ner_flag_with_bmes_labels():
    with pytest.raises(ValueError, match="'O' is not a 'bmes' tag"):
        validate_tag_set(PEOPLES_DAILY_BIO, "bmes")
    with pytest.raises(ValueError, match="'B' is not a 'bio' tag"):
        validate_tag_set(CWS_BMES, "bio")


@pytest.mark.parametrize("labels, bad", [(["O", "M-PER"], "M-PER"), (["O", "B-"], "B-"), (["O", "PER"], "PER"),
                                         (["O", "B", "M", "E", "S"], "B")])
def test_malformed_labels_are_named(labels, bad):
    with pytest.raises(ValueError, match=f"label {bad!r} is neither"):
        validate_tag_set(labels)


def test_unknown_scheme():
    with pytest.raises(ValueError, match="unknown tag scheme 'iob2'"):
        validate_tag_set(PEOPLES_DAILY_BIO, "iob2")


# --- entity spans ----------------------------------------------------------------------------------

def check_spans(entities, chars):
    for e in entities:
        assert e["text"] == "".join(chars[e["start"]:e["end"]])


def test_spans_over_spaces_fullwidth_digits_english_emoji_and_rare_chars():
    chars = ["张", "三", " ", "在", "０", "１", "２", "号", "Apple", "店", "😀", "𠮷", "野", "家", "。"]
    tags = ["B-PER", "I-PER", "O", "O", "B-LOC", "I-LOC", "I-LOC", "I-LOC", "S-ORG", "O", "S-EMO",
            "B-ORG", "I-ORG", "I-ORG", "O"]
    entities = extract_entities(tags, chars)
    assert [(e["type"], e["text"]) for e in entities] == [
        ("PER", "张三"), ("LOC", "０１２号"), ("ORG", "Apple"), ("EMO", "😀"), ("ORG", "𠮷野家")]
    check_spans(entities, chars)


def test_string_text_is_split_into_code_points():
    text = "😀 李四 in 上海"
    tags = ["O", "O", "B-PER", "I-PER", "O", "O", "O", "O", "B-LOC", "I-LOC"]
    entities = extract_entities(tags, text)
    assert [(e["start"], e["end"], e["text"]) for e in entities] == [(2, 4, "李四"), (8, 10, "上海")]
    assert all(text[e["start"]:e["end"]] == e["text"] for e in entities)


def test_length_mismatch_is_an_error():
    with pytest.raises(ValueError, match="3 tags for 2 characters"):
        extract_entities(["O", "O", "O"], "ab")


def test_i_after_o_or_other_type_starts_an_entity_like_seqeval():
    tags = ["O", "I-PER", "I-PER", "B-LOC", "I-PER", "S-ORG", "I-ORG"]
    spans = [(e["type"], e["start"], e["end"]) for e in extract_entities(tags, "abcdefg")]
    assert spans == [("PER", 1, 3), ("LOC", 3, 4), ("PER", 4, 5), ("ORG", 5, 6), ("ORG", 6, 7)]


@pytest.mark.parametrize("seed", range(5))
def test_random_tag_soup_agrees_with_seqeval(seed):
    rng = random.Random(seed)
    vocab = ["O", "B-A", "I-A", "S-A", "E-A", "B-B", "I-B", "S-B"]
    for _ in range(100):
        tags = [rng.choice(vocab) for _ in range(rng.randint(1, 12))]
        chars = [rng.choice(["字", "😀", " ", "Ａ", "word"]) for _ in tags]
        entities = extract_entities(tags, chars)
        assert [(e["type"], e["start"], e["end"] - 1) for e in entities] == get_entities(tags)
        check_spans(entities, chars)


# --- seqeval mapping -------------------------------------------------------------------------------

def test_raw_bmes_confuses_seqeval_but_mapped_tags_do_not():
    tags = ["B", "M", "E", "S", "M", "E", "E"]  # ill-formed on purpose: M after S, E after E
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        raw = get_entities(tags)
    assert ("_", 3, 3) in raw and ("_", 3, 5) in raw  # seqeval alone yields overlapping words
    assert word_spans(tags) == [(0, 3), (3, 4), (4, 6), (6, 7)]


def test_bmes_mapping_scores_like_strict_iobes_on_well_formed_sequences():
    gold = [["B", "E", "S", "B", "M", "E"], ["S", "S", "B", "E"]]
    pred = [["B", "E", "S", "S", "B", "E"], ["B", "E", "B", "E"]]
    g = [to_seqeval_tags(t, "bmes") for t in gold]
    p = [to_seqeval_tags(t, "bmes") for t in pred]
    assert f1_score(g, p) == pytest.approx(f1_score(g, p, mode="strict", scheme=IOBES))
    assert f1_score(g, p) == pytest.approx(word_prf(gold, pred)["f1"])


def test_bios_passes_through_and_strict_iobes_would_be_wrong_for_it():
    gold = [["B-PER", "I-PER", "O", "S-LOC"]]
    pred = [["O", "O", "O", "S-LOC"]]
    assert to_seqeval_tags(gold[0], "bios") == gold[0]
    assert f1_score(gold, pred) == pytest.approx(2 / 3)
    # Strict IOBES wants E- to close B-PER, drops the gold PER and reports a perfect score.
    assert f1_score(gold, pred, mode="strict", scheme=IOBES) == 1.0


# --- illegal transitions ---------------------------------------------------------------------------

def test_illegal_transitions_are_counted_and_shown():
    tags = ["I-PER", "I-PER", "O", "I-LOC", "B-ORG", "I-LOC", "S-PER", "I-PER", "B-PER", "I-PER"]
    assert illegal_transitions(tags) == [0, 3, 5, 7]
    assert count_illegal_transitions(tags) == 4
    text = "小明去北京找公司老王李"
    assert illegal_transition_example(tags, list(text[:10])) == "...[小]明去北京找... at char 0: <start> -> I-PER"
    assert count_illegal_transitions(["B-PER", "I-PER", "O", "S-LOC"]) == 0
    assert illegal_transition_example(["O"], "a") is None


def test_illegal_bmes_transitions():
    assert illegal_transitions(["B", "M", "E", "S", "M", "E", "E"]) == [4, 6]


# --- long documents --------------------------------------------------------------------------------

def test_windows_cover_every_character_with_the_requested_overlap():
    windows = make_windows(3000, 126, 32)
    covered = np.zeros(3000, dtype=int)
    for start, end in windows:
        assert 0 < end - start <= 126
        covered[start:end] += 1
    assert covered.min() >= 1
    assert windows[0][0] == 0 and windows[-1][1] == 3000
    assert all(b[0] == a[1] - 32 for a, b in zip(windows, windows[1:]))


@pytest.mark.parametrize("num_chars, max_chars, stride, expected", [
    (0, 10, 2, []), (5, 10, 2, [(0, 5)]), (10, 10, 2, [(0, 10)]), (11, 10, 2, [(0, 10), (8, 11)]),
    (20, 10, 0, [(0, 10), (10, 20)])])
def test_window_edge_cases(num_chars, max_chars, stride, expected):
    assert make_windows(num_chars, max_chars, stride) == expected


def test_stride_must_leave_progress():
    with pytest.raises(ValueError, match="stride"):
        make_windows(100, 10, 10)


def test_3000_char_document_stitches_back_to_the_truth():
    rng = random.Random(0)
    truth = [rng.choice(["O", "B-PER", "I-PER", "S-LOC"]) for _ in range(3000)]
    windows = make_windows(3000, 126, 32)
    stitched = stitch_window_predictions(3000, windows, [truth[s:e] for s, e in windows])
    assert len(stitched) == 3000
    assert stitched == truth


def test_each_character_comes_from_its_most_central_window():
    windows = make_windows(30, 10, 4)  # (0,10) (6,16) (12,22) (18,28) (24,30)
    stitched = stitch_window_predictions(30, windows, [[w] * (e - s) for w, (s, e) in enumerate(windows)])
    for i, w in enumerate(stitched):
        def context(k):
            s, e = windows[k]
            if not s <= i < e:
                return -1
            return min(i - s if s > 0 else 99, e - 1 - i if e < 30 else 99)
        assert context(w) == max(context(k) for k in range(len(windows)))
    # Char 7 is 2 from window 0's right edge but 1 from window 1's left edge; char 9 is the reverse.
    assert stitched[7] == 0 and stitched[9] == 1


def test_stitching_score_vectors():
    windows = make_windows(12, 6, 2)
    scores = np.random.default_rng(0).normal(size=(12, 3))
    stitched = stitch_window_predictions(12, windows, [scores[s:e] for s, e in windows])
    assert np.array_equal(np.stack(stitched), scores)


def test_stitch_rejects_wrong_lengths_and_gaps():
    with pytest.raises(ValueError, match="window 0 spans 3"):
        stitch_window_predictions(3, [(0, 3)], [["O"]])
    with pytest.raises(ValueError, match="character 3 is not covered"):
        stitch_window_predictions(5, [(0, 3)], [["O"] * 3])


# --- word segmentation -----------------------------------------------------------------------------

def test_segment_words():
    text = "我爱北京天安门"
    tags = ["S", "S", "B", "E", "B", "M", "E"]
    assert segment_words(tags, text) == ["我", "爱", "北京", "天安门"]
    assert word_spans(tags) == [(0, 1), (1, 2), (2, 4), (4, 7)]


def test_words_always_concatenate_back_to_the_text():
    rng = random.Random(1)
    for _ in range(200):
        tags = [rng.choice("BMES") for _ in range(rng.randint(1, 10))]
        chars = [rng.choice(["字", "😀", " ", "０"]) for _ in tags]
        assert "".join(segment_words(tags, chars)) == "".join(chars)


def test_word_prf_by_hand():
    # gold: 我 | 爱 | 北京 | 天安门     pred: 我爱 | 北京 | 天 | 安门
    # gold words 4, predicted 4, correct 1 (北京)
    # gold: 上海 | 人               pred: 上海人  -> gold 2, predicted 1, correct 0
    # overall: P = 1/5, R = 1/6
    gold = [["S", "S", "B", "E", "B", "M", "E"], ["B", "E", "S"]]
    pred = [["B", "E", "B", "E", "S", "B", "E"], ["B", "M", "E"]]
    scores = word_prf(gold, pred)
    assert scores["precision"] == pytest.approx(1 / 5)
    assert scores["recall"] == pytest.approx(1 / 6)
    assert scores["f1"] == pytest.approx(2 * (1 / 5) * (1 / 6) / (1 / 5 + 1 / 6))
    assert word_prf([["S"]], [["S"]]) == {"precision": 1.0, "recall": 1.0, "f1": 1.0}


# --- constrained decoding of a Linear head -----------------------------------------------------------
SCHEME_LABELS = {"bio": ["O", "B-X", "I-X", "B-Y", "I-Y"], "bios": ["O", "B-X", "I-X", "S-X", "B-Y", "I-Y"],
                 "bioes": ["O", "B-X", "I-X", "E-X", "S-X", "B-Y", "E-Y"], "bmes": CWS_BMES}


def well_formed(tags: list[str], scheme: str) -> bool:
    """The oracle: no continuation of nothing, and (BIOES, BMES) seqeval's strict IOBES mode, which drops every
    chunk not closed by E-/S-, finds the same chunks as the default mode."""
    if count_illegal_transitions(tags):
        return False
    if scheme in ("bio", "bios"):
        return True
    seq = to_seqeval_tags(tags, scheme)
    strict = {(e.tag, e.start, e.end) for e in Entities([seq], IOBES).entities[0]}
    return strict == {(type_, start, end + 1) for type_, start, end in get_entities(seq)}


def path_score(ids: list[int], constraints) -> float:
    start, end, transitions = constraints
    return float(start[ids[0]] + end[ids[-1]] + sum(transitions[i, j] for i, j in zip(ids, ids[1:])))


@pytest.mark.parametrize("scheme", sorted(SCHEME_LABELS))
def test_constraints_forbid_exactly_the_ill_formed_sequences(scheme):
    labels = SCHEME_LABELS[scheme]
    constraints = transition_constraints(labels, scheme)
    legal = 0
    for ids in np.ndindex(*[len(labels)] * 4):  # every sequence of 4 tags
        tags = [labels[i] for i in ids]
        score = path_score(list(ids), constraints)
        assert (score == 0) == well_formed(tags, scheme), (tags, score)
        legal += score == 0
    assert 0 < legal < len(labels) ** 4


@pytest.mark.parametrize("scheme", sorted(SCHEME_LABELS))
def test_constrained_decoding_is_legal_and_keeps_a_legal_argmax(scheme):
    labels = SCHEME_LABELS[scheme]
    constraints = transition_constraints(labels, scheme)
    rng = np.random.default_rng(0)
    changed = 0
    for _ in range(200):
        emissions = rng.normal(0, 3, size=(int(rng.integers(1, 12)), len(labels))).astype(np.float32)
        ids = decode_document(len(emissions), [(0, len(emissions))], [emissions], constraints=constraints)
        argmax = emissions.argmax(-1).tolist()
        assert well_formed([labels[i] for i in ids], scheme)
        if well_formed([labels[i] for i in argmax], scheme):
            assert ids == argmax  # the argmax is the most probable sequence; legal, it stays
        else:
            changed += 1
            assert path_score(ids, constraints) == 0
            logp = log_softmax(emissions)
            assert logp[np.arange(len(ids)), ids].sum() <= logp.max(-1).sum()
    assert changed > 20  # random scores are mostly ill-formed: the test saw the decoder at work


def test_constrained_decoding_repairs_a_split_entity():
    """I-PER after O (a Linear head's typical slip) becomes one entity, the most probable legal reading."""
    labels = PEOPLES_DAILY_BIO
    probs = {"B-PER": [0.8, 0.1, 0.1], "I-PER": [0.1, 0.4, 0.8], "O": [0.1, 0.5, 0.1]}
    emissions = np.log(np.array([[probs.get(label, [1e-3] * 3)[t] for label in labels] for t in range(3)]))
    argmax = [labels[i] for i in emissions.argmax(-1)]
    constrained = [labels[i] for i in decode_document(3, [(0, 3)], [emissions],
                                                      constraints=transition_constraints(labels, "bio"))]
    assert argmax == ["B-PER", "O", "I-PER"] and len(get_entities(argmax)) == 2
    assert constrained == ["B-PER", "I-PER", "I-PER"]
