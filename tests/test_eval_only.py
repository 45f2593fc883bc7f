"""--no-do_train: evaluate a saved model with the trainer's gathered evaluation, no training data needed.

The dev metrics of an eval-only run on a saved directory must be those the training run logged for the
same model (its final evaluation, made just before the final save), in every task; all_results.json has
the keys of a training run, so scripts/results.py reads either.
"""
import json
import os
import subprocess
import sys

import pytest

import run_batchneg
import run_classifier
import run_distill
import run_ner
import run_sentencebert
import run_simcse
from conftest import ROOT
from test_ner import ner_files  # noqa: F401  (fixture)
from test_sentence_tasks import files as sentence_files  # noqa: F401  (fixture)

COMMON = ["--max_steps", "6", "--batch_size", "4", "--logging_steps", "3", "--save_steps", "0",
          "--learning_rate", "3e-3", "--seed", "5"]


def cases(sentiment_files, ner_files, sentence_files):  # noqa: F811
    """task -> (main, data flags, model flags): model flags must be given again when evaluating."""
    s = sentence_files
    return {
        "classification": (run_classifier.main, ["--train_data_file", sentiment_files["train"], "--label_file",
                                                 sentiment_files["labels"], "--dev_data_file", sentiment_files["dev"]],
                           []),
        "ner_crf": (run_ner.main, ["--train_data_file", ner_files["train"], "--dev_data_file", ner_files["dev"],
                                   "--label_file", ner_files["labels"], "--max_seq_length", "24", "--doc_stride", "6"],
                    ["--use_crf"]),
        "sentencebert": (run_sentencebert.main, ["--train_data_file", s["labelled"], "--dev_data_file", s["labelled"]],
                         ["--pooling_mode", "mean", "--concat_multiply", "--output_emb_size", "16"]),
        "simcse": (run_simcse.main, ["--train_data_file", s["sentences"], "--dev_data_file", s["sts"]],
                   ["--pooling_mode", "linear", "--output_emb_size", "16"]),
        "batchneg": (run_batchneg.main, ["--train_data_file", s["pairs"], "--dev_data_file", s["sts"]],
                     ["--pooling_mode", "cls"]),
    }


def without_training_data(flags: list[str]) -> list[str]:
    i = flags.index("--train_data_file")
    return flags[:i] + flags[i + 2:]


@pytest.mark.parametrize("task", ["classification", "ner_crf", "sentencebert", "simcse", "batchneg"])
def test_eval_only_gives_the_metrics_the_trainer_logged_for_the_saved_model(
        task, tiny_bert, sentiment_files, ner_files, sentence_files, tmp_path):  # noqa: F811
    main, data, model_flags = cases(sentiment_files, ner_files, sentence_files)[task]
    trained = main(["--pretrained_model_name_or_path", tiny_bert, "--saved_dir", str(tmp_path / "train"),
                    *data, *model_flags, *COMMON])
    out = tmp_path / "eval"
    evaluated = main(["--pretrained_model_name_or_path", str(tmp_path / "train"), "--saved_dir", str(out),
                      "--no-do_train", *without_training_data(data), *model_flags, "--batch_size", "4"])
    assert trained["global_step"] == 6 and evaluated["global_step"] == 0 and evaluated["train_seconds"] == 0
    assert set(evaluated) == set(trained)  # scripts/results.py finds the same keys
    metric = next(k for k in ("best_accuracy", "best_f1", "best_spearman") if k in trained)
    for key in trained:  # every metric of the best evaluation, for a result row that names the best model
        if key.startswith("best_") and key != "best_step":
            assert "final_" + key[len("best_"):] in trained, key
    for key in trained:
        if key.startswith("final_"):
            assert evaluated[key] == pytest.approx(trained[key], abs=1e-5), key
    assert evaluated[metric] == evaluated["final_" + metric[len("best_"):]]
    assert json.loads((out / "all_results.json").read_text()) == evaluated
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [(r["kind"], r["step"]) for r in rows] == [("eval", 0)]
    assert json.loads((out / "training_args.json").read_text())["train_data_file"] is None
    assert not (out / "model.safetensors").exists()  # nothing is trained, so nothing is saved


