"""Distillation: teacher -> student end to end through run_distill.main, the wrapper's maths and guards."""
from __future__ import annotations

import json
import os

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoModelForTokenClassification, AutoTokenizer

import run_classifier
import run_distill
import run_ner
from bertorch.distill import report
from bertorch.distill.distiller import (DISTILL_STATE_NAME, Distiller, KDConfig, StepClock, combine_teachers,
                                       load_teacher)
from bertorch.distill.student import copy_teacher_layers, narrow_width, select_layers
from bertorch.models.base import ModelError
from bertorch.models.random_init import make_random_bert
from bertorch.predict import Predictor
from bertorch.tasks.distill import DistillTask
from test_ner import LABELS as NER_LABELS
from test_ner import ner_args, ner_files  # noqa: F401  (fixture)

COMMON = ["--batch_size", "8", "--logging_steps", "2", "--save_steps", "0", "--seed", "3"]


def data_args(files, out, *extra):
    return ["--train_data_file", files["train"], "--dev_data_file", files["dev"], "--label_file", files["labels"],
            "--saved_dir", str(out), *COMMON, *extra]


@pytest.fixture(scope="module")
def teacher(tiny_bert_4layer, sentiment_files, tmp_path_factory):
    """A 4-layer, hidden-48 classifier that fits the toy sentiment data."""
    out = tmp_path_factory.mktemp("teacher")
    run_classifier.main(data_args(sentiment_files, out, "--pretrained_model_name_or_path", tiny_bert_4layer,
                                  "--epochs", "6", "--learning_rate", "3e-3"))
    return str(out)


@pytest.fixture
def captured(monkeypatch):
    """The DistillTask of the last run (the report receives it)."""
    seen = {}
    build = report.build_report

    def keep(task):
        seen["task"] = task
        return build(task)
    monkeypatch.setattr(report, "build_report", keep)
    return seen


def distil(teacher_dir, files, out, *extra):
    return run_distill.main(data_args(files, out, "--teacher_model_dir", teacher_dir, "--learning_rate", "3e-3",
                                      *extra))


def dev_texts(files):
    return [line.split("\t")[0] for line in open(files["dev"], encoding="utf-8")]


# -- end to end -------------------------------------------------------------------------------------------
def test_student_layers_from_teacher_end_to_end(teacher, sentiment_files, tmp_path, captured):
    aux = tmp_path / "aux.txt"
    aux.write_text("\n".join(dev_texts(sentiment_files)[:10]) + "\n", encoding="utf-8")
    out = tmp_path / "student"
    before = load_file(os.path.join(teacher, "model.safetensors"))
    results = distil(teacher, sentiment_files, out, "--student_layers", "2", "--epochs", "3", "--matches", "hidden_mse",
                     "--aux_data_file", str(aux))
    # 64 labelled examples -> 8 batches, 10 aux texts -> 2 batches of their own, per epoch
    assert results["global_step"] == 3 * 10
    assert results["student_accuracy"] >= 0.9 and results["teacher_accuracy"] >= 0.9
    assert results["student_parameters"] < results["teacher_parameters"] and results["speedup"] > 0
    assert json.load(open(out / "all_results.json"))["student_accuracy"] == results["student_accuracy"]
    assert (out / report.REPORT_FILE).exists() and not (out / DISTILL_STATE_NAME).exists()
    model = AutoModelForSequenceClassification.from_pretrained(str(out))
    assert model.config.num_hidden_layers == 2 and model.config.id2label == {0: "negative", 1: "positive"}
    texts = dev_texts(sentiment_files)
    tok = AutoTokenizer.from_pretrained(str(out))
    with torch.no_grad():
        logits = model(**tok(texts, padding=True, return_tensors="pt")).logits
    expected = [model.config.id2label[i] for i in logits.argmax(-1).tolist()]
    assert Predictor.from_pretrained(str(out)).predict(texts) == expected
    # The teacher was never trained: not a parameter of the wrapper, no gradient, weights as on disk.
    task = captured["task"]
    [frozen] = task.teachers
    assert all(p.grad is None and not p.requires_grad for p in frozen.parameters())
    assert not any(n.startswith("teacher") for n, _ in task.model.named_parameters())
    now = frozen.backbone.state_dict()
    assert len(set(now) & set(before)) == len(before)
    for key, value in before.items():
        assert torch.equal(now[key].cpu(), value), key


