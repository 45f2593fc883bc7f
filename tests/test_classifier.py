"""run_classifier end to end: training, saved outputs, Predictor, accumulation, resume, bad input."""
import json
import os

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification, AutoTokenizer

import run_classifier
from bertorch.models import low_memory
from bertorch.predict import Predictor


def args_for(model, files, out, *extra):
    return ["--pretrained_model_name_or_path", model, "--train_data_file", files["train"],
            "--dev_data_file", files["dev"], "--label_file", files["labels"], "--saved_dir", str(out),
            "--batch_size", "8", "--learning_rate", "3e-3", "--logging_steps", "2", "--save_steps", "0",
            "--seed", "7", *extra]


def test_train_save_reload_and_predict(tiny_bert, sentiment_files, tmp_path):
    out = tmp_path / "out"
    results = run_classifier.main(args_for(tiny_bert, sentiment_files, out, "--epochs", "8", "--save_best_model",
                                           "--eval_steps", "8"))
    assert results["global_step"] == 8 * 8  # 64 examples / batch 8, 8 epochs
    assert results["best_accuracy"] >= 0.9  # the two classes are separable by their characters
    for name in ("config.json", "model.safetensors", "tokenizer.json", "training_args.json", "all_results.json",
                 "metrics.jsonl", "training_curves.png", "bertorch.json", "best/model.safetensors"):
        assert (out / name).exists(), name
    model = AutoModelForSequenceClassification.from_pretrained(str(out))
    assert model.config.id2label == {0: "negative", 1: "positive"}
    texts = [line.split("\t")[0] for line in open(sentiment_files["dev"], encoding="utf-8")]
    tok = AutoTokenizer.from_pretrained(str(out))
    with torch.no_grad():
        logits = model(**tok(texts, padding=True, return_tensors="pt")).logits
    expected = [model.config.id2label[i] for i in logits.argmax(-1).tolist()]
    predictor = Predictor.from_pretrained(str(out))
    assert predictor.predict(texts, batch_size=5) == expected
    probs = predictor.predict(texts[:2], return_probs=True)
    assert probs[0]["label"] == expected[0] and sum(probs[0]["probs"].values()) == pytest.approx(1.0, abs=1e-5)
    rows = [json.loads(line) for line in open(out / "metrics.jsonl", encoding="utf-8")]
    assert {r["kind"] for r in rows} == {"train", "eval"}


def test_predictor_reads_its_labels_once_and_notes_truncation_once(tiny_bert, sentiment_files, tmp_path, monkeypatch):
    """A serving loop calls predict() per request: no config.json parse and no log line per call."""
    from loguru import logger

    from bertorch.predictors import classifier

    out = tmp_path / "out"
    run_classifier.main(args_for(tiny_bert, sentiment_files, out, "--epochs", "1", "--max_steps", "1"))
    predictor = Predictor.from_pretrained(str(out))
    predictor.max_length = 4  # every fixture text is longer
    reads, lines = [], []
    original = classifier.AutoConfig.from_pretrained
    monkeypatch.setattr(classifier.AutoConfig, "from_pretrained", lambda *a, **kw: reads.append(1) or original(*a, **kw))
    sink = logger.add(lambda message: lines.append(str(message)), level="INFO")
    try:
        first = [predictor.predict(["这家酒店很好", "服务太差了"]) for _ in range(3)]
    finally:
        logger.remove(sink)
    assert first[0] == first[1] == first[2] and set(first[0]) <= {"negative", "positive"}
    assert len(reads) == 1
    assert sum("reached max length 4" in line for line in lines) == 1


def test_accumulation_counts_steps_including_a_last_partial_window(tiny_bert, sentiment_files, tmp_path):
    # 64 examples / batch 8 = 8 micro-batches an epoch; accumulation 3 -> windows of 3, 3, 2.
    results = run_classifier.main(args_for(tiny_bert, sentiment_files, tmp_path / "o", "--epochs", "2",
                                           "--gradient_accumulation_steps", "3"))
    assert results["global_step"] == 6


def final_weights(out):
    return load_file(os.path.join(out, "model.safetensors"))


