"""Bad inputs end in one line naming the flag or file and the value, before any training: negative counts,
a byte-order mark, an unusable --saved_dir."""
import os

import pytest

import run_classifier
import run_ner
from bertorch import cli
from bertorch.data.readers import read_jsonl, read_labels
from bertorch.tasks.classification import ClassificationTask


def parse_error(capsys, argv, task=ClassificationTask) -> str:
    with pytest.raises(SystemExit) as exit_info:
        cli.parse_args(task, ["--train_data_file", "t.tsv", "--label_file", "l.txt", *argv])
    assert exit_info.value.code == 2
    return capsys.readouterr().err.strip().splitlines()[-1]


@pytest.mark.parametrize("flag, value, message", [
    ("--save_steps", "-5", "--save_steps cannot be negative, got -5"),
    ("--logging_steps", "-1", "--logging_steps cannot be negative, got -1"),
    ("--eval_steps", "-10", "--eval_steps cannot be negative, got -10"),
    ("--max_grad_norm", "-1.0", "--max_grad_norm cannot be negative, got -1.0"),
    ("--save_total_limit", "-2", "--save_total_limit cannot be negative, got -2"),
    ("--num_workers", "-1", "--num_workers cannot be negative, got -1"),
    ("--checkpoint_above_tokens", "-1", "--checkpoint_above_tokens cannot be negative, got -1"),
    ("--weight_decay", "-0.01", "--weight_decay cannot be negative, got -0.01"),
    ("--label_smoothing", "-0.1", "--label_smoothing cannot be negative, got -0.1"),
    ("--label_smoothing", "1", "--label_smoothing must be below 1, got 1.0"),
    ("--epochs", "-3", "--epochs cannot be negative, got -3"),
    ("--max_steps", "-5", "--max_steps must be -1 (off) or more, got -5"),
    ("--eval_batch_size", "0", "--eval_batch_size must be at least 1, got 0"),
    ("--adv_steps", "0", "--adv_steps must be at least 1, got 0"),
    ("--learning_rate", "-1e-5", "--learning_rate must be positive, got -1e-05"),
    ("--learning_rate", "nan", "--learning_rate must be positive, got nan"),
])
def test_a_negative_count_is_refused_at_parse_time(capsys, flag, value, message):
    assert parse_error(capsys, [f"{flag}={value}"]).endswith("error: " + message)


@pytest.mark.parametrize("flag", ["--save_steps", "--logging_steps", "--eval_steps", "--max_grad_norm",
                                  "--save_total_limit"])
def test_zero_keeps_meaning_off(flag):
    args = cli.parse_args(ClassificationTask, ["--train_data_file", "t.tsv", "--label_file", "l.txt", flag, "0"])
    assert getattr(args, flag[2:]) == 0


def test_default_max_steps_is_still_accepted():
    args = cli.parse_args(ClassificationTask, ["--train_data_file", "t.tsv", "--label_file", "l.txt"])
    assert args.max_steps == -1 and args.eval_steps == args.save_steps


BOM = "\ufeff"


def test_a_byte_order_mark_is_not_part_of_the_first_label_or_line(tmp_path):
    labels = tmp_path / "labels.txt"
    labels.write_text(BOM + "negative\npositive\n", encoding="utf-8")
    assert read_labels(str(labels)) == ["negative", "positive"]
    lines = tmp_path / "dev.json"
    lines.write_text(BOM + '{"text": ["张"], "label": ["O"]}\n', encoding="utf-8")
    assert [obj for _, obj in read_jsonl(str(lines))] == [{"text": ["张"], "label": ["O"]}]


def test_a_run_on_files_with_byte_order_marks_trains(tiny_bert, sentiment_files, tmp_path):
    """labels.txt and train.tsv saved by a Windows editor (BOM first): the first label and line are read as written
    (they used to be reported as a label missing from the label file)."""
    for name in ("train.tsv", "labels.txt"):
        text = (sentiment_files["dir"] / name).read_text(encoding="utf-8")
        (tmp_path / name).write_text(BOM + text, encoding="utf-8")
    results = run_classifier.main(["--pretrained_model_name_or_path", tiny_bert, "--train_data_file",
                                   str(tmp_path / "train.tsv"), "--label_file", str(tmp_path / "labels.txt"),
                                   "--dev_data_file", sentiment_files["dev"], "--saved_dir", str(tmp_path / "out"),
                                   "--max_steps", "2", "--batch_size", "4", "--save_steps", "0"])
    assert results["global_step"] == 2