def test_separate_student_with_tinybert_matches_projections_and_resume(teacher, tiny_bert, sentiment_files, tmp_path):
    common = ["--student_model", tiny_bert, "--matches", "tinybert", "embedding", "--max_steps", "4",
              "--temperature_schedule", "linear_decay", "--kd_loss_weight_schedule", "linear_decay",
              "--gradient_accumulation_steps", "3"]
    full = tmp_path / "full"
    distil(teacher, sentiment_files, full, *common, "--save_steps", "2")
    state = load_file(str(full / "checkpoint-2" / DISTILL_STATE_NAME))
    assert state["projections.0.weight"].shape == (48, 32)  # student hidden 32 -> teacher 48
    assert int(state["clock.micro_batches"][0]) == 6
    assert not (full / DISTILL_STATE_NAME).exists()
    resumed = tmp_path / "resumed"
    distil(teacher, sentiment_files, resumed, *common, "--resume_from_checkpoint", str(full / "checkpoint-2"))
    a, b = load_file(str(full / "model.safetensors")), load_file(str(resumed / "model.safetensors"))
    for key in a:
        torch.testing.assert_close(a[key], b[key]), key
    assert Predictor.from_pretrained(str(resumed)).predict(["房间干净"])[0] in ("negative", "positive")


def test_teacher_cached_gives_the_same_first_step_loss(teacher, sentiment_files, tmp_path):
    def first_loss(out, *extra):  # two teachers (the same one twice, weighted) exercise the (B, K, C) cache
        distil(teacher, sentiment_files, out, "--student_layers", "2", "--max_steps", "1", "--logging_steps", "1",
               "--teacher_model_dir", teacher, "--teacher_weights", "1", "2", *extra)
        rows = [json.loads(line) for line in open(out / "metrics.jsonl", encoding="utf-8")]
        return next(r for r in rows if r["kind"] == "train")
    plain, cached = first_loss(tmp_path / "a"), first_loss(tmp_path / "b", "--teacher_cached")
    assert cached["loss"] == pytest.approx(plain["loss"], rel=1e-5)
    assert cached["kd_loss"] == pytest.approx(plain["kd_loss"], rel=1e-5)


def test_different_tokenizers_only_with_the_flag(teacher, sentiment_files, tmp_path, tiny_texts):
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + sorted({c for t in tiny_texts for c in t})
    other = make_random_bert(str(tmp_path / "other"), vocab, hidden_size=32, num_layers=1, num_heads=2)
    with pytest.raises(SystemExit, match="allow_different_tokenizers"):
        distil(teacher, sentiment_files, tmp_path / "x", "--student_model", other, "--max_steps", "1")
    results = distil(teacher, sentiment_files, tmp_path / "y", "--student_model", other, "--max_steps", "2",
                     "--allow_different_tokenizers", "--teacher_cached")
    assert results["teacher_accuracy"] >= 0.9



