"""Multi-task distillation: a classifier and a CRF tagger distilled into one student encoder with a head per
task, through run_distill.main; each saved task directory serves its task alone; bad task specs."""
from __future__ import annotations

import json
import math
import re

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModel, AutoModelForSequenceClassification, AutoModelForTokenClassification, AutoTokenizer

import run_classifier
import run_distill
import run_ner
from bertorch.data.tagged import encode_documents
from bertorch.distill import report
from bertorch.distill.distiller import DISTILL_STATE_NAME
from bertorch.model_dir import MULTITASK_FILE as MANIFEST_FILE
from bertorch.models.random_init import make_random_bert
from bertorch.models.tagger import decode_document
from bertorch.predict import Predictor, load_predictors
from bertorch.tasks.multitask import parse_task_specs
from test_ner import ner_args, ner_files  # noqa: F401  (fixture)

BASE = ["--batch_size", "8", "--max_seq_length", "24", "--logging_steps", "2", "--save_steps", "0", "--seed", "3",
        "--learning_rate", "3e-3"]
COMMON = BASE + ["--doc_stride", "6"]
TEXTS = ["房间干净，服务周到", "屏幕有坏点，很失望", "张三去北京", "李四在上海公司"]


@pytest.fixture(scope="module")
def senti_teacher(tiny_bert_4layer, sentiment_files, tmp_path_factory):
    out = tmp_path_factory.mktemp("mt_senti_teacher")
    run_classifier.main(["--pretrained_model_name_or_path", tiny_bert_4layer, "--train_data_file",
                         sentiment_files["train"], "--dev_data_file", sentiment_files["dev"], "--label_file",
                         sentiment_files["labels"], "--saved_dir", str(out), "--epochs", "6", *BASE])
    return str(out)


@pytest.fixture(scope="module")
def ner_teacher(tiny_bert_4layer, ner_files, tmp_path_factory):  # noqa: F811
    out = tmp_path_factory.mktemp("mt_ner_teacher")
    run_ner.main(ner_args(tiny_bert_4layer, ner_files, out, "--use_crf", "--max_steps", "24"))
    return str(out)


@pytest.fixture(scope="module")
def spec_args(senti_teacher, ner_teacher, sentiment_files, ner_files):  # noqa: F811
    return ["--task_spec", "name=senti", f"teacher={senti_teacher}", f"train={sentiment_files['train']}",
            f"dev={sentiment_files['dev']}",
            "--task_spec", "name=resume", f"teacher={ner_teacher}", f"train={ner_files['train']}",
            f"dev={ner_files['dev']}"]


@pytest.fixture
def captured(monkeypatch):
    """The MultiTaskDistillTask of the last run (the report receives it)."""
    seen, build = {}, report.build_multitask_report
    monkeypatch.setattr(report, "build_multitask_report", lambda task: build(seen.update(task=task) or task))
    return seen


def distil(out, *extra):
    return run_distill.main(["--task", "multitask", "--saved_dir", str(out), *COMMON, *extra])


def in_memory_tags(task, texts):
    """Tags of the in-memory multi-task student's NER head (CRF decoded), for single-window texts."""
    part = task.parts["resume"]
    tagger = task.model.tasks["resume"].student.eval()
    features = encode_documents(part.tokenizer, [list(t) for t in texts], 24, 6)
    with torch.no_grad():
        emissions = tagger(**part.inner.collate(features)).logits.numpy()
    return [[part.inner.labels[i] for i in decode_document(len(t), [(0, len(t))], [emissions[row, :len(t)]],
                                                          tagger.crf_arrays())] for row, t in enumerate(texts)]