def test_accumulation_equals_a_larger_batch(tiny_bert, sentiment_files, tmp_path):
    common = ["--epochs", "1", "--no-group_by_length", "--max_grad_norm", "0"]
    run_classifier.main(args_for(tiny_bert, sentiment_files, tmp_path / "a", *common, "--batch_size", "16"))
    run_classifier.main(args_for(tiny_bert, sentiment_files, tmp_path / "b", *common, "--batch_size", "8",
                                 "--gradient_accumulation_steps", "2"))
    a, b = final_weights(tmp_path / "a"), final_weights(tmp_path / "b")
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("flags", [["--gradient_checkpointing"], ["--checkpoint_above_tokens", "1"]])
def test_activation_checkpointing_trains_the_same_weights(flags, tiny_bert, sentiment_files, tmp_path):
    """The flags reach the model (every batch is above a 1-token budget) and change memory, not results
    (with dropout: tests/test_low_memory.py)."""
    common = ["--epochs", "1", "--max_steps", "3"]
    run_classifier.main(args_for(tiny_bert, sentiment_files, tmp_path / "plain", *common, "--checkpoint_above_tokens", "0"))
    calls, checkpoint = [], low_memory.checkpoint
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(low_memory, "checkpoint", lambda *a, **kw: calls.append(1) or checkpoint(*a, **kw))
        results = run_classifier.main(args_for(tiny_bert, sentiment_files, tmp_path / "ckpt", *common, *flags))
    assert results["global_step"] == 3 and len(calls) == 3 * 2  # 3 steps x 2 layers
    a, b = final_weights(tmp_path / "plain"), final_weights(tmp_path / "ckpt")
    for key in a:
        torch.testing.assert_close(a[key], b[key])


def test_resume_continues_exactly(tiny_bert, sentiment_files, tmp_path):
    # Classifier dropout on, so the RNG state must be restored too; 4 steps cross an epoch boundary.
    common = ["--max_steps", "6", "--batch_size", "16", "--dropout_rate", "0.3", "--warmup_proportion", "0.3"]
    run_classifier.main(args_for(tiny_bert, sentiment_files, tmp_path / "full", *common, "--save_steps", "3"))
    assert (tmp_path / "full" / "checkpoint-3" / "training_state.pt").exists()
    resumed = tmp_path / "resumed"
    run_classifier.main(args_for(tiny_bert, sentiment_files, resumed, *common, "--resume_from_checkpoint",
                                 str(tmp_path / "full" / "checkpoint-3")))
    a, b = final_weights(tmp_path / "full"), final_weights(resumed)
    for key in a:
        assert torch.equal(a[key], b[key]), key


def metric_rows(out) -> list[tuple[str, int]]:
    return [(r["kind"], r["step"]) for r in map(json.loads, open(out / "metrics.jsonl", encoding="utf-8"))]


def test_metrics_jsonl_holds_one_run_after_overwriting_and_after_resuming(tiny_bert, sentiment_files, tmp_path):
    """--overwrite_output_dir keeps the directory: its metrics.jsonl (the dev curve the results tables and plots
    read) must be this run's rows only, not the earlier run's with this one's appended; a resumed run keeps the
    rows up to its checkpoint and logs the rest once."""
    out = tmp_path / "out"
    common = ["--logging_steps", "1", "--eval_steps", "2", "--overwrite_output_dir"]
    run_classifier.main(args_for(tiny_bert, sentiment_files, out, "--max_steps", "6", "--save_steps", "3", *common))
    first = metric_rows(out)
    assert [s for k, s in first if k == "train"] == [1, 2, 3, 4, 5, 6]
    run_classifier.main(args_for(tiny_bert, sentiment_files, out, "--max_steps", "6", "--resume_from_checkpoint",
                                 str(out / "checkpoint-3"), *common))
    assert metric_rows(out) == first  # steps 1-3 kept, 4-6 logged again, nothing twice
    run_classifier.main(args_for(tiny_bert, sentiment_files, out, "--max_steps", "2", *common))
    assert metric_rows(out) == [("train", 1), ("train", 2), ("eval", 2)]


def test_existing_output_dir_is_not_overwritten(tiny_bert, sentiment_files, tmp_path):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "precious.txt").write_text("user data")
    with pytest.raises(SystemExit, match="already exists"):
        run_classifier.main(args_for(tiny_bert, sentiment_files, out, "--max_steps", "1"))
    assert (out / "precious.txt").read_text() == "user data"