def test_a_teacher_with_its_own_tokenizer_gets_padded_batches_that_change_nothing(teacher, sentiment_files, tmp_path,
                                                                                  tiny_texts):
    """--pad_to_multiple_of pads the teacher's own inputs as well (oneDNN sees its shapes too), and the student
    trains the same weights as with batches padded to their longest."""
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + sorted({c for t in tiny_texts for c in t})[::-1]
    other = make_random_bert(str(tmp_path / "other"), vocab, hidden_size=32, num_layers=1, num_heads=2,
                             hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    widths = []
    real = DistillTask.collate
    def spy(self, features):
        batch = real(self, features)
        if "teacher_input_ids" in batch:  # training batches (evaluation scores the student alone)
            widths.append(batch["teacher_input_ids"].shape[1])
        return batch
    weights = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(DistillTask, "collate", spy)
        for multiple in ("1", "32"):
            widths.clear()
            distil(teacher, sentiment_files, tmp_path / multiple, "--student_model", other, "--max_steps", "3",
                   "--allow_different_tokenizers", "--pad_to_multiple_of", multiple)
            weights[multiple] = load_file(os.path.join(tmp_path / multiple, "model.safetensors"))
            assert widths and all(w % 32 == 0 for w in widths) == (multiple == "32")
    for key, value in weights["1"].items():
        torch.testing.assert_close(weights["32"][key], value, atol=1e-5, rtol=1e-4)

# -- the wrapper ------------------------------------------------------------------------------------------
def test_multi_teacher_soft_labels_are_the_weighted_mean(teacher, tiny_bert, sentiment_files):
    t1, _ = load_teacher(teacher)
    t2, _ = load_teacher(teacher)
    with torch.no_grad():
        for p in t2.parameters():
            p.add_(0.05 * torch.randn_like(p))
    student, _ = load_teacher(teacher)
    student.requires_grad_(True)
    T, weights = 2.0, (1.0, 3.0)
    model = Distiller(student, [t1, t2], config=KDConfig(temperature=T, teacher_weights=weights, hard_label_weight=0,
                                                          kd_loss_weight=1)).train()
    tok = AutoTokenizer.from_pretrained(teacher)
    batch = dict(tok(dev_texts(sentiment_files)[:5], padding=True, return_tensors="pt"))
    out = model(**batch)
    with torch.no_grad():
        probs = [F.softmax(t(**batch).logits / T, -1) for t in (t1, t2)]
    mean = 0.25 * probs[0] + 0.75 * probs[1]
    expected = -(mean * F.log_softmax(out.logits / T, -1)).sum(-1).mean() * T ** 2
    torch.testing.assert_close(out.loss, expected)
    logits = [torch.randn(4, 3), torch.randn(4, 3)]
    torch.testing.assert_close(F.softmax(combine_teachers(logits, [1, 1], 3.0, "ce") / 3.0, -1),
                               (F.softmax(logits[0] / 3.0, -1) + F.softmax(logits[1] / 3.0, -1)) / 2)
    out.loss.backward()
    assert all(p.grad is None for t in (t1, t2) for p in t.parameters())
    assert sum(1 for _ in model.parameters()) == sum(1 for _ in student.parameters())


def test_step_clock_follows_accumulation_windows_and_ignores_repeated_batches():
    clock = StepClock(batches_per_epoch=8, accumulation=3, total_steps=6)  # windows 3, 3, 2 per epoch
    keys = [object() for _ in range(16)]
    assert [clock.step(k) for k in keys] == [0, 0, 0, 1, 1, 1, 2, 2, 3, 3, 3, 4, 4, 4, 5, 5]
    assert clock.step(keys[-1]) == 5 and clock.micro_batches == 16  # an adversarial re-forward


def test_layer_selection_and_copy(teacher, tmp_path):
    assert select_layers(12, 4) == [2, 5, 8, 11] and select_layers(12, 4, "first") == [0, 1, 2, 3]
    assert select_layers(4, 2) == [1, 3]
    dest = tmp_path / "s"
    copy_teacher_layers(teacher, 2, "uniform", str(dest))
    a, b = load_file(os.path.join(teacher, "model.safetensors")), load_file(str(dest / "model.safetensors"))
    key = "bert.encoder.layer.{}.attention.self.query.weight"
    assert torch.equal(b[key.format(0)], a[key.format(1)]) and torch.equal(b[key.format(1)], a[key.format(3)])
    assert key.format(2) not in b and torch.equal(b["classifier.weight"], a["classifier.weight"])
    assert AutoConfig.from_pretrained(str(dest)).num_hidden_layers == 2


def test_narrowing_keeps_the_largest_dimensions_heads_and_neurons():
    config = AutoConfig.for_model("bert", vocab_size=11, hidden_size=8, num_attention_heads=4, intermediate_size=12,
                                  num_hidden_layers=1, num_labels=2)
    state = AutoModelForSequenceClassification.from_config(config).state_dict()
    state = {k: v.clone() for k, v in state.items() if "position_ids" not in k}
    p = "bert.encoder.layer.0."
    state["bert.embeddings.LayerNorm.weight"][[1, 2, 6, 7]] = 5.0  # the residual dims to keep
    state[p + "attention.self.value.weight"][6:8] *= 10  # head 3 (dims 6, 7 at head size 2) is the largest
    state[p + "attention.output.dense.weight"][:, 6:8] *= 10
    state[p + "intermediate.dense.weight"][[4, 9]] *= 10  # the largest FFN neurons (6 of 12 are kept)
    narrowed = narrow_width(state, config, 4)
    hidden = torch.tensor([1, 2, 6, 7])
    assert (config.hidden_size, config.num_attention_heads, config.intermediate_size) == (4, 2, 6)
    torch.testing.assert_close(narrowed["bert.embeddings.word_embeddings.weight"],
                               state["bert.embeddings.word_embeddings.weight"][:, hidden])
    assert {6, 7} <= set(kept_rows(narrowed, state, p + "attention.self.value.weight", hidden))  # whole head 3
    assert {4, 9} <= set(kept_rows(narrowed, state, p + "intermediate.dense.weight", hidden))
    missing, unexpected = AutoModelForSequenceClassification.from_config(config).load_state_dict(narrowed, strict=False)
    assert not unexpected and set(missing) <= {"bert.embeddings.position_ids"}  # loads: every shape agrees
    with pytest.raises(ModelError, match="multiple of its head size 2"):
        narrow_width(state, AutoConfig.for_model("bert", hidden_size=8, num_attention_heads=4), 5)


def kept_rows(narrowed, state, key, hidden):
    """The teacher's rows of weight `key` (cut to the kept hidden dims) that the narrowed weight holds."""
    rows = state[key][:, hidden]
    return [r for r in range(rows.shape[0]) if any(torch.equal(row, rows[r]) for row in narrowed[key])]


def test_narrowed_student_trains_end_to_end(teacher, sentiment_files, tmp_path):
    results = distil(teacher, sentiment_files, tmp_path / "o", "--student_layers", "2", "--student_hidden_size", "24",
                     "--max_steps", "2", "--matches", "hidden_mse")
    config = AutoConfig.from_pretrained(str(tmp_path / "o"))
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads) == (24, 2, 1)
    assert results["student_parameters"] < results["teacher_parameters"] / 2
    assert Predictor.from_pretrained(str(tmp_path / "o")).predict(dev_texts(sentiment_files)[:3])