# -- end to end -------------------------------------------------------------------------------------------
def test_two_tasks_one_encoder_end_to_end(spec_args, tmp_path, captured):
    out = tmp_path / "student"
    results = distil(out, "--student_layers", "2", *spec_args, "--epochs", "2", "--save_best_model",
                     "--eval_steps", "13")
    task = captured["task"]
    # Batches hold one task each, every task's data once an epoch.
    senti, resume = (len(task.parts[n].train_features) for n in ("senti", "resume"))
    sampler = task.train_sampler()
    assert len(sampler) == math.ceil(senti / 8) + math.ceil(resume / 8)
    assert all(len({task.train_features[i]["task"] for i in b}) == 1 for b in sampler.global_batches())
    assert results["global_step"] == 2 * len(sampler)
    # Per-task metrics, their mean picks the best model; the report compares each task with its teacher.
    assert results["final_mean_score"] == pytest.approx((results["final_senti_accuracy"] +
                                                         results["final_resume_f1"]) / 2)
    assert results["best_mean_score"] >= results["final_mean_score"]
    assert results["senti_teacher_accuracy"] >= 0.9 and results["senti_student_accuracy"] >= 0.9
    assert results["resume_student_f1"] >= 0.5 and results["resume_teacher_f1"] >= 0.5
    assert results["student_parameters"] < results["teacher_parameters"]
    assert {r["task"] for r in results["distill_models"]} == {"senti", "resume"}
    # One encoder in memory, counted once by the optimiser.
    students = task.model.students()
    assert students["senti"].backbone.bert.encoder is students["resume"].backbone.bert.encoder
    assert students["senti"].backbone.bert.embeddings is students["resume"].backbone.bert.embeddings
    ids = torch.tensor([[2, 10, 11, 3]])
    for name in ("senti", "resume", "senti"):  # shared layers record their outputs once, whoever runs them
        hidden = students[name].backbone(input_ids=ids, output_hidden_states=True).hidden_states
        assert len(hidden) == 3 and not torch.equal(hidden[1], hidden[2])
    # Layout: the encoder at the top, a model directory per task, no training-only state.
    manifest = json.load(open(out / MANIFEST_FILE))
    assert {n: t["task"] for n, t in manifest["tasks"].items()} == {"senti": "classification", "resume": "ner"}
    for d in (out, out / "best"):
        for sub in ("", "senti", "resume"):
            assert not (d / sub / DISTILL_STATE_NAME).exists()
        assert (d / "senti" / "bertorch.json").exists() and (d / "resume" / "head.safetensors").exists()
    encoder, info = AutoModel.from_pretrained(str(out), output_loading_info=True)
    assert not info["missing_keys"] and encoder.config.num_hidden_layers == 2
    classifier, info = AutoModelForSequenceClassification.from_pretrained(str(out / "senti"), output_loading_info=True)
    assert not info["missing_keys"] and classifier.config.id2label == {0: "negative", 1: "positive"}
    tagger, info = AutoModelForTokenClassification.from_pretrained(str(out / "resume"), output_loading_info=True)
    assert not info["missing_keys"]
    key = "encoder.layer.1.attention.self.query.weight"
    for model in (classifier.bert, tagger.bert):
        torch.testing.assert_close(model.state_dict()[key], encoder.state_dict()[key])
    # Each saved task predicts what the in-memory student does.
    tok = AutoTokenizer.from_pretrained(str(out / "senti"))
    with torch.no_grad():
        logits = students["senti"].eval()(**tok(TEXTS, padding=True, return_tensors="pt")).logits
    labels = [classifier.config.id2label[i] for i in logits.argmax(-1).tolist()]
    predictors = load_predictors(str(out))
    assert Predictor.from_pretrained(str(out / "senti")).predict(TEXTS) == labels == predictors["senti"].predict(TEXTS)
    tags = [r["tags"] for r in Predictor.from_pretrained(str(out / "resume")).predict(TEXTS)]
    assert tags == in_memory_tags(task, TEXTS) == [r["tags"] for r in predictors["resume"].predict(TEXTS)]
    with pytest.raises(ValueError, match="multi-task student.*tasks: senti, resume"):
        Predictor.from_pretrained(str(out))  # the top level is the shared encoder, not a task's model


def test_separate_student_with_matches_checkpoints_and_resumes(spec_args, tiny_bert, tmp_path):
    common = ["--student_model", tiny_bert, "--matches", "hidden_mse", *spec_args, "--max_steps", "4"]
    full = tmp_path / "full"
    distil(full, *common, "--save_steps", "2")
    for name in ("senti", "resume"):  # hidden 32 -> 48: each task has its own projections
        state = load_file(str(full / "checkpoint-2" / name / DISTILL_STATE_NAME))
        assert state["projections.0.weight"].shape == (48, 32) and int(state["clock.micro_batches"][0]) == 2
    resumed = tmp_path / "resumed"
    distil(resumed, *common, "--resume_from_checkpoint", str(full / "checkpoint-2"))
    for name in ("senti", "resume"):
        a, b = load_file(str(full / name / "model.safetensors")), load_file(str(resumed / name / "model.safetensors"))
        for key in a:
            torch.testing.assert_close(a[key], b[key]), key


