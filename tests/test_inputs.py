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


def classifier_run(model, files, saved_dir, *extra):
    return ["--pretrained_model_name_or_path", model, "--train_data_file", files["train"], "--label_file",
            files["labels"], "--saved_dir", str(saved_dir), "--max_steps", "1", "--batch_size", "4", *extra]


def start_up_error(argv) -> str:
    with pytest.raises(SystemExit) as exit_info:
        run_classifier.main(argv)
    message = str(exit_info.value.code)
    assert message.startswith("error: ") and "\n" not in message
    return message


def test_a_saved_dir_that_is_a_file_or_under_one_is_refused_at_start_up(sentiment_files, tmp_path):
    """Before any model is loaded: the model path here does not even exist, and the error is about --saved_dir."""
    a_file = tmp_path / "results.txt"
    a_file.write_text("not a directory")
    missing_model = str(tmp_path / "no-such-model")
    assert start_up_error(classifier_run(missing_model, sentiment_files, a_file)) == (
        f"error: --saved_dir {a_file} is a file, not a directory")
    under = a_file / "run1" / "out"
    assert start_up_error(classifier_run(missing_model, sentiment_files, under)) == (
        f"error: --saved_dir {under}: {a_file} is a file, so no directory can be made under it")
    assert a_file.read_text() == "not a directory"


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs /proc: a directory nobody can create files in")
def test_a_saved_dir_nobody_can_write_is_refused_at_start_up(sentiment_files, tmp_path):
    target = "/proc/self/bertorch-out"
    message = start_up_error(classifier_run(str(tmp_path / "no-such-model"), sentiment_files, target))
    assert message.startswith(f"error: --saved_dir {target}: cannot write in /proc/")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes in a read-only directory")
def test_a_read_only_saved_dir_is_refused_at_start_up(sentiment_files, tmp_path):
    read_only = tmp_path / "ro"
    read_only.mkdir()
    read_only.chmod(0o555)
    try:
        message = start_up_error(classifier_run(str(tmp_path / "no-such-model"), sentiment_files, read_only / "out"))
    finally:
        read_only.chmod(0o755)
    assert message == (f"error: --saved_dir {read_only / 'out'}: cannot write in {read_only} (no permission, or a "
                       f"read-only file system)")


def test_a_non_empty_saved_dir_is_still_refused_without_overwrite(tiny_bert, sentiment_files, tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "config.json").write_text("{}")
    assert "already exists and is not empty; pass --overwrite_output_dir" in start_up_error(
        classifier_run(tiny_bert, sentiment_files, tmp_path / "out"))


@pytest.mark.parametrize("argv, message", [
    (["--max_aux_examples", "0"], "--max_aux_examples must be at least 1, got 0"),
    (["--student_layers", "0"], "--student_layers must be at least 1, got 0"),
    (["--kd_loss_weight=-1"], "--kd_loss_weight cannot be negative, got -1.0"),
    (["--hard_label_weight=-0.5"], "--hard_label_weight cannot be negative, got -0.5"),
    (["--task", "sequence_labeling", "--crf_learning_rate=-1e-3"],
     "--crf_learning_rate cannot be negative, got -0.001"),
])
def test_task_counts_are_checked_where_a_script_has_them(capsys, argv, message):
    from bertorch.distill_command import task_class

    full = ["--teacher_model_dir", "t", *argv]
    assert parse_error(capsys, full, task=task_class(full)).endswith("error: " + message)
