"""Matches generated from layer counts, JSON loading, projection filling and validation."""
from __future__ import annotations

import json

import pytest

from bertorch.distill.matches import (
    PRESETS, Match, build_matches, describe_matches, uniform_layer_map, validate_matches)


@pytest.mark.parametrize("n_teacher,n_student,expected", [
    (12, 4, [(0, 0), (3, 1), (6, 2), (9, 3), (12, 4)]),
    (12, 6, [(0, 0), (2, 1), (4, 2), (6, 3), (8, 4), (10, 5), (12, 6)]),
    (4, 2, [(0, 0), (2, 1), (4, 2)]),
    (12, 3, [(0, 0), (4, 1), (8, 2), (12, 3)]),
    (12, 12, [(i, i) for i in range(13)]),
    (12, 5, [(0, 0), (2, 1), (5, 2), (7, 3), (10, 4), (12, 5)]),  # rounded half up, ends paired
])
def test_uniform_layer_map(n_teacher, n_student, expected):
    assert uniform_layer_map(n_teacher, n_student) == expected


def test_uniform_layer_map_rejects_deeper_student():
    with pytest.raises(ValueError, match="deeper"):
        uniform_layer_map(4, 6)


def test_presets_12_to_4():
    hidden = build_matches(["hidden_mse"], 12, 4, 768, 768)
    assert hidden == [Match(t, s, "hidden", "hidden_mse") for t, s in [(0, 0), (3, 1), (6, 2), (9, 3), (12, 4)]]
    att = build_matches(["attention_mse"], 12, 4, 768, 768)
    assert [(m.teacher_layer, m.student_layer) for m in att] == [(3, 1), (6, 2), (9, 3), (12, 4)]
    assert {(m.feature, m.loss) for m in att} == {("attention", "attention_mse")}
    assert build_matches(["tinybert"], 12, 4, 768, 768) == hidden + att
    assert build_matches(["embedding"], 12, 4, 768, 768) == [Match(0, 0, "embedding", "hidden_mse")]
    assert {m.loss for m in build_matches(["hidden_smmd"], 12, 4, 768, 768)} == {"smmd"}
    assert {m.loss for m in build_matches(["hidden_cos"], 12, 4, 768, 768)} == {"cos"}
    assert len(build_matches(["attention_ce"], 12, 4, 768, 768)) == 4


@pytest.mark.parametrize("n_teacher,n_student", [(12, 6), (4, 2), (12, 3)])
def test_attention_preset_is_layer_i_vs_i_times_k(n_teacher, n_student):
    k = n_teacher // n_student
    att = build_matches(["attention_mse"], n_teacher, n_student, 32, 32)
    assert [(m.teacher_layer, m.student_layer) for m in att] == [(i * k, i) for i in range(1, n_student + 1)]


def test_every_preset_builds_and_validates():
    for name in PRESETS:
        matches = build_matches([name], 12, 4, 768, 312)
        assert matches
        validate_matches(matches, 12, 4)


def test_proj_filled_only_when_widths_differ_and_loss_compares_vectors():
    same = build_matches(["hidden_mse", "attention_mse"], 12, 4, 768, 768)
    assert all(m.proj is None for m in same)
    diff = build_matches(["tinybert", "hidden_smmd", "embedding"], 12, 4, 768, 312)
    for m in diff:
        if m.feature == "attention" or m.loss == "smmd":
            assert m.proj is None
        else:
            assert m.proj == (312, 768)


def test_duplicates_dropped_in_order():
    matches = build_matches(["tinybert", "hidden_mse"], 4, 2, 32, 32)
    assert matches == build_matches(["tinybert"], 4, 2, 32, 32)


def test_json_file(tmp_path):
    path = tmp_path / "m.json"
    path.write_text(json.dumps([
        {"teacher_layer": 12, "student_layer": 4, "feature": "hidden", "loss": "cos", "weight": 0.5},
        {"layer_T": [8, 8], "layer_S": [2, 2], "feature": "hidden", "loss": "mmd"},  # TextBrewer spelling
        {"layer_T": 8, "layer_S": 2, "feature": "hidden", "loss": "hidden_mse", "proj": ["linear", 312, 768]},
    ]), encoding="utf-8")
    matches = build_matches(["embedding", str(path)], 12, 4, 768, 312)
    assert matches == [Match(0, 0, "embedding", "hidden_mse", proj=(312, 768)),
                       Match(12, 4, "hidden", "cos", 0.5, (312, 768)),
                       Match(8, 2, "hidden", "mmd"),
                       Match(8, 2, "hidden", "hidden_mse", proj=(312, 768))]


def test_json_bad_keys(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps([{"teacher": 1, "student_layer": 1, "feature": "hidden", "loss": "cos"}]))
    with pytest.raises(ValueError, match=r"bad.json\[0\]"):
        build_matches([str(path)], 12, 4, 32, 32)


def test_unknown_preset():
    with pytest.raises(ValueError, match="hidden_mse"):
        build_matches(["L4t_hidden_mse"], 12, 4, 32, 32)


@pytest.mark.parametrize("match,message", [
    (Match(13, 1, "hidden", "hidden_mse"), "teacher has no hidden layer 13"),
    (Match(12, 5, "hidden", "hidden_mse"), "student has no hidden layer 5"),
    (Match(0, 0, "attention", "attention_mse"), "teacher has no attention layer 0"),
    (Match(3, 1, "embedding", "hidden_mse"), "teacher has no embedding layer 3"),
    (Match(3, 1, "attention", "hidden_mse"), "does not apply"),
    (Match(3, 1, "hidden", "l1"), "unknown loss 'l1'"),
    (Match(3, 1, "logits", "hidden_mse"), "unknown feature"),
])
def test_validation_errors_name_the_match(match, message):
    with pytest.raises(ValueError, match=message) as err:
        validate_matches([Match(0, 0, "hidden", "hidden_mse"), match], 12, 4)
    assert "match #1" in str(err.value)


def test_json_out_of_range_is_rejected(tmp_path):
    path = tmp_path / "m.json"
    path.write_text(json.dumps([{"teacher_layer": 6, "student_layer": 3, "feature": "attention",
                                 "loss": "attention_mse"}]))
    with pytest.raises(ValueError, match="student has no attention layer 3"):
        build_matches([str(path)], 12, 2, 32, 32)


def test_describe_matches():
    text = describe_matches(build_matches(["tinybert"], 4, 2, 48, 32))
    lines = text.splitlines()
    assert lines[0].split() == ["#", "feature", "teacher", "student", "loss", "weight", "proj"]
    assert len(lines) == 2 + 3 + 2  # header, rule, 3 hidden + 2 attention
    assert "32->48" in text and "attention_mse" in text
