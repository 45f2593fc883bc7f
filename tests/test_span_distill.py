"""Distilling a GlobalPointer teacher: KD on its span scores (each span a yes/no decision per type), a student
with the teacher's span head, saved as a span model the Predictor opens."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

import run_distill
import run_ner
from bertorch.losses.distillation import combine_span_teachers, span_kd_loss
from bertorch.models.global_pointer import MASKED
from bertorch.predict import Predictor
from test_ner import ner_args, ner_files  # noqa: F401  (fixture)


def scores(seed: int, shape=(2, 3, 4, 4)) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * 3


def test_span_kd_is_a_binary_kl_per_span_summed_per_example_and_type():
    s, t, temperature = scores(0), scores(1), 2.0
    valid = torch.ones_like(s, dtype=torch.bool).triu()  # start <= end
    p, q = torch.sigmoid(t / temperature), torch.sigmoid(s / temperature)
    kl = p * (p.log() - q.log()) + (1 - p) * ((1 - p).log() - (1 - q).log())
    expected = (kl * valid).flatten(2).sum(-1).mean() * temperature ** 2
    assert torch.allclose(span_kd_loss(s, t, temperature, valid), expected, atol=1e-5)
    assert span_kd_loss(t, t, temperature, valid).abs() < 1e-6  # KL, not CE: 0 at the teacher


def test_masked_spans_count_for_nothing():
    s, t = scores(0), scores(1)
    valid = torch.ones_like(s, dtype=torch.bool).triu()
    moved = s.masked_fill(~valid, MASKED)  # what mask_spans writes below the diagonal
    assert torch.allclose(span_kd_loss(s, t, 1.0, valid), span_kd_loss(moved, t.masked_fill(~valid, MASKED), 1.0, valid))
    mse = span_kd_loss(s, t, 2.0, valid, "mse")
    assert torch.allclose(mse, (((s - t) / 2) ** 2)[valid].mean())


def test_gradient_pulls_the_student_towards_the_teacher():
    s, t = scores(0).requires_grad_(), scores(1)
    span_kd_loss(s, t, 1.0).backward()
    assert torch.all((s.grad * (s - t)).detach() >= 0)  # descending moves each score towards the teacher's


def test_several_span_teachers_average_their_probabilities():
    a, b, temperature = scores(1), scores(2), 3.0
    combined = combine_span_teachers([a, b], [1.0, 3.0], temperature, "ce")
    expected = 0.25 * torch.sigmoid(a / temperature) + 0.75 * torch.sigmoid(b / temperature)
    assert torch.allclose(torch.sigmoid(combined / temperature), expected, atol=1e-5)
    assert torch.allclose(combine_span_teachers([a, b], [1.0, 1.0], temperature, "mse"), (a + b) / 2)
    assert F.mse_loss(combine_span_teachers([a], [1.0], temperature, "ce"), a) == 0


@pytest.fixture(scope="module")
def span_teacher(tiny_bert_4layer, ner_files, tmp_path_factory):  # noqa: F811
    out = tmp_path_factory.mktemp("span_teacher")
    run_ner.main(ner_args(tiny_bert_4layer, ner_files, out, "--head", "global_pointer", "--gp_head_size", "16",
                          "--max_steps", "40"))
    return str(out)


def span_distil(teacher_dir, files, out, *extra):
    return run_distill.main(ner_args(None, files, out, "--task", "sequence_labeling", "--teacher_model_dir",
                                     teacher_dir, "--max_steps", "12", *extra)[2:])


def test_a_global_pointer_teacher_gives_a_span_student_trained_on_its_scores(span_teacher, ner_files, tmp_path):  # noqa: F811
    out = tmp_path / "student"
    results = span_distil(span_teacher, ner_files, out, "--student_layers", "2", "--matches", "hidden_mse",
                          "--logging_steps", "3")
    assert results["teacher_f1"] is not None and results["student_f1"] is not None
    info = json.loads((out / "bertorch.json").read_text())
    assert (info["head"], info["gp_head_size"]) == ("global_pointer", 16)
    rows = [json.loads(line) for line in open(out / "metrics.jsonl", encoding="utf-8")]
    kd = [r["kd_loss"] for r in rows if "kd_loss" in r]
    assert kd and all(v >= 0 for v in kd) and kd[-1] < kd[0]  # KL to the teacher's span scores shrinks
    def spans(model_dir):
        found = Predictor.from_pretrained(model_dir).predict(["张三去北京"])[0]["entities"]
        return {(e["type"], e["start"], e["end"]) for e in found}

    assert spans(str(out)) == spans(span_teacher) == {("PER", 0, 2), ("LOC", 3, 5)}


@pytest.mark.parametrize("flag, message", [(("--use_crf",), "does not apply"),
                                           (("--hard_label_loss", "crf"), "--hard_label_loss crf"),
                                           (("--teacher_cached",), "drop --teacher_cached")])
def test_flags_that_a_span_student_cannot_follow_are_refused(span_teacher, ner_files, tmp_path, flag,
                                                             message):  # noqa: F811
    with pytest.raises(SystemExit, match=message):
        span_distil(span_teacher, ner_files, tmp_path / "o", "--student_layers", "1", *flag)
