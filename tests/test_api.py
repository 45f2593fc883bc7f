"""bertorch.train: Python lists in, results and a ready Predictor out, through the scripts' own run (the same
loop, flags and checks: a run from lists equals the run_classifier.py run on the same data written as files)."""
import json
import os

import pytest

import bertorch
import run_classifier
from bertorch import api
from bertorch.errors import UsageError
from bertorch.tasks.classification import ClassificationTask
from conftest import NEGATIVE, POSITIVE

ROWS = [(t, "positive") for t in POSITIVE] + [(t, "negative") for t in NEGATIVE]
BUDGET = dict(batch_size=8, learning_rate=3e-3, logging_steps=2, save_steps=0, seed=7)


def comparable(results: dict) -> dict:
    return {k: v for k, v in results.items() if k != "train_seconds"}


def test_classification_from_lists_is_the_script_run_on_files(tiny_bert, sentiment_files, tmp_path):
    result = bertorch.train("classification", model=tiny_bert, train=ROWS * 4, dev=ROWS,
                            output_dir=str(tmp_path / "api"), epochs=8, eval_steps=8, save_best_model=True, **BUDGET)
    script = run_classifier.main([
        "--pretrained_model_name_or_path", tiny_bert, "--train_data_file", sentiment_files["train"],
        "--dev_data_file", sentiment_files["dev"], "--label_file", sentiment_files["labels"],
        "--saved_dir", str(tmp_path / "cli"), "--epochs", "8", "--eval_steps", "8", "--save_best_model",
        "--batch_size", "8", "--learning_rate", "3e-3", "--logging_steps", "2", "--save_steps", "0", "--seed", "7"])
    assert comparable(result.results) == comparable(script)  # same data, same flags, same loop
    assert result.results["best_accuracy"] >= 0.9
    assert result.model_dir == str(tmp_path / "api" / "best")
    texts = [t for t, _ in ROWS]
    predicted = result.predictor.predict(texts)
    assert set(predicted) <= {"negative", "positive"}
    accuracy = sum(p == gold for p, (_, gold) in zip(predicted, ROWS)) / len(ROWS)
    assert accuracy == pytest.approx(result.results["best_accuracy"])  # the predictor is the best model
    saved = json.load(open(tmp_path / "api" / "training_args.json", encoding="utf-8"))
    assert saved["epochs"] == 8 and saved["is_text_pair"] is False


def test_text_pairs_and_non_string_labels(tiny_bert, tmp_path):
    pairs = [(a, b, int(a[0] == b[0])) for a in POSITIVE[:4] for b in POSITIVE[:4] + NEGATIVE[:4]]
    result = bertorch.train("classification", model=tiny_bert, train=pairs, dev=pairs[:8],
                            output_dir=str(tmp_path / "out"), max_steps=2, **BUDGET)
    assert json.load(open(tmp_path / "out" / "training_args.json", encoding="utf-8"))["is_text_pair"] is True
    assert result.model_dir == str(tmp_path / "out") and "final_accuracy" in result.results
    assert set(result.predictor.predict([(POSITIVE[0], NEGATIVE[0])])) <= {"0", "1"}


def test_ner_from_characters_or_strings_with_a_crf(tiny_bert, tmp_path):
    def tagged(text, entities):
        tags = ["O"] * len(text)
        for word, kind in entities:
            start = text.index(word)
            tags[start:start + len(word)] = [f"B-{kind}"] + [f"I-{kind}"] * (len(word) - 1)
        return tags

    rows = [("张三去北京", tagged("张三去北京", [("张三", "PER"), ("北京", "LOC")])),
            (list("李四在上海公司"), tagged("李四在上海公司", [("李四", "PER"), ("上海公司", "ORG")]))]
    kept = tmp_path / "data"
    result = bertorch.train("ner", model=tiny_bert, train=rows * 8, dev=rows, output_dir=str(tmp_path / "out"),
                            keep_data=str(kept), use_crf=True, max_steps=3, batch_size=4, save_steps=0)
    assert {"final_f1", "final_precision", "final_recall"} <= set(result.results)
    assert (kept / "labels.txt").read_text(encoding="utf-8").split() == [
        "O", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-PER", "I-PER"]  # "O" first, then by type
    assert json.loads((kept / "train.json").read_text(encoding="utf-8").splitlines()[1])["text"] == list("李四在上海公司")
    assert json.load(open(tmp_path / "out" / "training_args.json", encoding="utf-8"))["use_crf"] is True
    (out,) = result.predictor.predict(["张三去上海"])
    assert len(out["tags"]) == 5 and all(e["text"] == "张三去上海"[e["start"]:e["end"]] for e in out["entities"])


def test_flags_become_the_scripts_words():
    parser = api.cli.build_parser(ClassificationTask, None)
    argv = api.flags_to_argv(parser, {"num_train_epochs": 2, "group_by_length": False, "save_best_model": True,
                                      "fp16": False, "focal_alpha": [1, 2.5], "eval_only": True, "dropout_rate": None})
    assert argv == ["--num_train_epochs", "2", "--no-group_by_length", "--save_best_model", "--focal_alpha", "1",
                    "2.5", "--eval_only"]
    args = parser.parse_args(argv)
    assert (args.epochs, args.group_by_length, args.focal_alpha, args.do_train) == (2, False, [1.0, 2.5], False)


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(train=[("好", "positive"), ("坏",)]), ValueError, r"train\[1\]: expected \(text, label\)"),
    (dict(train=[("好", "p"), ("好", "坏", "p")]), ValueError, r"train\[1\]: 3 fields .* do not mix"),
    (dict(train=[("  ", "p")]), ValueError, r"train\[0\]: empty text"),
    (dict(train=[("好", "p")], dev=[("坏", "n")], labels=["p"]), ValueError, r"dev\[0\]: label 'n' is not in labels="),
    (dict(train=[("好", "p")], learnig_rate=1e-3), TypeError, r"unknown flag 'learnig_rate'; did you mean learning_rate"),
    (dict(train=[("好", "p")], label_file="x.txt"), TypeError, r"label_file= is given by train\(\)'s labels="),
    (dict(train=[("好", "p")], batch_size=0), UsageError, r"--batch_size must be at least 1"),
])
def test_mistakes_raise_before_training(tiny_bert, tmp_path, kwargs, error, message):
    with pytest.raises(error, match=message):
        bertorch.train("classification", model=tiny_bert, output_dir=str(tmp_path / "out"), **kwargs)
    assert not (tmp_path / "out").exists()


def test_a_bad_model_is_an_exception_not_an_exit(tmp_path):
    with pytest.raises(UsageError, match="no-such-model"):
        bertorch.train("classification", model=str(tmp_path / "no-such-model"), train=[("好", "p")],
                       output_dir=str(tmp_path / "out"))
    with pytest.raises(ValueError, match="unknown task 'classify'"):
        bertorch.train("classify", model="m", train=[("好", "p")], output_dir=str(tmp_path / "out"))


def test_import_bertorch_stays_light():
    import subprocess
    import sys

    code = "import sys, bertorch; assert 'torch' not in sys.modules; assert callable(bertorch.train); print('ok')"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(os.path.abspath(__file__)))})
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]
    assert bertorch.TrainResult._fields == ("results", "predictor", "model_dir")