def test_nan_loss_stops_with_step_and_keeps_last_checkpoint(tiny_bert, sentiment_files, tmp_path, monkeypatch):
    from bertorch.models.classifier import SequenceClassifier

    calls = {"n": 0}
    forward = SequenceClassifier.forward

    def poisoned(self, *a, **kw):
        out = forward(self, *a, **kw)
        calls["n"] += 1
        if calls["n"] > 3 and self.training:
            out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(SequenceClassifier, "forward", poisoned)
    out = tmp_path / "nan"
    with pytest.raises(SystemExit, match="optimisation step 4"):
        run_classifier.main(args_for(tiny_bert, sentiment_files, out, "--max_steps", "6", "--save_steps", "2",
                                     "--eval_steps", "0"))
    weights = final_weights(out / "checkpoint-2")
    assert all(torch.isfinite(t).all() for t in weights.values())
    assert not (out / "model.safetensors").exists()  # no final model written from NaN weights


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return str(path)


@pytest.mark.parametrize("case, message", [
    ("missing_train", "file not found"),
    ("bad_columns", "train.tsv:2: expected 2 tab-separated columns"),
    ("empty_text", "train.tsv:1: column 1 is empty"),
    ("unknown_label", "train.tsv:2: label not in the label file"),
    ("duplicate_label", "labels.txt:3: duplicate label"),
    ("empty_train", "no examples"),
    ("pair_without_flag", "add --is_text_pair"),
    ("single_with_pair_flag", "drop --is_text_pair"),
    ("missing_model", "no_such_model'?: no such directory"),
])
def test_bad_input_stops_before_training_naming_file_and_line(case, message, tiny_bert, sentiment_files, tmp_path):
    files = dict(sentiment_files)
    extra, model = [], tiny_bert
    if case == "missing_train":
        files["train"] = str(tmp_path / "nope.tsv")
    elif case == "bad_columns":
        files["train"] = write(tmp_path / "train.tsv", "好\tpositive\n坏\tnegative\textra\n")
    elif case == "empty_text":
        files["train"] = write(tmp_path / "train.tsv", " \tpositive\n")
    elif case == "unknown_label":
        files["train"] = write(tmp_path / "train.tsv", "好\tpositive\n坏\tneutral\n")
    elif case == "duplicate_label":
        files["labels"] = write(tmp_path / "labels.txt", "negative\npositive\nnegative\n")
    elif case == "empty_train":
        files["train"] = write(tmp_path / "train.tsv", "\n")
    elif case == "pair_without_flag":
        files["train"] = write(tmp_path / "train.tsv", "好\t好的\tpositive\n")
    elif case == "single_with_pair_flag":
        extra = ["--is_text_pair"]
    elif case == "missing_model":
        model = str(tmp_path / "no_such_model")
    with pytest.raises(SystemExit, match=message):
        run_classifier.main(args_for(model, files, tmp_path / "out", "--max_steps", "1", *extra))
    assert not (tmp_path / "out" / "model.safetensors").exists()


def test_metric_for_best_picks_the_best_model_by_macro_f1(tiny_bert, sentiment_files, tmp_path):
    """--metric_for_best macro_f1: best/ and best_* are the evaluation with the highest macro-F1 (on imbalanced
    labels the best-accuracy one can be a majority vote)."""
    out = tmp_path / "out"
    results = run_classifier.main(args_for(tiny_bert, sentiment_files, out, "--max_steps", "12", "--eval_steps", "2",
                                           "--save_best_model", "--metric_for_best", "macro_f1",
                                           "--learning_rate", "1e-3"))
    evals = [r for r in map(json.loads, open(out / "metrics.jsonl", encoding="utf-8")) if r["kind"] == "eval"]
    best = max(evals, key=lambda r: r["macro_f1"])  # max() keeps the first of equals, as the trainer does
    assert results["best_step"] == best["step"] and results["best_macro_f1"] == best["macro_f1"]
    assert results["best_accuracy"] == best["accuracy"]  # every metric of that one evaluation
    with pytest.raises(SystemExit):
        run_classifier.main(args_for(tiny_bert, sentiment_files, out, "--metric_for_best", "f1"))