# -- bad input --------------------------------------------------------------------------------------------
def test_label_file_must_equal_the_teachers_labels(teacher, sentiment_files, tmp_path):
    files = {**sentiment_files, "labels": str(tmp_path / "labels.txt")}
    (tmp_path / "labels.txt").write_text("positive\nnegative\n", encoding="utf-8")
    with pytest.raises(SystemExit, match="differ from the id2label of teacher"):
        distil(teacher, files, tmp_path / "o", "--student_layers", "2", "--max_steps", "1")


@pytest.mark.parametrize("match, message", [
    ({"teacher_layer": 9, "student_layer": 1, "feature": "hidden", "loss": "hidden_mse"},
     "teacher has no hidden layer 9"),
    ({"layer_T": 4, "layer_S": 2, "feature": "hidden", "loss": "hidden_mse", "proj": ["linear", 64, 48]},
     "declares a projection 64->48 but the student's hidden size is 32"),
])
def test_bad_json_matches(match, message, teacher, tiny_bert, sentiment_files, tmp_path):
    path = tmp_path / "matches.json"
    path.write_text(json.dumps([match]))
    with pytest.raises(SystemExit, match=message):
        distil(teacher, sentiment_files, tmp_path / "o", "--student_model", tiny_bert, "--matches", str(path),
               "--max_steps", "1")