# -- task specs ------------------------------------------------------------------------------------------
def test_task_specs_from_words_and_from_json(tmp_path):
    words = [["name=a", "teacher=t1", "teacher=t2", "train=a.tsv", "dev=b.tsv"], ["name=b", "teacher=t3", "train=c"]]
    path = tmp_path / "tasks.json"
    path.write_text(json.dumps([{"name": "a", "teacher": ["t1", "t2"], "train": "a.tsv", "dev": "b.tsv"},
                                {"name": "b", "teacher_model_dir": "t3", "train_data_file": "c"}]))
    with pytest.raises(ValueError, match=r"tasks \['b'\] have no dev= but \['a'\] do"):
        parse_task_specs(words)
    words[1].append("dev=d")
    path.write_text(path.read_text().replace('"c"}', '"c", "dev": "d"}'))
    assert parse_task_specs(words) == parse_task_specs([[str(path)]])
    assert parse_task_specs(words)[0].teachers == ["t1", "t2"]


@pytest.mark.parametrize("words, message", [
    (["name=a", "teacher=t"], "task 'a' has no train="),
    (["name=a", "train=x"], "task 'a' has no teacher="),
    (["name=a", "teacher=t", "train=x", "model=m"], r"unknown key\(s\) \['model'\]"),
    (["name=best", "teacher=t", "train=x"], "not best or runs"),
    (["name=a", "teacher", "train=x"], "'teacher' is not KEY=VALUE"),
])
def test_bad_task_specs(words, message):
    with pytest.raises(ValueError, match=message):
        parse_task_specs([words])
    with pytest.raises(ValueError, match="names must differ"):
        parse_task_specs([["name=a", "teacher=t", "train=x"]] * 2)


# -- bad input through main -------------------------------------------------------------------------------
def test_a_task_with_empty_training_data_is_named(senti_teacher, ner_teacher, ner_files, tmp_path):  # noqa: F811
    empty = tmp_path / "empty.tsv"
    empty.write_text("\n")
    with pytest.raises(SystemExit, match=f"task 'senti': {empty}: no examples in file"):
        distil(tmp_path / "o", "--student_layers", "2", "--max_steps", "1",
               "--task_spec", "name=senti", f"teacher={senti_teacher}", f"train={empty}",
               "--task_spec", "name=resume", f"teacher={ner_teacher}", f"train={ner_files['train']}")


def test_shared_data_flags_are_refused(spec_args, sentiment_files, tmp_path):
    with pytest.raises(SystemExit, match="drop --train_data_file"):
        distil(tmp_path / "o", "--student_layers", "2", *spec_args, "--train_data_file", sentiment_files["train"])


def test_ner_teacher_with_another_vocabulary_is_refused(senti_teacher, sentiment_files, ner_files,  # noqa: F811
                                                       tmp_path):
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + list("张三李四去北京上海")
    other = tmp_path / "other_ner"
    run_ner.main(ner_args(make_random_bert(str(tmp_path / "other"), vocab, hidden_size=48, num_layers=2, num_heads=2),
                          ner_files, other, "--max_steps", "1"))
    message = (rf"task 'resume': the student's vocabulary differs from the teacher's \(student: .*"
               rf"{re.escape(senti_teacher)}.*; teacher {re.escape(str(other))}: 14 tokens\): sequence labelling "
               rf"needs aligned tokens")
    with pytest.raises(SystemExit, match=message):
        distil(tmp_path / "o", "--student_layers", "2", "--max_steps", "1",
               "--task_spec", "name=senti", f"teacher={senti_teacher}", f"train={sentiment_files['train']}",
               "--task_spec", "name=resume", f"teacher={other}", f"train={ner_files['train']}")


def test_help_documents_the_task_spec(capsys):
    with pytest.raises(SystemExit):
        run_distill.main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--task_spec KEY=VALUE" in text and "name=NAME teacher=DIR train=FILE [dev=FILE]" in text