@pytest.fixture(scope="module")
def classifier(tiny_bert, sentiment_files, tmp_path_factory):
    """A classifier trained a few steps: (saved dir, its results, the dev flags)."""
    out = tmp_path_factory.mktemp("classifier")
    data = ["--dev_data_file", sentiment_files["dev"], "--label_file", sentiment_files["labels"]]
    results = run_classifier.main(["--pretrained_model_name_or_path", tiny_bert, "--saved_dir", str(out),
                                   "--overwrite_output_dir", "--train_data_file", sentiment_files["train"], *data,
                                   *COMMON])
    return str(out), results, data


def test_init_from_ckpt_is_the_evaluated_model(tiny_bert, classifier, tmp_path):
    trained_dir, trained, data = classifier
    evaluated = run_classifier.main(["--pretrained_model_name_or_path", tiny_bert, "--init_from_ckpt", trained_dir,
                                     "--saved_dir", str(tmp_path / "e"), "--eval_only", *data])
    assert evaluated["final_loss"] == pytest.approx(trained["final_loss"], abs=1e-5)
    assert evaluated["final_accuracy"] == trained["final_accuracy"]


def test_two_processes_evaluate_like_one(classifier, tmp_path):
    trained_dir, _, data = classifier
    flags = ["--pretrained_model_name_or_path", trained_dir, "--no-do_train", "--batch_size", "5", *data]
    one = run_classifier.main([*flags, "--saved_dir", str(tmp_path / "one")])
    env = {**{k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")},
           "OMP_NUM_THREADS": "1", "PYTHONPATH": ROOT}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           os.path.join(ROOT, "run_classifier.py"), *flags, "--saved_dir", str(tmp_path / "two"), "--no_cuda"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    two = json.loads((tmp_path / "two" / "all_results.json").read_text())
    assert two["final_accuracy"] == one["final_accuracy"]
    assert two["final_loss"] == pytest.approx(one["final_loss"], abs=1e-5)


def test_missing_dev_data_is_a_clear_error(tiny_bert, sentiment_files, tmp_path, capsys):
    base = ["--pretrained_model_name_or_path", tiny_bert, "--label_file", sentiment_files["labels"],
            "--saved_dir", str(tmp_path / "o"), "--no-do_train"]
    with pytest.raises(SystemExit):
        run_classifier.main(base)
    assert "--no-do_train evaluates --dev_data_file" in capsys.readouterr().err
    missing = str(tmp_path / "nowhere" / "dev.tsv")
    with pytest.raises(SystemExit, match="nowhere"):
        run_classifier.main([*base, "--dev_data_file", missing])


def test_training_still_needs_training_data(tiny_bert, sentiment_files, tmp_path, capsys):
    with pytest.raises(SystemExit):
        run_classifier.main(["--pretrained_model_name_or_path", tiny_bert, "--dev_data_file", sentiment_files["dev"],
                             "--label_file", sentiment_files["labels"], "--saved_dir", str(tmp_path / "o")])
    assert "required: --train_data_file" in capsys.readouterr().err


def test_distillation_points_to_the_student_task(tiny_bert, sentiment_files, tmp_path, capsys):
    with pytest.raises(SystemExit):
        run_distill.main(["--teacher_model_dir", tiny_bert, "--student_layers", "1", "--no-do_train",
                          "--dev_data_file", sentiment_files["dev"], "--label_file", sentiment_files["labels"],
                          "--saved_dir", str(tmp_path / "o")])
    assert "evaluate it with run_classifier.py or run_ner.py --no-do_train" in capsys.readouterr().err


def test_help_documents_the_flag(capsys):
    with pytest.raises(SystemExit):
        run_classifier.main(["--help"])
    assert "--no-do_train" in capsys.readouterr().out