def test_teacher_cached_with_matches_is_refused(teacher, sentiment_files, tmp_path):
    with pytest.raises(SystemExit, match="teacher_cached"):
        distil(teacher, sentiment_files, tmp_path / "o", "--student_layers", "2", "--matches", "hidden_mse",
               "--teacher_cached", "--max_steps", "1")


# -- sequence labelling with a CRF ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def ner_teacher(tiny_bert_4layer, ner_files, tmp_path_factory):  # noqa: F811
    out = tmp_path_factory.mktemp("ner_teacher")
    run_ner.main(ner_args(tiny_bert_4layer, ner_files, out, "--use_crf", "--max_steps", "40"))
    return str(out)


def ner_distil(teacher_dir, files, out, *extra, hard_label_loss=("--hard_label_loss", "crf")):
    return run_distill.main(ner_args(None, files, out, "--task", "sequence_labeling", "--teacher_model_dir",
                                     teacher_dir, *hard_label_loss, "--max_steps", "12", *extra)[2:])


def test_crf_sequence_labelling_end_to_end(ner_teacher, ner_files, tmp_path):  # noqa: F811
    aux = tmp_path / "aux.txt"
    aux.write_text("张三去上海\n李四在北京公司\n", encoding="utf-8")
    out = tmp_path / "ner_student"
    results = ner_distil(ner_teacher, ner_files, out, "--student_layers", "2", "--matches", "hidden_mse",
                         "attention_mse", "--aux_data_file", str(aux))
    assert results["teacher_f1"] is not None and results["student_f1"] is not None
    assert "crf.crf.transitions" in load_file(str(out / "head.safetensors"))
    model = AutoModelForTokenClassification.from_pretrained(str(out))
    assert model.config.num_hidden_layers == 2
    assert [model.config.id2label[i] for i in range(len(NER_LABELS))] == NER_LABELS
    tags = Predictor.from_pretrained(str(out)).predict(["张三去北京"])
    assert len(tags[0]["tags"]) == 5


@pytest.mark.parametrize("flags, crf", [((), True), (("--hard_label_loss", "cross_entropy"), False)])
def test_a_crf_teacher_gives_a_crf_student_unless_another_loss_is_named(ner_teacher, ner_files, tmp_path, flags,
                                                                        crf):  # noqa: F811
    out = tmp_path / "student"
    ner_distil(ner_teacher, ner_files, out, "--student_layers", "1", "--max_steps", "2", hard_label_loss=flags)
    info = json.loads((out / "bertorch.json").read_text())
    assert info["use_crf"] is crf and info["decoding"] == ("crf" if crf else "constrained")


def test_decoding_flag_is_refused_for_a_crf_student(ner_teacher, ner_files, tmp_path):  # noqa: F811
    with pytest.raises(SystemExit, match="--decoding argmax is for a Linear student; this one gets a CRF"):
        ner_distil(ner_teacher, ner_files, tmp_path / "o", "--student_layers", "1", "--decoding", "argmax",
                   hard_label_loss=())


def test_sequence_labelling_refuses_a_student_with_another_vocabulary(ner_teacher, ner_files, tmp_path):  # noqa: F811
    other = make_random_bert(str(tmp_path / "other"), ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + list("张三李四"),
                             hidden_size=32, num_layers=1, num_heads=2)
    with pytest.raises(SystemExit, match="vocabulary differs .* sequence labelling needs aligned tokens"):
        ner_distil(ner_teacher, ner_files, tmp_path / "o", "--student_model", other)
